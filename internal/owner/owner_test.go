package owner

import (
	"errors"
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
)

// A config Proxmox is still writing (clone_vm's placeholder, a create's
// lock) tells nothing about its owner: the proof must say "locked", never
// "not owned", or callers mark their own VM LOST or leave it behind.
func TestVerifyPlaceholderIsLockedNotForeign(t *testing.T) {
	p := Proof{Kind: Holder, ID: "ws-0123456789ab", Name: "w", Instance: "inst", VMID: 101}
	ours := map[string]any{"description": p.Description(), "tags": "agentlab-workspace"}
	for _, tc := range []struct {
		name        string
		cfg         map[string]any
		locked, own bool
	}{
		{"clone placeholder", map[string]any{"lock": "clone", "description": " qmclone temporary file\n"}, true, false},
		{"create placeholder", map[string]any{"lock": "create"}, true, false},
		{"ours being cloned (real config written)", map[string]any{"lock": "clone", "description": p.Description(), "tags": "agentlab-workspace"}, false, true},
		{"unmarked with a backup lock", map[string]any{"lock": "backup", "description": "someone's"}, false, false},
		{"unmarked, unlocked", map[string]any{"description": "someone's"}, false, false},
		{"ours", ours, false, true},
	} {
		err := p.Verify(tc.cfg, true)
		switch {
		case tc.own && err != nil:
			t.Errorf("%s: %v, want proven", tc.name, err)
		case tc.locked && (!errors.Is(err, pve.ErrLocked) || errors.Is(err, ErrNotOwned)):
			t.Errorf("%s: %v, want a lock error that is not ErrNotOwned", tc.name, err)
		case !tc.own && !tc.locked && !errors.Is(err, ErrNotOwned):
			t.Errorf("%s: %v, want ErrNotOwned", tc.name, err)
		}
	}
}
