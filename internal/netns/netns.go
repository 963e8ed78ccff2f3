// Package netns runs code inside a named network namespace (/var/run/netns,
// as `ip netns add` creates them). The packet labs use it to open sockets and
// start processes (conntrack, nft) in the namespaces they build.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on the calling goroutine's thread inside namespace name: sockets
// fn opens stay there, processes it starts inherit it. The thread returns to
// its namespace afterwards; if it cannot, Do panics rather than hand a thread
// in the wrong namespace back to the runtime.
func Do(name string, fn func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()))
	if err != nil {
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", name, err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("leave network namespace %s: %v", name, err))
		}
	}()
	fn()
	return nil
}
