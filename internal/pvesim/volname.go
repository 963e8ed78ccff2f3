package pvesim

import (
	"fmt"
	"regexp"
)

// parseVolname refuses a volume name its storage type cannot have, with the
// die of that plugin's parse_volname (pve-storage): PVE::Storage::path and
// volume_size_info parse the name first, so the content endpoints (info,
// delete) fail this way before any existence check. The dir patterns follow
// PVE::Storage::Plugin::parse_volname (images <vmid>/<name>, linked
// <vmid>/<base>/<vmid>/<name>, iso/*.iso|.img, vztmpl/*.tar.{gz,xz,zst,bz2},
// rootdir/<vmid>, backup/*, snippets/*, import/*); LvmThinPlugin and
// ZFSPoolPlugin accept (base|vm)-<vmid>-… names (ZFS also base-…/vm-…).
var (
	dirVolnameRE = regexp.MustCompile(`^(?:\d+/\S+/\d+/\S+|\d+/\S+|iso/[^/]+\.(?i:iso|img)|vztmpl/[^/]+\.tar\.(?:gz|xz|zst|bz2)|rootdir/\d+|backup/[^/]+|snippets/[^/]+|import/[^/]+)$`)
	lvmVolnameRE = regexp.MustCompile(`^(?:vm|base)-\d+-\S+$`)
	zfsVolnameRE = regexp.MustCompile(`^(?:(?:base|basevol)-\d+-\S+/)?(?:base|basevol|vm|subvol)-\d+-\S+$`)
)

func parseVolname(st *storage, name string) error {
	switch st.typ {
	case typeDir:
		if !dirVolnameRE.MatchString(name) {
			return errf("unable to parse directory volume name '%s'", name)
		}
	case typeLVMThin:
		if !lvmVolnameRE.MatchString(name) {
			return errf("unable to parse lvm volume name '%s'", name)
		}
	case typeZFS:
		if !zfsVolnameRE.MatchString(name) {
			return errf("unable to parse zfs volume name '%s'", name)
		}
	default:
		return fmt.Errorf("unknown storage type %s", st.typ)
	}
	return nil
}
