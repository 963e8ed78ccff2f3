package validate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentlab/terraform-provider-agentlab/internal/validate"
)

// check asserts err is nil when want is "", else an *Error on field whose
// text contains want.
func check(t *testing.T, err error, field, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("rejected: %v", err)
		}
		return
	}
	var ve *validate.Error
	if !errors.As(err, &ve) {
		t.Fatalf("want a *validate.Error containing %q, got %v", want, err)
	}
	if ve.Field != field || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), field+": ") {
		t.Fatalf("want field %s and %q in the message, got field %s: %v", field, want, ve.Field, err)
	}
}

func TestNames(t *testing.T) {
	funcs := map[string]struct {
		fn  func(field, s string) error
		max int
	}{
		"sandbox":   {validate.SandboxName, 63},
		"workspace": {validate.WorkspaceName, 52},
		"session":   {validate.SessionName, 52},
	}
	cases := []struct {
		in, want string
	}{
		{"a", ""},
		{"web-1", ""},
		{"1a", ""},
		{"a1", ""},
		{"100-a", ""},
		{"1-2", ""}, // digits and a dash: cannot be a VMID
		{"sbx", ""},
		{"jobs-x", ""},
		{"wsx", ""},
		{"", "is required"},
		{"100", "is all digits"},
		{"0", "is all digits"},
		{"9000000000", "is all digits"},
		{"sbx-x", `starts with "sbx-"`},
		{"ws-data", `starts with "ws-"`},
		{"ses-a", `starts with "ses-"`},
		{"job-0123456789ab", `starts with "job-"`},
		{"Bad_Name!", "lowercase letters, digits or dashes"},
		{"UPPER", "lowercase letters"},
		{"-a", "starting and ending"},
		{"a-", "starting and ending"},
		{"a b", "lowercase"},
		{"a.b", "lowercase"},
		{"é", "lowercase"},
	}
	for kind, f := range funcs {
		for _, c := range cases {
			t.Run(kind+"/"+c.in, func(t *testing.T) {
				check(t, f.fn("name", c.in), "name", c.want)
			})
		}
		t.Run(kind+"/length", func(t *testing.T) {
			check(t, f.fn("name", strings.Repeat("a", f.max)), "name", "")
			check(t, f.fn("name", strings.Repeat("a", f.max+1)), "name", "must be 1-")
		})
	}
	// The two halves: an existing legacy name passes NameChars.
	check(t, validate.NameChars("name", "100", validate.MaxSandboxName), "name", "")
	check(t, validate.NameChars("name", "ws-x", validate.MaxWorkspaceName), "name", "")
	check(t, validate.NameChars("name", "Bad", validate.MaxSessionName), "name", "lowercase")
	check(t, validate.Unambiguous("session", "name", "42"), "name", "a session name needs")
	check(t, validate.Unambiguous("session", "name", "ses-x"), "name", `starts with "ses-"`)
	check(t, validate.Unambiguous("session", "name", "web"), "name", "")
	// The field is the caller's: session create names the workspace field.
	check(t, validate.WorkspaceName("workspace", "123"), "workspace", "all digits")
}

func TestIsJobID(t *testing.T) {
	for in, want := range map[string]bool{
		"job-0123456789ab": true, "job-7ecb683e9a": true, "job-0123456789AB": false,
		"job-x": false, "sbx-0123456789ab": false, "job-": false, "job-12 ": false,
	} {
		if got := validate.IsJobID(in); got != want {
			t.Errorf("IsJobID(%q) = %t", in, got)
		}
	}
}

func TestTag(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"team-a", ""},
		{"x", ""},
		{"_private", ""},
		{"v1.2+build", ""},
		{"9", ""},
		{strings.Repeat("t", 64), ""},
		{strings.Repeat("t", 65), "not a valid Proxmox tag"},
		{"", "not a valid Proxmox tag"},
		{"-x", "not a valid Proxmox tag"},
		{"+x", "not a valid Proxmox tag"},
		{".x", "not a valid Proxmox tag"},
		{"Team", "not a valid Proxmox tag"},
		{"a;b", "not a valid Proxmox tag"},
		{"a b", "not a valid Proxmox tag"},
		{"a,b", "not a valid Proxmox tag"},
		{"agentlab", "is reserved"},
		{"agentlab-workspace", "is reserved"},
	} {
		t.Run(c.in, func(t *testing.T) { check(t, validate.Tag("tags", c.in), "tags", c.want) })
	}
}

