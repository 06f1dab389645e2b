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

// TestNetnsCloseFailsOnce unmounts a named namespace behind its back, so
// that Close fails to unmount it (EINVAL): of Closes called at the same
// time one reports that, the others return nil once it is done, and so
// does a Close after them. The handle is closed all the same.
func TestNetnsCloseFailsOnce(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns, err := netenv.NewNetns(netenv.RandomName("afxt"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("/var/run/netns", ns.Name())
	t.Cleanup(func() {
		ns.Close()
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
	})
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	err = testenv.FailsOnce(t, "Close", 8, ns.Close)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Close of a namespace unmounted behind its back: %v; want EINVAL", err)
	}
	if ns.NsHandle().IsOpen() {
		t.Error("handle still open after a failed Close")
	}
}
