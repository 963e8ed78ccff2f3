package cli

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebPackage builds the .deb exactly as `make package` does and checks
// its contents, conffiles, maintainer scripts and the systemd unit.
func TestDebPackage(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command("bash", "scripts/package.sh", out)
	cmd.Dir = "../.."
	cmd.Env = append(cmd.Environ(), "VERSION=1.2.3")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("package: %v\n%s", err, b)
	}
	deb := filepath.Join(out, "agentd_1.2.3_amd64.deb")
	run := func(args ...string) string {
		t.Helper()
		b, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	list := run("dpkg-deb", "-c", deb)
	for _, want := range []string{"./usr/bin/agentd", "./lib/systemd/system/agentd.service", "./usr/lib/tmpfiles.d/agentd.conf",
		"-rw-r----- root/root", "./etc/agentd/config.yaml", "./etc/agentd/profiles/yolo-ephemeral.yaml",
		"./etc/agentd/profiles/yolo-workspace.yaml", "./etc/agentd/profiles/interactive-dev.yaml", "drwxr-x--- root/root         0"} {
		if !strings.Contains(list, want) {
			t.Errorf("package lacks %s:\n%s", want, list)
		}
	}
	conf := run("dpkg-deb", "-f", deb, "Package", "Version", "Architecture")
	if !strings.Contains(conf, "Version: 1.2.3") || !strings.Contains(conf, "Architecture: amd64") {
		t.Errorf("control: %s", conf)
	}
	ctrl := t.TempDir()
	run("dpkg-deb", "-e", deb, ctrl)
	conffiles := run("cat", filepath.Join(ctrl, "conffiles"))
	for _, f := range []string{"/etc/agentd/config.yaml", "/etc/agentd/profiles/yolo-ephemeral.yaml"} {
		if !strings.Contains(conffiles, f) {
			t.Errorf("%s is not a conffile: %s", f, conffiles)
		}
	}
	if post := run("cat", filepath.Join(ctrl, "postinst")); !strings.Contains(post, "groupadd --system agentd") {
		t.Errorf("postinst does not create the group:\n%s", post)
	}
	unit := run("sh", "-c", "dpkg-deb --fsys-tarfile "+deb+" | tar -xO ./lib/systemd/system/agentd.service")
	for _, want := range []string{"ExecStart=/usr/bin/agentd serve --config /etc/agentd/config.yaml", "Group=agentd", "UMask=0007",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/agentd /run/agentd /var/lib/vz/snippets",
		"RuntimeDirectory=agentd", "KillSignal=SIGTERM", "WantedBy=multi-user.target"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	// The packaged binary reports the package version, and the packaged
	// config and profiles pass the binary's own check.
	bin := filepath.Join(t.TempDir(), "root")
	run("dpkg-deb", "-x", deb, bin)
	if v := run(filepath.Join(bin, "usr/bin/agentd"), "version"); !strings.Contains(v, "1.2.3") {
		t.Errorf("version: %s", v)
	}
	run(filepath.Join(bin, "usr/bin/agentd"), "profile", "validate",
		filepath.Join(bin, "etc/agentd/profiles/yolo-ephemeral.yaml"), filepath.Join(bin, "etc/agentd/profiles/interactive-dev.yaml"))
}
