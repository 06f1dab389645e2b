package app

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// SetThreadedNAPI turns threaded NAPI on or off for ep
// (/sys/class/net/NAME/threaded): the device's NAPI polls then run in
// kernel threads that the scheduler may put on any CPU, instead of in the
// softirqs of whichever CPU raised them. On veth that moves the receiving
// end's work off the sending CPU. The device must have NAPI enabled (on
// veth: an XDP program attached).
//
// sysfs shows the devices of the namespace that mounted it, so this does
// what `ip netns exec` does: on a throwaway thread, a private mount
// namespace, the device's network namespace, and a fresh sysfs mount.
func SetThreadedNAPI(ep netenv.Endpoint, on bool) error {
	dir, err := os.MkdirTemp("", "afxdp-sysfs")
	if err != nil {
		return fmt.Errorf("set threaded napi on %s: %w", ep.Name, err)
	}
	defer os.Remove(dir)
	val := "0"
	if on {
		val = "1"
	}
	errc := make(chan error, 1)
	go func() {
		// The thread's namespaces are changed for good: it stays locked
		// and the runtime discards it when this goroutine ends.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return os.NewSyscallError("unshare", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
				return os.NewSyscallError("mount", err)
			}
			if ep.NS != nil {
				if err := netns.Set(ep.NS.NsHandle()); err != nil {
					return err
				}
			}
			if err := unix.Mount("sysfs", dir, "sysfs", 0, ""); err != nil {
				return os.NewSyscallError("mount sysfs", err)
			}
			defer unix.Unmount(dir, unix.MNT_DETACH)
			return os.WriteFile(filepath.Join(dir, "class/net", ep.Name, "threaded"), []byte(val), 0)
		}()
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("set threaded napi on %s: %w", ep.Name, err)
	}
	return nil
}
