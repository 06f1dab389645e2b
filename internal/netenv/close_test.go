package netenv_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// loopback is ns's loopback as an Endpoint: a link that the kernel
// refuses to delete (EOPNOTSUPP), for a Close that fails for real.
func loopback(t *testing.T, ns *netenv.Netns) netenv.Endpoint {
	t.Helper()
	l, err := ns.Handle().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	return netenv.Endpoint{Name: "lo", Index: l.Attrs().Index, NS: ns}
}

// TestLinkCloseFailsOnce closes a Link that the kernel refuses to
// delete from several goroutines at once: one reports the failure, the
// others return nil once it is done, and so does a Close after them,
// rather than each reporting the first one's failure again.
func TestLinkCloseFailsOnce(t *testing.T) {
	ns := testenv.NewNetns(t)
	l := &netenv.Link{Endpoint: loopback(t, ns)}
	err := testenv.FailsOnce(t, "Close", 8, l.Close)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("Close of a loopback: %v; want EOPNOTSUPP", err)
	}
}

// TestVethCloseFailsOnce is TestLinkCloseFailsOnce for a Veth.
func TestVethCloseFailsOnce(t *testing.T) {
	ns := testenv.NewNetns(t)
	v := netenv.VethOf(loopback(t, ns))
	err := testenv.FailsOnce(t, "Close", 8, v.Close)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("Close of a veth over a loopback: %v; want EOPNOTSUPP", err)
	}
}

// unmountedNetns returns a named namespace whose mount has been removed
// behind its back, and its path; the test's clean-up closes it and removes
// whatever is left at the path.
func unmountedNetns(t *testing.T) (*netenv.Netns, string) {
	t.Helper()
	testenv.RequirePrivileged(t)
	ns, err := netenv.NewNetns(netenv.RandomName("afxt"))
	if err != nil {
		t.Fatal(err)
	}
	path := ns.Path()
	t.Cleanup(func() {
		ns.Close()
		unix.Unmount(path, unix.MNT_DETACH)
		os.RemoveAll(path)
	})
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	return ns, path
}

// TestNetnsCloseFailsOnce puts a directory that is not empty where a named
// namespace's mount was, so that Close fails to remove it (ENOTEMPTY): of
// Closes called at the same time one reports that, the others return nil
// once it is done, and so does a Close after them. The handle is closed all
// the same.
func TestNetnsCloseFailsOnce(t *testing.T) {
	ns, path := unmountedNetns(t)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "in"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := testenv.FailsOnce(t, "Close", 8, ns.Close)
	if !errors.Is(err, unix.ENOTEMPTY) {
		t.Errorf("Close with a directory in the way: %v; want ENOTEMPTY", err)
	}
	if ns.NsHandle().IsOpen() {
		t.Error("handle still open after a failed Close")
	}
}

// TestNetnsCloseAfterUnmount unmounts a named namespace behind its back:
// Close removes the file the mount was on, which nobody else would, and
// reports no error, since what it made is gone.
func TestNetnsCloseAfterUnmount(t *testing.T) {
	ns, path := unmountedNetns(t)
	if err := ns.Close(); err != nil {
		t.Errorf("Close of a namespace unmounted behind its back: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Close: %v; want it removed", path, err)
	}
}

// TestNetnsCloseLeavesAnotherNamespace removes a named namespace behind its
// back and makes another under the same name, as `ip netns del` and `ip
// netns add` would: Close leaves that one, which is not its own, alone.
func TestNetnsCloseLeavesAnotherNamespace(t *testing.T) {
	ns, path := unmountedNetns(t)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := netenv.NewNetns(ns.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	if err := ns.Close(); err != nil {
		t.Errorf("Close with another namespace under its name: %v", err)
	}
	var st, want unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("the other namespace's %s after Close: %v", path, err)
	}
	if err := unix.Fstat(int(other.NsHandle()), &want); err != nil {
		t.Fatal(err)
	}
	if st.Dev != want.Dev || st.Ino != want.Ino {
		t.Errorf("%s after Close is not the other namespace", path)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the other's Close: %v; want it removed", path, err)
	}
}
