package netenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Netns is a network namespace made by [NewNetns].
//
// Code runs inside it through [Netns.Do]; links inside it are managed through
// [Netns.Handle] without switching threads.
type Netns struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle

	closeOnce sync.Once
	closeErr  error
}

// NewNetns makes a new network namespace with its loopback up. With name ""
// the namespace is anonymous: it lives as long as the returned value (or the
// process). With a name it is also bind-mounted at /var/run/netns/NAME, so
// that `ip netns exec NAME` can enter it, until Close.
func NewNetns(name string) (_ *Netns, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("create netns: get current netns: %w", err)
	}
	defer orig.Close()

	var h netns.NsHandle
	if name != "" {
		h, err = netns.NewNamed(name)
	} else {
		h, err = netns.New()
	}
	// netns.New moves this thread into the new namespace: move it back
	// before anything else runs on it.
	if serr := netns.Set(orig); serr != nil {
		// The thread is stuck in the wrong namespace; keep it locked so
		// that the runtime discards it when this goroutine exits.
		runtime.LockOSThread()
		if err == nil {
			h.Close()
		}
		return nil, fmt.Errorf("create netns: restore original netns: %w", serr)
	}
	if err != nil {
		return nil, fmt.Errorf("create netns %q: %w", name, err)
	}

	n := &Netns{name: name, h: h}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	n.nl, err = netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("create netns %q: netlink handle: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("create netns %q: find lo: %w", name, err)
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("create netns %q: set lo up: %w", name, err)
	}
	return n, nil
}

// Name is the namespace's name, or "" for an anonymous one.
func (n *Netns) Name() string { return n.name }

// Handle is a netlink handle that operates inside the namespace.
func (n *Netns) Handle() *netlink.Handle { return n.nl }

// NsHandle is the namespace's file descriptor handle.
func (n *Netns) NsHandle() netns.NsHandle { return n.h }

// Path is a path that names the namespace: /var/run/netns/NAME for a named
// one, otherwise /proc/PID/fd/FD, valid while n is open.
func (n *Netns) Path() string {
	if n.name != "" {
		return filepath.Join("/var/run/netns", n.name)
	}
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(n.h))
}

// Do runs fn on a thread that is inside the namespace. Sockets and BPF links
// that fn creates belong to the namespace and may be used from any goroutine
// afterwards; goroutines that fn starts do not run inside it.
func (n *Netns) Do(fn func() error) error {
	if err := sys.InNetnsFD(int(n.h), fn); err != nil {
		return fmt.Errorf("in netns %s: %w", n, err)
	}
	return nil
}

func (n *Netns) String() string {
	if n.name != "" {
		return n.name
	}
	return fmt.Sprintf("netns(fd %d)", int(n.h))
}

// Close deletes a named namespace's mount and closes the handle. The
// namespace itself, with its links, goes away once no process or socket uses
// it. A second Close returns nil.
func (n *Netns) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.nl != nil {
			n.nl.Close()
		}
		if n.name != "" {
			if err := netns.DeleteNamed(n.name); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("delete netns %q: %w", n.name, err))
			}
		}
		if n.h.IsOpen() {
			if err := n.h.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close netns handle: %w", err))
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// RandomName returns prefix followed by random hex digits, at most 15 bytes
// (the kernel's limit for interface names).
func RandomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	s := prefix + hex.EncodeToString(b[:])
	if len(s) > 15 {
		s = s[:15]
	}
	return s
}
