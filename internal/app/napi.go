package app

import (
	"errors"
	"fmt"
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

// SetVethThreadedNAPI is SetThreadedNAPI for a veth end with or without
// NAPI instances now. veth has them only while an XDP program is attached,
// and the kernel refuses the switch without them, so a pass-through
// program is attached for the moment; the instances that a receiver's own
// program makes later follow the device's setting.
func SetVethThreadedNAPI(ep netenv.Endpoint, on bool) error {
	pass, err := pktgen.AttachSink(ep, pktgen.Pass)
	if err != nil {
		return fmt.Errorf("set threaded napi on %s: %w", ep.Name, err)
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
