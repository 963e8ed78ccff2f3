package soak

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Print writes the report as tables: operations by kind × outcome, error
// codes, faults, kills and each invariant PASS/FAIL with its offenders.
func (r *Report) Print(out io.Writer) {
	c := r.Config
	nodes := "1 node"
	if c.Nodes > 1 {
		nodes = fmt.Sprintf("%d-node cluster", c.Nodes)
	}
	fmt.Fprintf(out, "soak seed=%d ops=%d workers=%d %s wall=%s (settle %s)\n\n", c.Seed, len(r.Records), c.Workers, nodes,
		r.Wall.Round(time.Millisecond), r.Settle.Round(time.Millisecond))

	by := map[string]map[string]int{}
	codes := map[string]int{}
	faulted := 0
	for _, rec := range r.Records {
		if by[rec.Op.Kind] == nil {
			by[rec.Op.Kind] = map[string]int{}
		}
		by[rec.Op.Kind][rec.Class]++
		if rec.Class == Class4xx || rec.Class == Class5xx {
			codes[fmt.Sprintf("%d %s", rec.Status, rec.Code)]++
		}
		if rec.Fault != "" {
			faulted++
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "operation\t%s\ttotal\t\n", strings.Join(Classes, "\t"))
	kinds := make([]string, 0, len(by))
	for k := range by {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	totals := map[string]int{}
	for _, k := range kinds {
		row, sum := []string{k}, 0
		for _, cl := range Classes {
			row = append(row, fmt.Sprint(by[k][cl]))
			sum += by[k][cl]
			totals[cl] += by[k][cl]
		}
		fmt.Fprintf(tw, "%s\t%d\t\n", strings.Join(row, "\t"), sum)
	}
	row := []string{"all"}
	for _, cl := range Classes {
		row = append(row, fmt.Sprint(totals[cl]))
	}
	fmt.Fprintf(tw, "%s\t%d\t\n", strings.Join(row, "\t"), len(r.Records))
	_ = tw.Flush()

	fmt.Fprintf(out, "\nerror answers:")
	for _, k := range sortedKeys(codes) {
		fmt.Fprintf(out, " %s ×%d;", k, codes[k])
	}
	fmt.Fprintf(out, "\nfaults injected (%d operations right after one):", faulted)
	for _, k := range sortedKeys(r.Faults) {
		fmt.Fprintf(out, " %s ×%d;", k, r.Faults[k])
	}
	if len(r.FaultsSkipped) > 0 {
		fmt.Fprintf(out, "\nfaults with nothing to aim at:")
		for _, k := range sortedKeys(r.FaultsSkipped) {
			fmt.Fprintf(out, " %s ×%d;", k, r.FaultsSkipped[k])
		}
	}
	fmt.Fprintf(out, "\nkill -9 of agentd serve: %d", len(r.Kills))
	for _, d := range r.Kills {
		fmt.Fprintf(out, " (back in %s)", d.Round(time.Millisecond))
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "warm-pool claims: %d\n", r.PoolClaims)
	if c.Nodes > 1 {
		made, lost, replaced, unavail := 0, 0, 0, 0
		for _, p := range r.Probes {
			if p.Err != "" {
				continue
			}
			made++
			for _, sb := range p.Sandboxes {
				if sb.State == "LOST" && waitsForNode(sb.Step) {
					lost++
					if sb.Step == "node_offline_replaced" {
						replaced++
					}
				}
			}
			for _, ws := range p.Workspaces {
				if ws.Unavailable != "" {
					unavail++
				}
			}
		}
		fmt.Fprintf(out, "node-offline probes: %d of %d made; sandboxes seen LOST waiting for their node: %d (%d replaced elsewhere); workspaces seen unavailable: %d\n",
			made, len(r.Probes), lost, replaced, unavail)
	}
	for _, e := range r.HarnessErrors {
		fmt.Fprintf(out, "harness: %s\n", e)
	}

	fmt.Fprintln(out, "\ninvariants:")
	byInv := map[string][]Violation{}
	for _, v := range r.Violations {
		byInv[v.Inv] = append(byInv[v.Inv], v)
	}
	for _, inv := range Invariants {
		vs := byInv[inv.ID]
		verdict := "PASS"
		if len(vs) > 0 {
			verdict = fmt.Sprintf("FAIL (%d)", len(vs))
		}
		fmt.Fprintf(out, "  %s %-52s %s\n", inv.ID, inv.Title, verdict)
		for _, v := range vs {
			fmt.Fprintf(out, "      - %s: %s\n", v.Object, v.Detail)
		}
	}
	if r.Config.Keep {
		fmt.Fprintf(out, "\nrun directory (agentd.log, state/): %s\n", r.Dir)
	}
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
