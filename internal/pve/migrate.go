package pve

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	proxmox "github.com/luthermonson/go-proxmox"
)

// Migrate moves a stopped VM to node target within the cluster (migrate_vm
// in PVE::API2::Qemu, offline: PVE::QemuMigrate copies every local volume
// with storage_migrate and moves the config last, in phase3_cleanup). Its
// local volumes go onto targetStorage there, or onto the storage of the
// same id when targetStorage is "". It waits for the task. A failed
// migration's exit status is only "migration aborted": the reason is in the
// task log (AbstractMigrate logs it as an " ERROR: " line), so it is read
// and becomes the error's message and kind.
func (c *Client) Migrate(ctx context.Context, vmid int, target, targetStorage string) error {
	op := fmt.Sprintf("migrate VM %d to node %s", vmid, target)
	opts := &proxmox.VirtualMachineMigrateOptions{Target: target, TargetStorage: targetStorage}
	task, err := c.vm(vmid).Migrate(ctx, opts)
	if err != nil {
		return wrap(op, err)
	}
	err = c.wait(ctx, op, task)
	var pe *Error
	if !errors.As(err, &pe) || pe.UPID == "" || pe.Kind == ErrTimeout {
		return err
	}
	if why := taskErrors(ctx, task); why != "" && why != pe.Msg {
		pe.Msg += ": " + why
		if k := kindOf(why); k != nil {
			pe.Kind = k
		}
	}
	return pe
}

// taskErrors is the ERROR lines of a finished task's log, joined ("" when
// the log cannot be read: the exit status alone is reported then).
func taskErrors(ctx context.Context, task *proxmox.Task) string {
	l, err := task.Log(ctx, 0, 500)
	if err != nil {
		return ""
	}
	nums := make([]int, 0, len(l))
	for n := range l {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	var out []string
	for _, n := range nums {
		// The closing "TASK ERROR: <exit status>" repeats the status the
		// error already says.
		if strings.HasPrefix(l[n], "TASK ERROR: ") {
			continue
		}
		if _, after, ok := strings.Cut(l[n], " ERROR: "); ok {
			out = append(out, after)
		}
	}
	return strings.Join(out, "; ")
}
