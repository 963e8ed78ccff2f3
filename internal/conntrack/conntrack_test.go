package conntrack

import (
	"net/netip"
	"testing"
)

func TestEstablished(t *testing.T) {
	out := []byte(`tcp      6 431999 ESTABLISHED src=10.77.0.1 dst=10.77.0.12 sport=51234 dport=22 src=10.77.0.12 dst=10.77.0.1 sport=22 dport=51234 [ASSURED] mark=0 use=1
tcp      6 118 TIME_WAIT src=10.77.0.1 dst=10.77.0.13 sport=40000 dport=22 src=10.77.0.13 dst=10.77.0.1 sport=22 dport=40000 [ASSURED] mark=0 use=1
tcp      6 60 SYN_SENT src=192.0.2.7 dst=10.77.0.14 sport=1 dport=22 [UNREPLIED] src=10.77.0.14 dst=192.0.2.7 sport=22 dport=1 mark=0 use=1
tcp      6 299 ESTABLISHED src=10.77.0.15 dst=10.77.0.1 sport=22 dport=5555 src=10.77.0.1 dst=10.77.0.15 sport=5555 dport=22 [ASSURED] mark=0 use=1
tcp      6 431000 ESTABLISHED src=fd00::1 dst=fd00::16 sport=4444 dport=22 src=fd00::16 dst=fd00::1 sport=22 dport=4444 [ASSURED] mark=0 use=1
udp      17 29 src=10.77.0.1 dst=10.77.0.17 sport=53 dport=22 [UNREPLIED] mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.
garbage
`)
	got := Established(out)
	want := []string{"10.77.0.12", "fd00::16"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, w := range want {
		if !got[netip.MustParseAddr(w)] {
			t.Errorf("missing %s in %v", w, got)
		}
	}
	// Reply-direction dport=22 (a flow *from* a sandbox's sshd port) does not count.
	if got[netip.MustParseAddr("10.77.0.1")] {
		t.Error("counted the reply direction")
	}
	if len(Established(nil)) != 0 {
		t.Error("empty output")
	}
}
