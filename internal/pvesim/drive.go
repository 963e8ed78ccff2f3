package pvesim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/agentlab/terraform-provider-agentlab/internal/pvesim/apischema"
)

// Drives and NICs go through one parse/print layer driven by the schema's
// property-string formats, so that every legal spelling a client writes (file=,
// volume=, model=, virtio=<mac>, boolean words) is stored in the canonical form
// PVE stores (print_drive / print_net order, one size, a generated MAC).

// droppedDriveProps are skipped when parsing ($DROPPED_PROPERTIES in QemuServer/Drive.pm).
var droppedDriveProps = []string{"cyls", "heads", "secs", "trans"}

// driveFormat is the format of a drive key; all drive families share "file".
func driveFormat(key string) apischema.Format {
	if f := configSchema.Format(key); f != nil {
		return f
	}
	return configSchema.Format("scsi0")
}

// parseDrive is parse_drive: the property string parsed with the key's format and
// size converted to bytes (parse_size).
func parseDrive(key, val string) (map[string]string, error) {
	d, err := driveFormat(key).Parse(val, "", droppedDriveProps...)
	if err != nil {
		return nil, err
	}
	if sz, ok := d["size"]; ok {
		n, ok := apischema.ParseSize(sz)
		if !ok {
			return nil, fmt.Errorf("invalid size '%s'", sz)
		}
		d["size"] = strconv.FormatInt(n, 10)
	}
	return d, nil
}

// printDrive is print_drive: file first, then the other keys sorted, size via format_size.
func printDrive(key string, d map[string]string) string {
	return driveFormat(key).Print(d)
}

// driveIsCloudinit is drive_is_cloudinit (QemuServer/Drive.pm).
var cloudinitFileRE = regexp.MustCompile(`[:/](?:vm-\d+-)?cloudinit(?:\.(?:raw|qcow|qcow2|qed|vmdk|cloop))?$`)

// driveVolume returns the storage and volname a drive string references; empty,
// none, cdrom and ISO (media=cdrom, not cloud-init) drives return ok=false.
func driveVolume(val string) (storageID, volname string, ok bool) {
	d, err := parseDrive("scsi0", val)
	if err != nil {
		return "", "", false
	}
	file := d["file"]
	if file == "" || file == "none" || file == "cdrom" || d["media"] == "cdrom" && !cloudinitFileRE.MatchString(file) {
		return "", "", false
	}
	sid, vn, found := strings.Cut(file, ":")
	if !found {
		return "", "", false
	}
	return sid, vn, true
}

// driveOpt reads one option of a stored drive string.
func driveOpt(val, key string) string {
	d, err := parseDrive("scsi0", val)
	if err != nil {
		return ""
	}
	return d[key]
}

// setDriveOpt rewrites one option of a stored drive string in canonical form.
func setDriveOpt(driveKey, val, key, nv string) string {
	d, err := parseDrive(driveKey, val)
	if err != nil {
		return val
	}
	d[key] = nv
	return printDrive(driveKey, d)
}

func parseSize(s string) (int64, bool) { return apischema.ParseSize(s) }

func formatSize(b int64) string { return apischema.FormatSize(b) }

var newDiskRE = regexp.MustCompile(`^(?:([^/:\s]+):)?(\d+(?:\.\d+)?)$`) // NEW_DISK_RE

// prepareDrive is create_disks for one drive: "storage:SIZE" allocates a new disk
// with that size, "storage:cloudinit" the cloud-init volume (media=cdrom), and an
// existing volume gets its real size (volume_size_info), whatever size the client
// wrote; the result is print_drive's canonical string.
func (s *Sim) prepareDrive(v *vm, key, val string) (string, error) {
	d, err := parseDrive(key, val)
	if err != nil {
		return "", paramErr(map[string]string{key: "unable to parse drive options"})
	}
	if strings.HasPrefix(key, "unused") {
		return printDrive(key, d), nil
	}
	file := d["file"]
	sid, volname, _ := strings.Cut(file, ":")
	switch {
	case file == "" || file == "none" || file == "cdrom":
		delete(d, "size")
	case volname == "cloudinit":
		st, err := s.storageOn(v.node, sid)
		if err != nil {
			return "", err
		}
		if ci := cloudinitKey(v.conf, key); ci != "" {
			return "", fmt.Errorf("%s - cloud-init drive is already attached at '%s'", key, ci)
		}
		format := d["format"]
		if format == "" {
			format = st.format
		}
		name := st.diskName(v.id, "cloudinit", format, false)
		st.volumes[name] = &volume{storage: sid, name: name, owner: v.id, size: 4 << 20, format: format,
			files: map[string]string{}, ctime: s.now().Unix()}
		d["file"], d["media"] = st.volid(name), "cdrom"
		delete(d, "format")
	case newDiskRE.MatchString(file):
		m := newDiskRE.FindStringSubmatch(file)
		st, err := s.storageOn(v.node, m[1])
		if err != nil {
			return "", err
		}
		gb, _ := strconv.ParseFloat(m[2], 64)
		vol, err := s.allocVolume(st, v.id, int64(gb*float64(1<<30)), "")
		if err != nil {
			return "", err
		}
		d["file"], d["size"] = st.volid(vol.name), strconv.FormatInt(vol.size, 10)
		delete(d, "format")
	default:
		vsid, vn, ok := driveVolume(val)
		if !ok {
			return printDrive(key, d), nil // an ISO image or a path
		}
		st, err := s.storageOn(v.node, vsid)
		if err != nil {
			return "", err
		}
		vol, ok := st.volumes[vn]
		if !ok {
			return "", fmt.Errorf("volume '%s' does not exist", st.volid(vn))
		}
		d["size"] = strconv.FormatInt(vol.size, 10)
	}
	return printDrive(key, d), nil
}

