package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/client"
)

func (g *options) addProgressFlags(root *cobra.Command) {
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "no progress lines while waiting (progress is printed only to a terminal, never with --json)")
}

// progressOut is where progress goes, or nil for none: stderr when it is a
// terminal, not with --json or --quiet.
func (g *options) progressOut(cmd *cobra.Command) io.Writer {
	if g.json || g.quiet {
		return nil
	}
	w := cmd.ErrOrStderr()
	if g.forceProgress {
		return w
	}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return w
		}
	}
	return nil
}

// lastEventID is the id of ref's newest event (0 if none or unknown): the
// progress of an operation prints the events after it.
func lastEventID(c *client.Client, ctx contextT, ref string) int64 {
	l, err := c.Events(ctx, ref, 0, 1)
	if err != nil {
		return 0
	}
	return l.Last
}

// waitSandbox waits until the sandbox settles, printing each of its events
// after `after` with the time elapsed since start when progress is on. A
// --timeout says that the agent carries on.
func (g *options) waitSandbox(cmd *cobra.Command, c *client.Client, ctx contextT, name string, after int64, start time.Time) (*api.Sandbox, error) {
	w := g.progressOut(cmd)
	var sb *api.Sandbox
	var err error
	if w == nil {
		sb, err = c.WaitSandbox(ctx, name, 250*time.Millisecond)
	} else {
		sb, err = waitWithProgress(ctx, c, w, name, after, start)
	}
	return sb, timeoutHint(err, name)
}

func waitWithProgress(ctx contextT, c *client.Client, w io.Writer, name string, after int64, start time.Time) (*api.Sandbox, error) {
	var last *api.Sandbox
	for {
		if l, err := c.EventsAfter(ctx, name, after, 1000); err == nil {
			for _, e := range l.Events {
				if e.ID > after {
					printProgress(w, start, e)
					after = e.ID
				}
			}
		}
		// A short long-poll: the settled state comes at once, the events of
		// the steps in between at most 250 ms late.
		asked := time.Now()
		sb, err := c.SandboxSettled(ctx, name, 250*time.Millisecond)
		if err != nil {
			if ctx.Err() != nil && last != nil {
				return last, client.StillSettling(last, ctx.Err())
			}
			return nil, err
		}
		name, last = sb.ID, sb
		if !sb.State.Settling() {
			// The events of the last step, written before the state settled.
			if l, err := c.EventsAfter(ctx, name, after, 1000); err == nil {
				for _, e := range l.Events {
					if e.ID > after {
						printProgress(w, start, e)
						after = e.ID
					}
				}
			}
			return sb, nil
		}
		if d := 250*time.Millisecond - time.Since(asked); d > 0 {
			// Woken by a step, or an agent without long-polls: pace the loop.
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			return sb, client.StillSettling(sb, ctx.Err())
		}
	}
}

func printProgress(w io.Writer, start time.Time, e api.Event) {
	el := time.Since(start).Seconds()
	change := ""
	if e.To != "" {
		change = " → " + string(e.To)
	}
	printf(w, "[%5.1fs] %-22s %s%s\n", el, e.Kind, e.Message, change)
}

// timeoutHint explains a --timeout: the CLI stops waiting, agentd does not.
func timeoutHint(err error, name string) error {
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w\n--timeout only ends this command's wait: agentd carries on (provisioning continues, bounded by provisioning_timeout); "+
		"follow it with agentd sandbox show %s or agentd sandbox events %s -f, or stop it with agentd sandbox destroy --force %s", err, name, name, name)
}
