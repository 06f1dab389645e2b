package app

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
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
//
// Its errors name the device and its namespace; one matches
// [net.ErrClosed] when that namespace is closed, and [fs.ErrNotExist]
// when the device is not in it.
func SetThreadedNAPI(ep netenv.Endpoint, on bool) error {
	fail := func(err error) error {
		return fmt.Errorf("set threaded napi on %s: %w", where(ep), err)
	}
	if err := nsOpen(ep); err != nil {
		return fail(err)
	}
	dir, err := os.MkdirTemp("", "afxdp-sysfs")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(dir)
	val := "0"
	if on {
		val = "1"
	}
	errc := make(chan error, 1)
	go func() {
		// The goroutine stays locked to its thread, so that the runtime
		// discards the thread when the goroutine ends: its mount
		// namespace is its own from the unshare on. The main thread is
		// never discarded, though, only parked, and /proc/self shows it:
		// before it ends, the thread goes back to the namespaces it was
		// in (restore), so that a parked main thread is where it was.
		runtime.LockOSThread()
		restore, err := threadNamespaces()
		if err != nil {
			errc <- err
			return
		}
		unshared := false
		err = func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("private mount namespace: %w", os.NewSyscallError("unshare", err))
			}
			unshared = true
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
				return fmt.Errorf("private mount namespace: %w", os.NewSyscallError("mount", err))
			}
			if ep.NS != nil {
				if err := netns.Set(ep.NS.NsHandle()); err != nil {
					return fmt.Errorf("enter the namespace: %w", os.NewSyscallError("setns", err))
				}
			}
			if err := unix.Mount("sysfs", dir, "sysfs", 0, ""); err != nil {
				return os.NewSyscallError("mount sysfs", err)
			}
			defer unix.Unmount(dir, unix.MNT_DETACH)
			p := filepath.Join("class/net", ep.Name, "threaded")
			err := os.WriteFile(filepath.Join(dir, p), []byte(val), 0)
			// Name the file as it is seen in the device's namespace,
			// not by the throwaway mount's path.
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				pe.Path = filepath.Join("/sys", p)
			}
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no such interface: %w", err)
			}
			return err
		}()
		errc <- errors.Join(err, restore(unshared))
	}()
	if err := <-errc; err != nil {
		return fail(err)
	}
	return nil
}

// where names ep for an error: its name, and its namespace unless it is
// in the caller's.
func where(ep netenv.Endpoint) string {
	if ep.NS == nil {
		return ep.Name
	}
	return fmt.Sprintf("%s in netns %s", ep.Name, ep.NS)
}

// nsOpen fails, matching net.ErrClosed, when ep's namespace is closed:
// its handle, which a thread would enter, is gone.
func nsOpen(ep netenv.Endpoint) error {
	if ep.NS != nil && ep.NS.NsHandle() < 0 {
		return fmt.Errorf("the namespace is closed: %w", net.ErrClosed)
	}
	return nil
}

// SetVethThreadedNAPI is SetThreadedNAPI for a veth end with or without
// NAPI instances now. veth has them only while an XDP program is attached,
// and the kernel refuses the switch without them, so a pass-through
// program is attached for the moment; the instances that a receiver's own
// program makes later follow the device's setting.
func SetVethThreadedNAPI(ep netenv.Endpoint, on bool) error {
	if err := nsOpen(ep); err != nil {
		return fmt.Errorf("set threaded napi on %s: %w", where(ep), err)
	}
	pass, err := pktgen.AttachSink(ep, pktgen.Pass)
	if err != nil {
		return fmt.Errorf("set threaded napi on %s: %w", where(ep), err)
	}
	return errors.Join(SetThreadedNAPI(ep, on), pass.Close())
}

// PinNAPIThreads pins the threaded-NAPI kernel threads of ep (named
// "napi/NAME-ID") to cpu and returns how many it pinned. Left alone, the
// scheduler moves them between CPUs, and on two cores a receiver's rate
// then depends on where the thread happened to run. Threads exist only
// while the device is threaded and has NAPI instances (on veth: while an
// XDP program is attached), so call it after the receiver started. cpu
// must be one of [sys.AllowedCPUs], the CPUs this process may run on.
func PinNAPIThreads(ep netenv.Endpoint, cpu int) (int, error) {
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		return 0, fmt.Errorf("pin napi threads of %s: %w", ep.Name, err)
	}
	if !cpus.Contains(cpu) {
		return 0, fmt.Errorf("pin napi threads of %s: cpu %d: not one of the CPUs this process may run on (%s)", ep.Name, cpu, cpus)
	}
	ts, err := napiThreads(ep)
	if err != nil {
		return 0, fmt.Errorf("pin napi threads of %s: %w", ep.Name, err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	for i, t := range ts {
		if err := unix.SchedSetaffinity(t.pid, &set); err != nil {
			return i, fmt.Errorf("pin napi thread %s of %s to cpu %d: %w",
				t.name, ep.Name, cpu, os.NewSyscallError("sched_setaffinity", err))
		}
	}
	return len(ts), nil
}

// NAPIThreads returns the pids of ep's threaded-NAPI kernel threads
// ("napi/NAME-ID"): none unless the device is threaded and has NAPI
// instances.
func NAPIThreads(ep netenv.Endpoint) ([]int, error) {
	ts, err := napiThreads(ep)
	if err != nil {
		return nil, fmt.Errorf("napi threads of %s: %w", ep.Name, err)
	}
	pids := make([]int, len(ts))
	for i, t := range ts {
		pids[i] = t.pid
	}
	return pids, nil
}

type kthread struct {
	pid  int
	name string
}

// napiThreads lists ep's threaded-NAPI kernel threads.
func napiThreads(ep netenv.Endpoint) ([]kthread, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	prefix := "napi/" + ep.Name + "-"
	var ts []kthread
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue // gone
		}
		// Older kernels cut a kernel thread's comm to 15 bytes.
		name := strings.TrimSpace(string(comm))
		if strings.HasPrefix(name, prefix) || len(name) == 15 && strings.HasPrefix(prefix, name) {
			ts = append(ts, kthread{pid, name})
		}
	}
	return ts, nil
}

// threadNamespaces opens the calling thread's network and mount
// namespaces and returns a function that puts the thread back into the
// network namespace and, with mnt, the mount namespace, and closes both.
// The caller must be locked to its thread. (setns into a mount namespace
// needs a thread that shares no file system information with others, as
// one that has unshared CLONE_NEWNS does.)
func threadNamespaces() (restore func(mnt bool) error, err error) {
	netFile, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open the thread's network namespace: %w", err)
	}
	mntFile, err := os.Open("/proc/thread-self/ns/mnt")
	if err != nil {
		netFile.Close()
		return nil, fmt.Errorf("open the thread's mount namespace: %w", err)
	}
	return func(mnt bool) error {
		err := setnsBack("network", netFile, unix.CLONE_NEWNET)
		if mnt {
			err = errors.Join(err, setnsBack("mount", mntFile, unix.CLONE_NEWNS))
		}
		netFile.Close()
		mntFile.Close()
		return err
	}, nil
}

// setnsBack puts the calling thread back into the namespace f, of type
// nstype, which what names.
func setnsBack(what string, f *os.File, nstype int) error {
	if err := unix.Setns(int(f.Fd()), nstype); err != nil {
		return fmt.Errorf("go back to the thread's %s namespace: %w", what, os.NewSyscallError("setns", err))
	}
	return nil
}
