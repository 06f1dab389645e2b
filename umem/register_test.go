package umem

import (
	"errors"
	"testing"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestRegister(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	for _, huge := range []bool{false, true} {
		u, err := New(&Options{NumFrames: 1024, FillRingSize: 512, HugePages: huge})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("huge pages asked %v, got %v (%v)", huge, u.HugePages(), u.HugePagesErr())
		if huge && !u.HugePages() && u.HugePagesErr() == nil {
			t.Fatal("huge pages fell back without saying why")
		}
		if !huge && u.HugePagesErr() != nil {
			t.Fatalf("note about huge pages nobody asked for: %v", u.HugePagesErr())
		}
		fd, err := sys.XSKSocket()
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Register(fd); err != nil {
			t.Fatal(err)
		}
		if err := u.Register(fd); err == nil {
			t.Fatal("second Register succeeded")
		}
		if n := u.Refill(); n != 512 {
			t.Fatalf("refill: %d", n)
		}
		// The area is writable and frames alias it.
		area := u.Area()
		area[2048*3] = 0xab
		addr := sys.Addr(area)
		if c := u.Counts(); c.Fill != 512 || c.Total() != 1024 {
			t.Fatalf("counts %+v", c)
		}
		if err := u.UnmapRings(); err != nil {
			t.Fatal(err)
		}
		if err := sys.Close(fd); err != nil {
			t.Fatal(err)
		}
		if err := u.Close(); err != nil {
			t.Fatal(err)
		}
		if err := u.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		if testenv.Mapped(t, addr) {
			t.Fatalf("umem area at %#x still mapped after Close", addr)
		}
		if err := u.Register(fd); err == nil {
			t.Fatal("Register after Close succeeded")
		}
	}
	if after := testenv.Snapshot(t); after.FDs != before.FDs || after.SocketMappings != before.SocketMappings {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

func TestRegisterRefused(t *testing.T) {
	testenv.RequirePrivileged(t)
	u, err := New(&Options{NumFrames: 64, FillRingSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// Not an AF_XDP socket.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = u.Register(fd)
	if err == nil || !errors.Is(err, unix.ENOPROTOOPT) {
		t.Fatalf("register on a UDP socket: %v", err)
	}
	t.Log(err)
}
