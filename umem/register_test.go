package umem

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
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

// TestAddRings shares a registered UMEM with a second socket: the rings
// are the second socket's own, the receive frames must cover every fill
// ring, and the area outlives Close of the UMEM until the added rings
// close too; then AddRings is refused.
func TestAddRings(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	u, err := New(&Options{NumFrames: 1024, FillRingSize: 256, CompletionRingSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	fd1, err := sys.XSKSocket()
	if err != nil {
		t.Fatal(err)
	}
	fd2, err := sys.XSKSocket()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.AddRings(fd2, 256, 256); err == nil || err.Error() != "share umem: not registered with a socket yet" {
		t.Fatalf("AddRings before Register: %v", err)
	}
	if err := u.Register(fd1); err != nil {
		t.Fatal(err)
	}
	// 512 receive frames: 256 in the first fill ring leave room for 256.
	if _, err := u.AddRings(fd2, 512, 256); err == nil || !strings.Contains(err.Error(), "UMEM too small for another fill ring of 512: its 512 receive frames already fill rings of 256") {
		t.Fatalf("AddRings beyond the frames: %v", err)
	}
	if _, err := u.AddRings(fd2, 256, 100); err == nil || !strings.Contains(err.Error(), "CompletionRingSize 100: must be a power of two") {
		t.Fatalf("AddRings with a bad size: %v", err)
	}
	r, err := u.AddRings(fd2, 256, 128)
	if err != nil {
		t.Fatal(err)
	}
	if r.FillRing() == u.FillRing() || r.FillRing().Size() != 256 || r.CompletionRing().Size() != 128 {
		t.Fatal("added rings are not the second socket's own")
	}
	if a, b := u.Refill(), r.Refill(); a != 256 || b != 256 {
		t.Fatalf("refills put %d and %d frames in the fill rings, want 256 each", a, b)
	}
	if c := u.Counts(); c.Fill != 512 || c.Free != 512 || c.Total() != 1024 {
		t.Fatalf("counts %+v", c)
	}
	area := sys.Addr(u.Area())
	if err := u.UnmapRings(); err != nil {
		t.Fatal(err)
	}
	if err := sys.Close(fd1); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if !testenv.Mapped(t, area) {
		t.Fatal("area unmapped while added rings still use it")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if testenv.Mapped(t, area) {
		t.Fatal("area still mapped after the last rings closed")
	}
	if _, err := u.AddRings(fd2, 1, 1); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AddRings after the last rings closed: %v, want net.ErrClosed", err)
	}
	if err := sys.Close(fd2); err != nil {
		t.Fatal(err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// TestAddRingsOutlivesFirstSocket closes the socket the UMEM was
// registered with while another shares it: a third may still join
// through AddRings, the frames the closed rings held are counted as lost
// and leave no room for fill rings, and the area goes with the last
// rings.
func TestAddRingsOutlivesFirstSocket(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	u, err := New(&Options{NumFrames: 2048, FillRingSize: 256, CompletionRingSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	fds := make([]int, 3)
	for i := range fds {
		if fds[i], err = sys.XSKSocket(); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Register(fds[0]); err != nil {
		t.Fatal(err)
	}
	r1, err := u.AddRings(fds[1], 256, 256)
	if err != nil {
		t.Fatal(err)
	}
	// The sockets are not bound: the kernel takes nothing from the fill
	// rings, and what Refill puts there stays held.
	if a, b := u.Refill(), r1.Refill(); a != 256 || b != 256 {
		t.Fatalf("refills put %d and %d frames in the fill rings, want 256 each", a, b)
	}
	area := sys.Addr(u.Area())
	if err := u.UnmapRings(); err != nil {
		t.Fatal(err)
	}
	if err := sys.Close(fds[0]); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if c := u.Counts(); c.Lost != 256 || c.Fill != 256 || c.Free != 1536 || c.Total() != 2048 {
		t.Fatalf("after the first socket closed: %+v, want 256 lost and 256 in the fill ring", c)
	}

	// 1024 receive frames: 256 fill r1's ring and 256 are lost, so 512
	// more fit and 1024 do not.
	if _, err := u.AddRings(fds[2], 1024, 256); err == nil || !strings.Contains(err.Error(),
		"UMEM too small for another fill ring of 1024: its 1024 receive frames already fill rings of 256 in all, and 256 went with closed sockets") {
		t.Fatalf("AddRings beyond the frames left: %v", err)
	}
	r2, err := u.AddRings(fds[2], 512, 256)
	if err != nil {
		t.Fatalf("AddRings while a socket still shares the closed UMEM: %v", err)
	}
	if n := r2.Refill(); n != 512 {
		t.Fatalf("refill of the third socket's fill ring: %d, want 512", n)
	}
	if h := r2.Held(); h != 512 {
		t.Fatalf("third socket's rings hold %d frames, want 512", h)
	}

	for i, r := range []*Rings{r1, r2} {
		if !testenv.Mapped(t, area) {
			t.Fatalf("area unmapped while %d added rings remain", 2-i)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sys.Close(fds[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if testenv.Mapped(t, area) {
		t.Fatal("area still mapped after the last rings closed")
	}
	if c := u.Counts(); c.Lost != 1024 || c.Fill != 0 || c.Total() != 2048 {
		t.Fatalf("after every socket closed: %+v, want all 1024 receive frames lost", c)
	}
	if _, err := u.AddRings(-1, 1, 1); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AddRings once no socket uses the UMEM: %v, want net.ErrClosed", err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// memlockChild marks the child process of TestRegisterOverMemlockSaysSo.
const memlockChild = "AFXDP_UMEM_TEST_MEMLOCK_CHILD"

// TestRegisterOverMemlockSaysSo registers a 2 MiB UMEM in a process
// without CAP_IPC_LOCK whose memlock limit is 1 MiB. The kernel answers
// ENOBUFS, which alone reads "no buffer space available"; Register's error
// says that the UMEM exceeds RLIMIT_MEMLOCK, with both sizes, and what
// lifts the limit, and still matches the errno. The child process is
// needed for the limit, which cannot be raised again once lowered.
func TestRegisterOverMemlockSaysSo(t *testing.T) {
	testenv.RequirePrivileged(t)
	if os.Getenv(memlockChild) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRegisterOverMemlockSaysSo$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), memlockChild+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestRegisterOverMemlockSaysSo") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	// The kernel checks CAP_IPC_LOCK in the calling thread's
	// credentials: drop it on this thread and stay on it (the process
	// ends with the test).
	runtime.LockOSThread()
	const limit = 1 << 20
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatal(err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	data[0].Effective &^= 1 << unix.CAP_IPC_LOCK
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	u, err := New(&Options{NumFrames: 1024, FillRingSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fd, err := sys.XSKSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(fd)
	err = u.Register(fd)
	want := "register umem: UMEM of 2097152 bytes exceeds the locked-memory limit (RLIMIT_MEMLOCK 1048576 bytes, shared with this user's other locked memory); CAP_IPC_LOCK or a higher limit lifts it: setsockopt: no buffer space available"
	if err == nil || err.Error() != want || !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("Register over RLIMIT_MEMLOCK = %v, want %q matching ENOBUFS", err, want)
	}
}
