package pve

import (
	"errors"
	"fmt"
	"net"
	"strings"

	proxmox "github.com/luthermonson/go-proxmox"
)

// Typed errors. Proxmox reports almost everything as "500 <message>" (there is no
// not-found status for VMs), so classification is by message, here and nowhere else.
var (
	ErrNotFound           = errors.New("not found")
	ErrLocked             = errors.New("locked")
	ErrExists             = errors.New("already exists")
	ErrRunning            = errors.New("VM is running")
	ErrNotRunning         = errors.New("VM is not running")
	ErrAgentNotConfigured = errors.New("guest agent not configured")
	ErrAgentNotRunning    = errors.New("guest agent not running")
	ErrAgentTimeout       = errors.New("guest agent timed out")
	ErrUnsupported        = errors.New("not supported by storage")
	ErrBadRequest         = errors.New("parameter verification failed")
	ErrNotAuthorized      = errors.New("not authorized")
	ErrUnavailable        = errors.New("proxmox unavailable")
	ErrTimeout            = errors.New("timed out")
	ErrNotImplemented     = errors.New("not implemented by proxmox")
	ErrSnapshotNotRecent  = errors.New("snapshot is not the most recent")
	ErrShrinkNotSupported = errors.New("disk cannot shrink")
	// ErrModified: a write carrying a digest found the config changed since
	// that digest was read; nothing was written.
	ErrModified = errors.New("config changed since it was read")
	// ErrExecFailed: the guest agent could not spawn the program (missing,
	// not executable); the command never ran.
	ErrExecFailed          = errors.New("guest could not run the program")
	errTaskWithoutIdentity = errors.New("task without UPID")
)

// Error is a failed Proxmox operation: what we tried, what Proxmox said, and its kind.
type Error struct {
	Op   string // e.g. "clone VM 9000 to 123"
	Msg  string // Proxmox's message, or the task's exit status
	UPID string // set when a task failed
	Kind error  // one of the Err* values, or nil when unclassified
}

func (e *Error) Error() string {
	if e.UPID != "" {
		return fmt.Sprintf("%s: task %s: %s", e.Op, e.UPID, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Msg)
}

func (e *Error) Unwrap() error { return e.Kind }

// rules map message fragments to kinds; order matters (first match wins).
var rules = []struct {
	frag string
	kind error
}{
	// update_vm_api's digest check ("checksum missmatch", sic) and
	// PVE::Tools::assert_if_modified's wording.
	{"file change by other user", ErrModified},
	{"file changed by other user", ErrModified},
	{"VM is locked (", ErrLocked},
	{"can't lock file", ErrLocked},
	{"No QEMU guest agent configured", ErrAgentNotConfigured},
	{"Failed to execute child process", ErrExecFailed},
	{"Failed to open file", ErrNotFound},
	{"Invalid parameter 'pid'", ErrNotFound},
	{"QEMU guest agent is not running", ErrAgentNotRunning},
	{"qmp command 'guest-", ErrAgentTimeout},
	{"is not most recent snapshot", ErrSnapshotNotRecent},
	{"shrinking disks is not supported", ErrShrinkNotSupported},
	{"Configuration file 'nodes/", ErrNotFound},
	{"unable to find configuration file", ErrNotFound},
	{"does not exist", ErrNotFound},
	{"no such task", ErrNotFound},
	{"already exists", ErrExists},
	{"already used", ErrExists},
	{"is running - destroy failed", ErrRunning},
	{"already running", ErrRunning},
	{"while the source VM is running", ErrRunning},
	{"can't migrate running VM", ErrRunning},
	{"is not running", ErrNotRunning},
	{"not running", ErrNotRunning},
	{"snapshot feature is not available", ErrUnsupported},
	{"feature is not supported", ErrUnsupported},
	{"Storage does not support", ErrUnsupported},
	{"not enough free space", ErrUnsupported},
	{"Parameter verification failed", ErrBadRequest},
	{"got timeout", ErrTimeout},
}

func kindOf(msg string) error {
	for _, r := range rules {
		if strings.Contains(msg, r.frag) {
			return r.kind
		}
	}
	return nil
}

// wrap turns a go-proxmox error into *Error with its kind.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *Error
	if errors.As(err, &pe) {
		return err
	}
	e := &Error{Op: op, Msg: err.Error()}
	var ne net.Error
	switch {
	case errors.Is(err, ErrUnavailable):
		e.Kind = ErrUnavailable
	case proxmox.IsNotAuthorized(err):
		e.Kind = ErrNotAuthorized
	case errors.Is(err, proxmox.ErrTimeout):
		e.Kind = ErrTimeout
	case strings.HasPrefix(e.Msg, "501 "):
		e.Kind = ErrNotImplemented
	case errors.As(err, &ne), strings.Contains(e.Msg, "connection refused"):
		e.Kind = ErrUnavailable
	default:
		e.Kind = kindOf(e.Msg)
	}
	return e
}
