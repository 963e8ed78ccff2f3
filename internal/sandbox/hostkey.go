package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/api"
	"github.com/agentlab/terraform-provider-agentlab/internal/owner"
	"github.com/agentlab/terraform-provider-agentlab/internal/pve"
	"github.com/agentlab/terraform-provider-agentlab/internal/store"
)

// HostKeyPath is where the guest keeps the SSH host key agentd pins.
const HostKeyPath = "/etc/ssh/ssh_host_ed25519_key.pub"

// HostKey returns the sandbox's pinned SSH host key. The first call on a
// RUNNING sandbox reads HostKeyPath through the guest agent and pins it;
// later calls answer the pinned key, and when the sandbox runs they read
// the guest's key again and refuse (409 host_key_changed) if it differs. A
// pin is never replaced: a sandbox whose key changed is suspect.
func (m *Manager) HostKey(ctx context.Context, ref string) (*api.HostKey, error) {
	sb, unlock, err := m.getLocked(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer unlock()
	pinned, err := m.store.HostKey(ctx, sb.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if sb.State != api.StateRunning {
		if pinned != nil {
			return hostKeyOut(sb, pinned, false), nil
		}
		e := invalidState(sb, "read the SSH host key of", api.StateRunning)
		e.(*api.Error).Message += "; start it first (nothing is pinned yet)"
		return nil, e
	}
	key, err := m.readHostKey(ctx, sb)
	if err != nil {
		if pinned != nil && isGuestUnreachable(err) {
			return hostKeyOut(sb, pinned, false), nil
		}
		return nil, err
	}
	if pinned == nil {
		pinned, err = m.store.PinHostKey(ctx, sb, key, store.Event{Kind: "sandbox.host_key_pinned",
			Message: fmt.Sprintf("pinned SSH host key %s read from %s through the guest agent", key.Fingerprint, HostKeyPath)})
		if err != nil {
			return nil, err
		}
	}
	if pinned.Key != key.Key {
		if serr := m.store.Save(ctx, sb, sb.State, store.Event{Kind: "sandbox.host_key_changed",
			Message: fmt.Sprintf("guest reports SSH host key %s, pinned is %s: refused", key.Fingerprint, pinned.Fingerprint)}); serr != nil {
			m.opts.Log.Warn("could not record host key change", "sandbox_id", sb.ID, "err", serr)
		}
		return nil, api.Errorf(http.StatusConflict, api.CodeHostKeyChanged,
			"sandbox %s: the guest's SSH host key changed: it now reports %s, but %s was pinned at %s; agentd refuses to trust it (someone may have replaced the guest's key or the VM). Destroy and re-create the sandbox if the change is expected",
			sb.Name, key.Fingerprint, pinned.Fingerprint, pinned.PinnedAt.Format("2006-01-02 15:04:05Z"))
	}
	return hostKeyOut(sb, pinned, true), nil
}

func hostKeyOut(sb *store.Sandbox, k *store.HostKey, verified bool) *api.HostKey {
	return &api.HostKey{Sandbox: sb.Name, SandboxID: sb.ID, Key: k.Key, Fingerprint: k.Fingerprint, PinnedAt: k.PinnedAt, Verified: verified}
}

func isGuestUnreachable(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeGuestAgent
}

// readHostKey proves the VM and reads the guest's ed25519 host key.
func (m *Manager) readHostKey(ctx context.Context, sb *store.Sandbox) (*store.HostKey, error) {
	v, err := m.vm(ctx, sb)
	if errors.Is(err, owner.ErrNotOwned) {
		return nil, m.lost(ctx, sb, "read the SSH host key of", err)
	}
	if err == nil && v == nil {
		err = fmt.Errorf("VM %d does not exist", sb.VMID)
	}
	if err != nil {
		return nil, proxmoxError("read the SSH host key of", sb, err)
	}
	data, _, err := v.ReadFile(ctx, HostKeyPath, 16<<10)
	if errors.Is(err, pve.ErrNotFound) {
		return nil, api.Errorf(http.StatusConflict, api.CodeHostKeyUnavailable,
			"sandbox %s: the guest has no %s, so its SSH host key cannot be pinned (does the template install openssh-server and run ssh-keygen -A?)", sb.Name, HostKeyPath)
	}
	if err != nil {
		return nil, guestError("read the SSH host key of", sb, err)
	}
	k, err := ParseHostKey(data)
	if err != nil {
		return nil, api.Errorf(http.StatusConflict, api.CodeHostKeyUnavailable, "sandbox %s: %s: %v", sb.Name, HostKeyPath, err)
	}
	return k, nil
}

// ParseHostKey parses an OpenSSH public key line of type ssh-ed25519 and
// returns it without its comment, with its SHA256 fingerprint as
// ssh-keygen -l prints it.
func ParseHostKey(line []byte) (*store.HostKey, error) {
	f := strings.Fields(string(line))
	if len(f) < 2 || f[0] != "ssh-ed25519" {
		return nil, fmt.Errorf("not an ssh-ed25519 public key")
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return nil, fmt.Errorf("key is not base64: %v", err)
	}
	typ, rest, ok := sshString(blob)
	if !ok || string(typ) != "ssh-ed25519" {
		return nil, fmt.Errorf("key blob is not of type ssh-ed25519")
	}
	pub, rest, ok := sshString(rest)
	if !ok || len(pub) != 32 || len(rest) != 0 {
		return nil, fmt.Errorf("key blob is not a 32-byte ed25519 key")
	}
	return &store.HostKey{Key: f[0] + " " + f[1], Fingerprint: blobFingerprint(blob)}, nil
}

// SSHUser is the guest user the bootstrap creates with ssh_public_keys.
const SSHUser = "agent"

// KeyFingerprint is the SHA256 fingerprint (as ssh-keygen -l prints it) of
// an OpenSSH public key line of any type.
func KeyFingerprint(line string) (string, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", fmt.Errorf("not an OpenSSH public key line")
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return "", fmt.Errorf("key is not base64: %v", err)
	}
	if typ, _, ok := sshString(blob); !ok || string(typ) != f[0] {
		return "", fmt.Errorf("key blob is not of type %s", f[0])
	}
	return blobFingerprint(blob), nil
}

// blobFingerprint is ssh-keygen -l's SHA256 fingerprint of a key blob.
func blobFingerprint(blob []byte) string {
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// SSHInfo is what an ssh client needs to know of this agent.
func (m *Manager) SSHInfo() api.SSHInfo {
	info := api.SSHInfo{User: SSHUser, JumpHost: m.opts.SSHJumpHost, AuthorizedKeys: []string{}}
	for _, k := range m.opts.SSHPublicKeys {
		if fp, err := KeyFingerprint(k); err == nil {
			info.AuthorizedKeys = append(info.AuthorizedKeys, fp)
		}
	}
	return info
}

func sshString(b []byte) ([]byte, []byte, bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}
