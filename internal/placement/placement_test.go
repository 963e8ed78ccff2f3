package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func nodes(n int, memMB int64, cpus int) []Capacity {
	out := make([]Capacity, n)
	for i := range out {
		out[i] = Capacity{Name: fmt.Sprintf("pve%d", i+1), Online: true, MemoryMB: memMB, CPUs: cpus}
	}
	return out
}

// TestExclusions: every reason a node cannot take a sandbox is named, and
// only a node that is merely busy makes the refusal retryable.
func TestExclusions(t *testing.T) {
	c := NewCluster(Caps{ReserveMB: 1024, CPUOvercommit: 2, MaxSandboxes: 3, MaxInFlight: 1}, 1)
	inv := nodes(5, 8192, 4)
	inv[0].Online = false
	inv[3].ForeignMB = 6000 // 8192-1024-6000 leaves 1168 < 2048
	c.SetInventory(inv)
	c.SetDrained("pve2", true)
	for i := 0; i < 3; i++ {
		c.Track(fmt.Sprintf("s%d", i), "pve3", 100, 1)
	}
	req := Request{MemoryMB: 2048, Cores: 2, Eligible: func(n string) (bool, string) {
		if n == "pve5" {
			return false, "no template on this node"
		}
		return true, ""
	}}
	_, _, err := c.Place("new", req)
	var pe *Error
	if !errors.As(err, &pe) || !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("want ErrNoCapacity, got %v", err)
	}
	for _, want := range []string{"pve1: offline", "pve2: drained", "pve3: sandboxes: 3 of max 3", "pve4: memory:", "pve5: no template"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q: %v", want, err)
		}
	}
	// Free pve3 and make it busy instead: now the refusal is retryable.
	c.Forget("s0")
	c.Forget("s1")
	if _, _, err := c.Place("a", req); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Place("b", req); !errors.Is(err, ErrBusy) {
		t.Fatalf("pve3 runs its one clone: want ErrBusy, got %v", err)
	}
	c.Landed("a")
	if d, _, err := c.Place("b", req); err != nil || d.Node != "pve3" {
		t.Fatalf("after the clone landed: %v %v", d, err)
	}
	// CPU overcommit 2 on 4 CPUs: 8 cores at most.
	c2 := NewCluster(Caps{CPUOvercommit: 2}, 1)
	c2.SetInventory(nodes(1, 1<<20, 4))
	c2.Track("x", "pve1", 0, 7)
	if _, _, err := c2.Place("y", Request{Cores: 2}); err == nil || !strings.Contains(err.Error(), "overcommit 2.0") {
		t.Fatalf("9 cores on 4 CPUs at overcommit 2: %v", err)
	}
}

// TestPin: a pinned sandbox goes to its node or nowhere, and says why.
func TestPin(t *testing.T) {
	c := NewCluster(Caps{}, 1)
	c.SetInventory(nodes(3, 65536, 32))
	d, _, err := c.Place("a", Request{MemoryMB: 1024, Cores: 1, Pin: "pve2", PinReason: "workspace ws1 is on local-lvm of pve2"})
	if err != nil || d.Node != "pve2" || !strings.Contains(d.Reason, "workspace ws1") {
		t.Fatalf("%+v %v", d, err)
	}
	if _, _, err := c.Place("b", Request{Pin: "pve9"}); err == nil || !strings.Contains(err.Error(), "pve9 is not in the cluster") {
		t.Fatalf("pinned to an unknown node: %v", err)
	}
	c.SetDrained("pve2", true)
	if _, _, err := c.Place("c", Request{Pin: "pve2"}); err == nil || !strings.Contains(err.Error(), "drained") {
		t.Fatalf("pinned to a drained node: %v", err)
	}
}

// TestConcurrentPlacementsRespectCaps: decisions racing from many
// goroutines never overfill a node, and all land while room is left.
func TestConcurrentPlacementsRespectCaps(t *testing.T) {
	c := NewCluster(Caps{MaxInFlight: 1000}, 7)
	c.SetInventory(nodes(4, 16384, 64)) // 16 sandboxes of 1 GiB per node
	var wg sync.WaitGroup
	var mu sync.Mutex
	placedOK, refused := 0, 0
	for i := 0; i < 80; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, _, err := c.Place(fmt.Sprintf("s%d", i), Request{MemoryMB: 1024, Cores: 1})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				placedOK++
			} else if errors.Is(err, ErrNoCapacity) {
				refused++
			} else {
				t.Errorf("s%d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if placedOK != 64 || refused != 16 {
		t.Fatalf("placed %d, refused %d; want 64 and 16", placedOK, refused)
	}
	for _, n := range c.Nodes() {
		if n.CommittedMB > n.MemoryMB {
			t.Errorf("%s overfilled: %d of %d MiB", n.Name, n.CommittedMB, n.MemoryMB)
		}
	}
}

// imbalance is max/min memory committed over the nodes.
func imbalance(ns []Node) float64 {
	lo, hi := ns[0].CommittedMB, ns[0].CommittedMB
	for _, n := range ns {
		lo, hi = min(lo, n.CommittedMB), max(hi, n.CommittedMB)
	}
	if lo == 0 {
		return 1e9
	}
	return float64(hi) / float64(lo)
}

// TestBalance: sandboxes of mixed sizes spread evenly over equal nodes
// (the bound for 1,000 creates over 10 nodes is 1.15).
func TestBalance(t *testing.T) {
	c := NewCluster(Caps{MaxInFlight: 1 << 20}, 3)
	c.SetInventory(nodes(10, 1<<20, 512))
	r := rand.New(rand.NewPCG(5, 5))
	sizes := []int64{1024, 2048, 4096, 8192}
	for i := 0; i < 1000; i++ {
		if _, _, err := c.Place(fmt.Sprintf("s%d", i), Request{MemoryMB: sizes[r.IntN(len(sizes))], Cores: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if got := imbalance(c.Nodes()); got > 1.15 {
		t.Fatalf("imbalance %.3f > 1.15", got)
	}
}

// BenchmarkPlace: decisions with 50 nodes and 5,000 VMs tracked, 1,000
// per iteration so that -benchtime=1x still has a p99; reports p50/p99 in
// µs and the imbalance after the run.
func BenchmarkPlace(b *testing.B) {
	c := NewCluster(Caps{MaxInFlight: 1 << 20}, 9)
	inv := nodes(50, 1<<21, 1024)
	for i := range inv {
		inv[i].ForeignMB = int64(i%5) * 4096
	}
	c.SetInventory(inv)
	for i := 0; i < 5000; i++ {
		c.Track(fmt.Sprintf("vm%d", i), inv[i%50].Name, 2048, 2)
	}
	const perOp = 1000
	lat := make([]time.Duration, 0, b.N*perOp)
	b.ResetTimer()
	for i := 0; i < b.N*perOp; i++ {
		id := fmt.Sprintf("new%d", i%1000)
		t0 := time.Now()
		if _, _, err := c.Place(id, Request{MemoryMB: 2048, Cores: 2}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		c.Landed(id)
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(imbalance(c.Nodes()), "imbalance")
}
