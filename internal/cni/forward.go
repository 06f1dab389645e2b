package cni

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// ipForwardPath is net.ipv4.ip_forward of the namespace of the thread that
// opens it.
const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// The ptp and bridge plugins set ip_forward=1 in the namespace they run in
// and never set it back. The value is one per network namespace, shared by
// every attachment made there, so this process keeps one record per
// namespace: the value before its first ptp or bridge attachment there, and
// how many of its attachments there are still open. The last to close puts
// the value back. Processes do not coordinate with one another.
var forwarding = struct {
	sync.Mutex
	byNetns map[netnsID]*forwardHold // guarded by the mutex
}{byNetns: make(map[netnsID]*forwardHold)}

// netnsID identifies a network namespace by its nsfs inode.
type netnsID struct{ dev, ino uint64 }

// openThreadNetns opens the network namespace of the calling thread, which
// the caller has locked, and returns it with its identity.
func openThreadNetns() (*os.File, netnsID, error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, netnsID{}, fmt.Errorf("open current netns: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, netnsID{}, fmt.Errorf("stat current netns: %w", os.NewSyscallError("fstat", err))
	}
	return f, netnsID{dev: st.Dev, ino: st.Ino}, nil
}

// forwardHold is the record of one namespace; its fields are guarded by
// forwarding's mutex.
type forwardHold struct {
	id netnsID
	// netns is the namespace, held open so that its inode number is not
	// reused while the record exists and so that release restores
	// ip_forward there, whichever namespace Close is called from.
	netns *os.File
	orig  []byte // ip_forward before the first attachment
	users int    // open attachments that count on it
}

// holdForward counts one more attachment in the calling thread's network
// namespace, where the plugin is about to run, reading ip_forward first if
// it is the first. Each hold is released once.
func holdForward() (*forwardHold, error) {
	// The namespace's identity and ip_forward must be read on one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, id, err := openThreadNetns()
	if err != nil {
		return nil, err
	}

	forwarding.Lock()
	defer forwarding.Unlock()
	if h := forwarding.byNetns[id]; h != nil {
		f.Close()
		h.users++
		return h, nil
	}
	orig, err := os.ReadFile(ipForwardPath)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read ip_forward: %w", err)
	}
	h := &forwardHold{id: id, netns: f, orig: orig, users: 1}
	forwarding.byNetns[id] = h
	return h, nil
}

// release gives back one hold. The last one writes the saved ip_forward
// back into the namespace if it differs now, under the mutex, so that no
// attachment starting meanwhile reads a value about to be overwritten.
func (h *forwardHold) release() error {
	forwarding.Lock()
	defer forwarding.Unlock()
	h.users--
	if h.users > 0 {
		return nil
	}
	delete(forwarding.byNetns, h.id)
	err := sys.InNetnsFD(int(h.netns.Fd()), func() error {
		now, err := os.ReadFile(ipForwardPath)
		if err == nil && !bytes.Equal(now, h.orig) {
			err = os.WriteFile(ipForwardPath, h.orig, 0)
		}
		return err
	})
	runtime.KeepAlive(h.netns)
	if err != nil {
		err = fmt.Errorf("restore ip_forward: %w", err)
	}
	return errors.Join(err, h.netns.Close())
}
