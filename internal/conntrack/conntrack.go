// Package conntrack reads established TCP flows from the host's connection
// tracking table (`conntrack -L -p tcp --dport 22`), which idle auto-stop uses
// as evidence that someone is connected to a sandbox over SSH.
package conntrack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Lister returns the raw output of the conntrack listing.
type Lister func(ctx context.Context) ([]byte, error)

// Command runs the conntrack tool. Its absence or failure is an error, which
// callers must treat as "activity unknown", never as "idle".
func Command(ctx context.Context) ([]byte, error) {
	path, err := exec.LookPath("conntrack")
	if err != nil {
		return nil, fmt.Errorf("conntrack is not installed (apt install conntrack): %w", err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "-L", "-p", "tcp", "--dport", "22")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("conntrack -L: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Established parses conntrack output and returns the destination addresses of
// ESTABLISHED flows to port 22, from the original direction (the first
// src=/dst=/dport= of each line). Lines it does not understand are skipped.
//
// A line looks like:
//
//	tcp      6 431999 ESTABLISHED src=10.77.0.1 dst=10.77.0.12 sport=51234 dport=22 src=10.77.0.12 dst=10.77.0.1 sport=22 dport=51234 [ASSURED] mark=0 use=1
func Established(out []byte) map[netip.Addr]bool {
	flows := map[netip.Addr]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[0] != "tcp" {
			continue
		}
		established := false
		var dst netip.Addr
		dport := ""
		for _, tok := range f[1:] {
			switch {
			case tok == "ESTABLISHED":
				established = true
			case strings.HasPrefix(tok, "dst=") && !dst.IsValid():
				if a, err := netip.ParseAddr(strings.TrimPrefix(tok, "dst=")); err == nil {
					dst = a
				}
			case strings.HasPrefix(tok, "dport=") && dport == "":
				dport = strings.TrimPrefix(tok, "dport=")
			}
		}
		if established && dst.IsValid() && dport == "22" {
			flows[dst.Unmap()] = true
		}
	}
	return flows
}
