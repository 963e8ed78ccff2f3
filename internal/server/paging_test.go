package server

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
)

// TestPaginate: pages follow each other without gaps or repeats, a cursor
// still works after its item is gone, and bad limits are 400s.
func TestPaginate(t *testing.T) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var items []api.Sandbox
	for i := 0; i < 25; i++ {
		// Several share a creation time: the id breaks the tie.
		items = append(items, api.Sandbox{ID: "sbx-" + strconv.Itoa(100+i), CreatedAt: base.Add(time.Duration(i/3) * time.Second)})
	}
	key := func(s api.Sandbox) string { return newestFirst(s.CreatedAt, s.ID) }
	var seen []string
	p := pager{limit: 10}
	for pages := 0; ; pages++ {
		page, next := paginate(append([]api.Sandbox(nil), items...), key, p)
		for _, s := range page {
			seen = append(seen, s.ID)
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		p.after = next
	}
	if len(seen) != 25 {
		t.Fatalf("saw %d of 25: %v", len(seen), seen)
	}
	uniq := map[string]bool{}
	for _, id := range seen {
		uniq[id] = true
	}
	if len(uniq) != 25 || seen[0] != "sbx-124" {
		t.Fatalf("pages repeat or are not newest first: %v", seen)
	}
	// The cursor's item is deleted before the next page is asked for.
	first, next := paginate(append([]api.Sandbox(nil), items...), key, pager{limit: 10})
	rest := []api.Sandbox{}
	for _, s := range items {
		if s.ID != first[9].ID {
			rest = append(rest, s)
		}
	}
	second, _ := paginate(rest, key, pager{limit: 10, after: next})
	if second[0].ID != seen[10] {
		t.Errorf("after a deleted cursor: %s, want %s", second[0].ID, seen[10])
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x"} {
		if _, err := pageOf(httptest.NewRequest("GET", "/v1/sandboxes?"+q, nil)); !api.IsCode(err, api.CodeInvalidField) {
			t.Errorf("%s: %v", q, err)
		}
	}
}