func TestStorage(t *testing.T) {
	allowed := []string{"local-lvm", "local-zfs", "Tank.1"}
	for _, c := range []struct{ in, idErr, allowErr string }{
		{"local-lvm", "", ""},
		{"local-zfs", "", ""},
		{"Tank.1", "", ""}, // PVE's pattern is case-insensitive
		{"ab", "", "is not one agentd may use"},
		{"a_b.c-d", "", "is not one agentd may use"},
		{"ceph", "", "allowed: local-lvm, local-zfs, Tank.1"},
		{"a", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"local-lvm,foo=bar", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"local-lvm:vm-100-disk-0", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"1local", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"local-", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"local.", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"lo cal", "not a Proxmox storage id", "not a Proxmox storage id"},
		{"local/../x", "not a Proxmox storage id", "not a Proxmox storage id"},
	} {
		t.Run(c.in, func(t *testing.T) {
			check(t, validate.StorageID("storage", c.in), "storage", c.idErr)
			check(t, validate.Storage("storage", c.in, allowed), "storage", c.allowErr)
		})
	}
}

func TestSnapshotName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"ab", ""},
		{"before-upgrade", ""},
		{"Nightly_2", ""},
		{strings.Repeat("s", 40), ""},
		{strings.Repeat("s", 41), "must be 2-40"},
		{"a", "must be 2-40"},
		{"", "must be 2-40"},
		{"9bad", "starting with a letter"},
		{"_x", "starting with a letter"},
		{"bad name", "must be 2-40"},
		{"a.b", "must be 2-40"},
		{"current", "reserved by Proxmox"},
		{"pending", "reserved by Proxmox"},
	} {
		t.Run(c.in, func(t *testing.T) { check(t, validate.SnapshotName("name", c.in), "name", c.want) })
	}
}

func TestSizeGiB(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{
		{1, ""}, {80, ""}, {65536, ""},
		{0, "between 1 and 65536"}, {-5, "got -5"}, {65537, "between 1 and 65536"}, {10000000, "got 10000000"},
	} {
		check(t, validate.SizeGiB("size_gb", c.in), "size_gb", c.want)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		gib  int
		want string
	}{
		{"80G", 80, ""},
		{"80", 80, ""},
		{"80g", 80, ""},
		{"80GiB", 80, ""},
		{"80GB", 80, ""},
		{" 80 G ", 80, ""},
		{"1T", 1024, ""},
		{"64T", 65536, ""},
		{"65536G", 65536, ""},
		{"65T", 0, "larger than 64T"},
		{"65537", 0, "larger than 64T"},
		{"99999999999999999999", 0, "larger than 64T"},
		{"0", 0, "at least 1G"},
		{"0T", 0, "at least 1G"},
		{"lots", 0, "not a size"},
		{"", 0, "not a size"},
		{"-5G", 0, "not a size"},
		{"1.5G", 0, "not a size"},
		{"80M", 0, "not a size"},
	} {
		t.Run(c.in, func(t *testing.T) {
			n, err := validate.ParseSize("size", c.in)
			check(t, err, "size", c.want)
			if n != c.gib {
				t.Fatalf("got %d GiB, want %d", n, c.gib)
			}
		})
	}
}

func TestTTL(t *testing.T) {
	for _, c := range []struct {
		in   string
		d    time.Duration
		want string
	}{
		{"0", 0, ""},
		{"0s", 0, ""},
		{"1m", time.Minute, ""},
		{"90m", 90 * time.Minute, ""},
		{"8h", 8 * time.Hour, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"59s", 0, "at least 1m"},
		{"-1h", 0, "at least 1m"},
		{"90m0.5s", 0, "whole seconds"},
		{"2 hours", 0, "not a duration"},
		{"1d", 0, "not a duration"},
		{"", 0, "not a duration"},
		{"120", 0, "not a duration"},
	} {
		t.Run(c.in, func(t *testing.T) {
			d, err := validate.TTL("ttl", c.in)
			check(t, err, "ttl", c.want)
			if d != c.d {
				t.Fatalf("got %s, want %s", d, c.d)
			}
		})
	}
}

func TestVMID(t *testing.T) {
	for _, c := range []struct {
		in string
		n  int
		ok bool
	}{
		{"100", 100, true}, {"999999999", 999999999, true}, {"4242", 4242, true},
		{"99", 0, false}, {"0100", 0, false}, {"+100", 0, false}, {"1000000000", 0, false},
		{"10a", 0, false}, {"", 0, false}, {"web", 0, false}, {" 100", 0, false},
	} {
		n, ok := validate.VMID(c.in)
		if n != c.n || ok != c.ok {
			t.Errorf("VMID(%q) = %d, %t; want %d, %t", c.in, n, ok, c.n, c.ok)
		}
	}
}

func TestKindOf(t *testing.T) {
	for in, want := range map[string]validate.RefKind{
		"sbx-0123456789ab": validate.ByID, "ws-x": validate.ByID, "ses-": validate.ByID, "job-1": validate.ByID,
		"100": validate.ByVMID, "0100": validate.ByVMID, "7": validate.ByVMID,
		"web": validate.ByName, "100a": validate.ByName, "sbx": validate.ByName, "": validate.ByName, "-100": validate.ByName,
	} {
		if got := validate.KindOf(in); got != want {
			t.Errorf("KindOf(%q) = %d, want %d", in, got, want)
		}
	}
}
