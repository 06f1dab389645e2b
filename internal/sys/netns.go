package sys

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetnsPath runs fn on a thread that is inside the network namespace at
// path (/var/run/netns/NAME, /proc/PID/ns/net). Sockets, links and BPF
// attachments that fn creates belong to that namespace; a child process
// that fn forks starts in it; goroutines that fn starts do not run in it.
//
// Afterwards the thread is moved back to the namespace it came from. If
// that fails (fn may have dropped the capability setns needs, say), the
// error says so, joined with fn's, and the calling goroutine stays locked
// to the thread, which is still in path's namespace: no other goroutine
// ever runs on it, and the Go runtime discards it when the goroutine
// exits. A caller that gets such an error should therefore end the
// goroutine soon, and not trust the namespace it is in until then; code
// whose fn may fail to let the thread go back runs InNetnsPath on a
// goroutine of its own.
func InNetnsPath(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer f.Close()
	return InNetnsFD(int(f.Fd()), fn)
}

// InNetnsFD is [InNetnsPath] for a namespace open as fd.
func InNetnsFD(fd int, fn func() error) (err error) {
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
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			// The thread is stuck in the wrong namespace: leave it
			// locked (no UnlockOSThread), so that nothing else runs on
			// it and the runtime discards it when the goroutine ends.
			err = errors.Join(err, fmt.Errorf("restore netns: %w (thread left locked in the entered namespace)",
				os.NewSyscallError("setns", serr)))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}
