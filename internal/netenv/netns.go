package netenv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is a network namespace made by [NewNetns].
//
// Code runs inside it through [Netns.Do]; links inside it are managed through
// [Netns.Netlink] (or [Netns.Handle]) without switching threads.
//
// Its methods may be called from several goroutines, but not while Close
// runs: after Close, Do and Netlink return an error wrapping [net.ErrClosed]
// and Handle panics, rather than act in the caller's namespace.
type Netns struct {
	name string
	h    netns.NsHandle
	fd   int // h's descriptor, kept for String after Close
	nl   *netlink.Handle

	closed    atomic.Bool
	closeOnce sync.Once
}

// NewNetns makes a new network namespace with its loopback up. With name ""
// the namespace is anonymous: it lives as long as the returned value (or the
// process). With a name it is also bind-mounted at /var/run/netns/NAME, so
// that `ip netns exec NAME` can enter it, until Close; a name that is not a
// single file name there (containing "/", or "." or "..") is refused.
func NewNetns(name string) (_ *Netns, err error) {
	if name != "" && (name == "." || name == ".." || strings.ContainsAny(name, "/\x00")) {
		return nil, fmt.Errorf("create netns: name %q: must be a file name, without / or NUL, other than . and ..", name)
	}
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

	n := &Netns{name: name, h: h, fd: int(h)}
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

// Netlink returns a netlink handle that operates inside the namespace, or,
// after Close, an error wrapping [net.ErrClosed]. The handle belongs to n:
// do not close it, and do not keep it past n's Close, for a closed
// netlink.Handle silently falls back to sockets in the namespace of the
// calling thread.
func (n *Netns) Netlink() (*netlink.Handle, error) {
	if n.closed.Load() {
		return nil, fmt.Errorf("use netns %s: %w", n, net.ErrClosed)
	}
	return n.nl, nil
}

// Handle is [Netns.Netlink] for code that holds n open, such as a test
// before its cleanup runs. It panics after Close instead of returning a
// handle that would act in the caller's namespace.
func (n *Netns) Handle() *netlink.Handle {
	h, err := n.Netlink()
	if err != nil {
		panic("netenv: Handle of a closed namespace: " + err.Error())
	}
	return h
}

// NsHandle is the namespace's file descriptor handle; after Close it is
// closed (-1).
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
	if n.closed.Load() {
		return fmt.Errorf("in netns %s: %w", n, net.ErrClosed)
	}
	if err := sys.InNetnsFD(int(n.h), fn); err != nil {
		return fmt.Errorf("in netns %s: %w", n, err)
	}
	return nil
}

// String is the namespace's name, or for an anonymous one "(anonymous,
// fd N)", so that "in netns %s" reads well either way.
func (n *Netns) String() string {
	if n.name != "" {
		return n.name
	}
	return fmt.Sprintf("(anonymous, fd %d)", n.fd)
}

// Close deletes a named namespace's mount and closes the handle. The
// namespace itself, with its links, goes away once no process or socket uses
// it. The first Close reports every failure; later ones return nil.
// Closes called at the same time wait for the first.
func (n *Netns) Close() (err error) {
	n.closeOnce.Do(func() {
		n.closed.Store(true)
		var errs []error
		if n.nl != nil {
			n.nl.Close()
		}
		if n.name != "" {
			if err := n.deleteName(); err != nil {
				errs = append(errs, fmt.Errorf("delete netns %q: %w", n.name, err))
			}
		}
		if n.h.IsOpen() {
			if err := n.h.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close netns handle: %w", err))
			}
		}
		err = errors.Join(errs...)
	})
	return err
}

// deleteName removes the bind mount at Path that NewNetns made, and the file
// under it. What someone else did first is not an error: a name already
// removed is left so; a file with nothing mounted on it any more (the mount
// removed behind n's back) is removed; a name that holds another namespace
// now (removed and made again under the same name) is not n's, and is left
// alone.
func (n *Netns) deleteName() error {
	path := n.Path()
	var st, own unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return os.NewSyscallError("stat", err)
	}
	if err := unix.Fstat(n.fd, &own); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if st.Dev == own.Dev && st.Ino == own.Ino {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return os.NewSyscallError("umount", err)
		}
	} else {
		var fs unix.Statfs_t
		if err := unix.Statfs(path, &fs); err != nil {
			return os.NewSyscallError("statfs", err)
		}
		if fs.Type == unix.NSFS_MAGIC {
			return nil
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
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
