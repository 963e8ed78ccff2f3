package pvesim

import (
	"encoding/base64"
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
var guestDirs = map[string]bool{"/": true, "/etc": true, "/etc/agentlab": true, "/run": true, "/tmp": true, "/root": true}

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
