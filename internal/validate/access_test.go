package validate_test

import (
	"testing"

	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

func TestHostPort(t *testing.T) {
	cases := []struct {
		n    int64
		want string
	}{
		{1024, ""}, {20000, ""}, {65535, ""}, {5899, ""}, {6000, ""},
		{0, "not a TCP port"}, {65536, "not a TCP port"}, {-1, "not a TCP port"},
		{22, "shadow a host service"}, {1023, "shadow a host service"}, {8006, "shadow a host service"},
		{3128, "shadow a host service"}, {5900, "shadow a host service"}, {5999, "shadow a host service"},
	}
	for _, c := range cases {
		check(t, validate.HostPort("host_port", c.n), "host_port", c.want)
	}
	check(t, validate.Port("port", 22), "port", "")
	check(t, validate.Port("port", 0), "port", "not a TCP port")
}

func TestExposeSource(t *testing.T) {
	cases := []struct {
		in     string
		public bool
		out    string // the masked network, or the error's text
		bad    bool
	}{
		{in: "192.168.1.0/24", out: "192.168.1.0/24"},
		{in: "192.168.1.77/24", out: "192.168.1.0/24"},
		{in: "203.0.113.7", out: "203.0.113.7/32"},
		{in: "0.0.0.0/0", public: true, out: "0.0.0.0/0"},
		{in: "10.0.0.0/0", public: true, out: "0.0.0.0/0"},
		{in: "0.0.0.0/0", out: "opens the port to every address", bad: true},
		{in: "fd00::/64", out: "IPv4 only", bad: true},
		{in: "::ffff:10.0.0.1", out: "IPv4 only", bad: true},
		{in: "lan", out: "not an IPv4 address or CIDR", bad: true},
		{in: "10.0.0.0/33", out: "not an IPv4 address or CIDR", bad: true},
	}
	for _, c := range cases {
		p, err := validate.ExposeSource("sources[0]", c.in, c.public)
		if c.bad {
			check(t, err, "sources[0]", c.out)
			continue
		}
		if err != nil || p.String() != c.out {
			t.Errorf("ExposeSource(%q, public %v) = %v, %v; want %s", c.in, c.public, p, err, c.out)
		}
	}
}
