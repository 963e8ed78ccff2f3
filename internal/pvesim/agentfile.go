package pvesim

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// agent/file-write and agent/file-read follow qemu-server's API
// (PVE/API2/Qemu/Agent.pm): file-write sends guest-file-open/write/close
// with the content base64-encoded by PVE unless encode=0 (then the caller
// already encoded it), content at most 60 KiB; file-read returns the content
// (decoded unless decode=0 in newer schemas; count bytes at most, truncated
// set when the file is longer). Both need a running, answering agent. A
// missing parent directory fails as guest-file-open does in the guest.
//
// The simulated guest's files live with its VM object (vm.guestFiles: a VM
// re-created at the same VMID starts empty; persisted with the state) and, when the simulator backs "local" with a
// directory (agentd dev), are mirrored under <LocalDir>/../guests/<vmid>/ so
// that `agentd guest run --bootstrap-file` can read them like a real guest.

func init() {
	const q = "/nodes/{node}/qemu/{vmid}"
	handle("POST", q+"/agent/file-write", (*Sim).agentFileWrite)
	handle("GET", q+"/agent/file-read", (*Sim).agentFileRead)
}

// guestDirs are the directories every simulated guest has.
var guestDirs = map[string]bool{"/": true, "/etc": true, "/etc/agentlab": true, "/etc/ssh": true, "/run": true, "/tmp": true, "/root": true}

// HostKeyPath is the simulated guest's SSH host public key.
const HostKeyPath = "/etc/ssh/ssh_host_ed25519_key.pub"

// guestBoot is what the simulated guest does at each boot: like
// openssh-server's first start (ssh-keygen -A), it creates an ed25519 host
// key when it has none. The key is deterministic per VM: derived from the
// VMID and the VM's smbios1 uuid (new at every create and clone), so a
// re-created VM at the same VMID gets another key. Only the public half
// exists; no SSH server runs in the simulated guest. The caller holds s.mu.
func (s *Sim) guestBoot(v *vm) {
	if _, ok := v.guestFiles[HostKeyPath]; ok {
		return
	}
	smbios, _ := v.conf.get("smbios1")
	seed := sha256.Sum256([]byte(fmt.Sprintf("pvesim ssh host key\x00%d\x00%s", v.id, smbios)))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	blob := sshString(nil, []byte("ssh-ed25519"))
	blob = sshString(blob, pub)
	line := "ssh-ed25519 " + base64.StdEncoding.EncodeToString(blob) + " root@" + v.name() + "\n"
	if v.guestFiles == nil {
		v.guestFiles = map[string][]byte{}
	}
	v.guestFiles[HostKeyPath] = []byte(line)
}

// sshString appends b as an SSH wire-format string (RFC 4251).
func sshString(out, b []byte) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(len(b)))
	return append(out, b...)
}

func (s *Sim) agentFileWrite(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.agentCheck(req)
	if err != nil {
		return nil, err
	}
	file := req.str("file")
	if !filepath.IsAbs(file) || !guestDirs[filepath.Dir(filepath.Clean(file))] {
		return nil, errf("Agent error: Failed to open file '%s': No such file or directory", file)
	}
	data := []byte(req.str("content"))
	if req.has("encode") && req.str("encode") == "0" {
		// The caller encoded it; qemu-guest-agent decodes base64.
		dec, err := base64.StdEncoding.DecodeString(req.str("content"))
		if err != nil {
			return nil, errf("Agent error: Invalid parameter 'buf-b64'")
		}
		data = dec
	}
	if v.guestFiles == nil {
		v.guestFiles = map[string][]byte{}
	}
	v.guestFiles[filepath.Clean(file)] = data
	if dir := s.guestRoot(v.id); dir != "" {
		path := filepath.Join(dir, filepath.Clean(file))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, errf("mirror guest file: %v", err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, errf("mirror guest file: %v", err)
		}
	}
	return nil, nil
}

func (s *Sim) agentFileRead(req *request) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.agentCheck(req)
	if err != nil {
		return nil, err
	}
	file := filepath.Clean(req.str("file"))
	data, ok := v.guestFiles[file]
	if !ok {
		return nil, errf("Agent error: Failed to open file '%s': No such file or directory", req.str("file"))
	}
	count := 16 << 20
	if req.has("count") {
		count, _ = strconv.Atoi(req.str("count"))
	}
	out := map[string]any{}
	if len(data) > count {
		data = data[:count]
		out["truncated"] = 1
	}
	if req.has("decode") && req.str("decode") == "0" {
		out["content"] = base64.StdEncoding.EncodeToString(data)
	} else {
		out["content"] = string(data)
	}
	return out, nil
}

func (s *Sim) guestRoot(vmid int) string {
	if s.opts.LocalDir == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(s.opts.LocalDir), "guests", strconv.Itoa(vmid))
}

// GuestFile is a file the guest of vmid has (written through agent/file-write).
func (s *Sim) GuestFile(vmid int, path string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil {
		return nil, false
	}
	b, ok := v.guestFiles[filepath.Clean(path)]
	return b, ok
}

// SetGuestFile replaces a file of the guest of vmid as something inside the
// guest would (nil removes it); for tests. False if there is no such VM.
func (s *Sim) SetGuestFile(vmid int, path string, data []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil {
		return false
	}
	if data == nil {
		delete(v.guestFiles, filepath.Clean(path))
		return true
	}
	if v.guestFiles == nil {
		v.guestFiles = map[string][]byte{}
	}
	v.guestFiles[filepath.Clean(path)] = data
	return true
}
