package sys

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetnsPath runs fn on a thread that is inside the network namespace at
// path (/var/run/netns/NAME, /proc/PID/ns/net). Sockets, links and BPF
// attachments that fn creates belong to that namespace; a child process
// that fn forks starts in it; goroutines that fn starts do not run in it.
func InNetnsPath(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer f.Close()
	return InNetnsFD(int(f.Fd()), fn)
}

// InNetnsFD is InNetnsPath for a namespace open as fd.
func InNetnsFD(fd int, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current netns: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", os.NewSyscallError("setns", err))
	}
	defer func() {
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread stays locked in the wrong namespace, and
		// the runtime discards it when the goroutine ends.
	}()
	return fn()
}
