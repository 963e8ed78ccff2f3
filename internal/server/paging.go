package server

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// List paging: every list endpoint takes limit (items per page, default
// DefaultPage, at most MaxPage) and after (the previous page's "next"). A
// cursor is the position of the last item in the list's order, not the item
// itself, so a page still follows when that item has been deleted since.
const (
	DefaultPage = 500
	MaxPage     = 1000
)

type pager struct {
	limit int
	after string
}

func pageOf(r *http.Request) (pager, error) {
	q := r.URL.Query()
	p := pager{limit: DefaultPage, after: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPage {
			return p, api.FieldError("limit", "want a number between 1 and %d, got %q", MaxPage, v)
		}
		p.limit = n
	}
	if len(p.after) > 256 {
		return p, api.FieldError("after", "is not a cursor from a previous page's next")
	}
	return p, nil
}

// paginate returns the page of items (sorted by key, ascending) after the
// cursor, and the cursor of the next page ("" on the last).
func paginate[T any](items []T, key func(T) string, p pager) ([]T, string) {
	sort.SliceStable(items, func(i, j int) bool { return key(items[i]) < key(items[j]) })
	start := sort.Search(len(items), func(i int) bool { return key(items[i]) > p.after })
	if p.after == "" {
		start = 0
	}
	items = items[start:]
	if len(items) <= p.limit {
		return items, ""
	}
	return items[:p.limit], key(items[p.limit-1])
}

// newestFirst orders by creation time, newest first, then id.
func newestFirst(created time.Time, id string) string {
	return fmt.Sprintf("%016x.%s", uint64(math.MaxInt64-created.UnixMilli()), id)
}

// byNumber orders by a numeric id, ascending.
func byNumber(id int64) string { return fmt.Sprintf("%020d", id) }