// cloudinitKey is has_cloudinit: the drive key other than skip holding a cloud-init volume.
func cloudinitKey(c *config, skip string) string {
	for _, k := range c.keys {
		if k != skip && isDiskKey(k) && !strings.HasPrefix(k, "unused") {
			if d, err := parseDrive(k, c.vals[k]); err == nil && cloudinitFileRE.MatchString(d["file"]) {
				return k
			}
		}
	}
	return ""
}

// detachDrive removes a drive key. Owned volumes become unusedN unless destroy is
// set; foreign volumes (a workspace holder's disk) are only unreferenced
// (vmconfig_register_unused_drive, vm_is_volid_owner).
func (s *Sim) detachDrive(v *vm, key, val string, destroy bool) error {
	sid, vn, ok := driveVolume(val)
	v.conf.del(key)
	if !ok {
		return nil
	}
	st, err := s.storageOn(v.node, sid)
	if err != nil {
		return nil
	}
	if ownerOf(vn) != v.id {
		return nil
	}
	if strings.Contains(vn, "cloudinit") {
		delete(st.volumes, vn)
		return nil
	}
	if destroy {
		for _, sn := range v.snapshots {
			for _, sv := range sn.conf.vals {
				if _, svn, ok := driveVolume(sv); ok && svn == vn {
					return fmt.Errorf("unable to delete '%s' - volume is still in use (snapshot?)", st.volid(vn))
				}
			}
		}
		delete(st.volumes, vn)
		return nil
	}
	for i := 0; i < 256; i++ {
		k := fmt.Sprintf("unused%d", i)
		if _, used := v.conf.get(k); !used {
			v.conf.set(k, st.volid(vn))
			return nil
		}
	}
	return fmt.Errorf("Too many unused volumes - please delete them first.")
}

// dropReusedUnused is write_vm_config's cleanup: an unusedN entry whose volume a
// drive key references again is removed ("remove 'unusedX' settings if we re-add
// a volume"), so re-writing an attached disk's options leaves no bogus unused0.
func dropReusedUnused(c *config) {
	used := map[string]bool{}
	for _, k := range c.keys {
		if isDiskKey(k) && !strings.HasPrefix(k, "unused") {
			if d, err := parseDrive(k, c.vals[k]); err == nil && d["file"] != "" {
				used[d["file"]] = true
			}
		}
	}
	for _, k := range append([]string(nil), c.keys...) {
		if strings.HasPrefix(k, "unused") && used[c.vals[k]] {
			c.del(k)
		}
	}
}

var netFormat = configSchema.Format("net0")

// canonicalNet is parse_net + print_net: a NIC without macaddr gets a generated
// one (random_ether_addr with PVE's default prefix BC:24:11), and the result is
// written "<model>=<mac>,<other keys sorted>".
func (s *Sim) canonicalNet(key, val string) (string, error) {
	n, err := netFormat.Parse(val, key)
	if err != nil {
		return "", paramErr(map[string]string{key: "invalid format - " + err.Error()})
	}
	if n["macaddr"] == "" {
		n["macaddr"] = s.randomMAC()
	}
	return netFormat.Print(n), nil
}

// withMAC keeps the simulator's hooks on the same path as the API.
func (s *Sim) withMAC(val string) string {
	out, err := s.canonicalNet("net0", val)
	if err != nil {
		return val
	}
	return out
}

// replaceMAC gives a cloned NIC a new MAC (clone_vm regenerates them).
func (s *Sim) replaceMAC(val string) string {
	n, err := netFormat.Parse(val, "net0")
	if err != nil {
		return val
	}
	n["macaddr"] = s.randomMAC()
	return netFormat.Print(n)
}

func (s *Sim) randomMAC() string {
	return fmt.Sprintf("BC:24:11:%02X:%02X:%02X", s.rnd.Intn(256), s.rnd.Intn(256), s.rnd.Intn(256))
}
