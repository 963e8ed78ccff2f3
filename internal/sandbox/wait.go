package sandbox

import (
	"context"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// MaxWait bounds one long-poll: below the clients' 60 s HTTP timeout, and
// short enough that proxies keep the connection.
const MaxWait = 30 * time.Second

// WaitSettled returns the sandbox once agentd stops working on it
// (provisioning, start, resume, destroy: State.Settling is false), or its
// current view when timeout passes, ctx ends or the agent shuts down. The
// answer comes as the settling write commits (store.SandboxChanged), not at
// a poll interval.
func (m *Manager) WaitSettled(ctx context.Context, ref string, timeout time.Duration) (*store.Sandbox, error) {
	sb, err := m.Get(ctx, ref)
	if err != nil || !sb.State.Settling() || timeout <= 0 {
		return sb, err
	}
	timer := time.NewTimer(min(timeout, MaxWait))
	defer timer.Stop()
	// From here on by id: a name stops resolving once the sandbox is
	// DESTROYED, which is where a destroy settles.
	id := sb.ID
	for {
		changed := m.store.SandboxChanged(id)
		if sb, err = m.Get(ctx, id); err != nil || !sb.State.Settling() {
			return sb, err
		}
		select {
		case <-changed:
		case <-timer.C:
			return sb, nil
		case <-ctx.Done():
			return sb, nil
		case <-m.waitsEnd:
			return sb, nil
		}
	}
}

// EndWaits answers every long-poll now and every later one at once; the
// agent calls it first when it shuts down.
func (m *Manager) EndWaits() {
	m.waitsEndOnce.Do(func() { close(m.waitsEnd) })
}
