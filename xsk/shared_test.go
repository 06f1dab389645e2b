package xsk_test

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/umem"
	"github.com/afxdp/afxdp/xsk"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// sharedOpts size a UMEM for two sockets: 2048 receive frames fill two
// fill rings of 1024.
var sharedOpts = xsk.Options{Filter: udpFilter, NumFrames: 4096, FillRingSize: 1024, CompletionRingSize: 1024}

// TestSharedUMEMForward forwards between two veth pairs through two
// sockets on one UMEM, in both directions at once: every frame that a
// peer sends comes out at the other peer, byte for byte, transmitted from
// the frame it was received into, and all frames are home at the end.
func TestSharedUMEMForward(t *testing.T) {
	const n = 50_000
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	a := openOn(t, v1.Host, 0, &sharedOpts)
	bo := sharedOpts // NumFrames the same as the UMEM's: accepted
	bo.ShareUMEM = a
	b := openOn(t, v2.Host, 0, &bo)
	if a.UMEM() != b.UMEM() {
		t.Fatal("the second socket has a UMEM of its own")
	}
	if b.Mode() != a.Mode() || b.Mode() != xsk.BindCopy {
		t.Fatalf("modes %v and %v, want copy mode for both on veth", a.Mode(), b.Mode())
	}
	if b.XDPMode() != bpf.AttachDriver {
		t.Fatalf("second socket's XDP mode %v, want driver", b.XDPMode())
	}
	p1, p2 := newPacketSocket(t, v1.Peer), newPacketSocket(t, v2.Peer)
	in1 := newFlow(v1.Peer, v1.Host, 22) // comes out at v2.Peer
	in2 := newFlow(v2.Peer, v2.Host, 40) // comes out at v1.Peer
	in2.hdr.SrcPort = 40001

	// The forwarder: what a receives b sends and the other way round,
	// one goroutine for both sockets as sharing asks. The MACs are
	// rewritten for the far side; the rest of each frame is untouched.
	stop := make(chan struct{})
	fwdDone := make(chan error, 1)
	go func() {
		descs := make([]xsk.Desc, 64)
		dirs := []struct {
			from, to *xsk.Socket
			dst, src net.HardwareAddr
		}{{a, b, v2.Peer.MAC, v2.Host.MAC}, {b, a, v1.Peer.MAC, v1.Host.MAC}}
		pending := make([][]xsk.Desc, 2)
		for {
			select {
			case <-stop:
				for i, d := range dirs {
					if err := d.from.Release(pending[i]); err != nil {
						fwdDone <- err
						return
					}
				}
				fwdDone <- nil
				return
			default:
			}
			for i, d := range dirs {
				if len(pending[i]) == 0 {
					k, err := d.from.Receive(descs)
					if err != nil {
						fwdDone <- err
						return
					}
					pending[i] = append(pending[i][:0], descs[:k]...)
					for _, dd := range pending[i] {
						f := d.from.Frame(dd)
						copy(f[0:6], d.dst)
						copy(f[6:12], d.src)
					}
				}
				if len(pending[i]) == 0 {
					continue
				}
				// Frames received by one socket are the other's
				// to send only because the UMEM is one.
				sent, err := d.to.Transmit(pending[i])
				if err != nil {
					fwdDone <- err
					return
				}
				pending[i] = pending[i][sent:]
			}
		}
	}()

	var got1, got2 atomic.Int64
	done1, done2 := make(chan *seen), make(chan *seen)
	deadline := time.Now().Add(60 * time.Second)
	go func() { done1 <- p2.receiveAll(t, in1, n, &got1, deadline) }()
	go func() { done2 <- p1.receiveAll(t, in2, n, &got2, deadline) }()
	go sendWindowed(t, in2, n, 256, &got2, func(f []byte) { p2.send(t, f) })
	sendWindowed(t, in1, n, 256, &got1, func(f []byte) { p1.send(t, f) })
	s1, s2 := <-done1, <-done2
	close(stop)
	if err := <-fwdDone; err != nil {
		t.Fatalf("forwarder: %v", err)
	}
	if s1.n != n || s2.n != n {
		t.Fatalf("forwarded %d of %d frames one way and %d of %d the other", s1.n, n, s2.n, n)
	}

	// Every frame a received, b sent and the other way round; the
	// completions come back on each sender's own completion ring.
	deadline = time.Now().Add(5 * time.Second)
	for {
		ca, _ := a.Complete()
		cb, _ := b.Complete()
		sa, _ := a.Stats()
		sb, _ := b.Stats()
		if sa.Completed == n && sb.Completed == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("completions: a %d, b %d, want %d each (last reaped %d, %d)", sa.Completed, sb.Completed, n, ca, cb)
		}
		time.Sleep(time.Millisecond)
	}
	sa, _ := a.Stats()
	sb, _ := b.Stats()
	if sa.RxPackets != n || sb.TxPackets != n || sb.RxPackets != n || sa.TxPackets != n {
		t.Fatalf("a %+v\nb %+v", sa, sb)
	}
	if sa.RxDropped+sb.RxDropped+sa.RxRingFull+sb.RxRingFull+sa.FillRingEmpty+sb.FillRingEmpty != 0 {
		t.Fatalf("drops: a %+v\nb %+v", sa, sb)
	}
	// Forwarded receive frames went back to the receive side: refilling
	// puts them in the fill rings again.
	a.Refill()
	b.Refill()
	c := a.Frames()
	if c.Total() != 4096 || c.User() != 0 || c.Tx != 0 || c.Recycling != 0 || c.Fill != 2048 {
		t.Fatalf("frames after forwarding: %+v", c)
	}
}

// TestSharedUMEMCloseOrder closes the UMEM's first socket before the one
// sharing it: the second goes on receiving on the same area, which stays
// mapped until it closes too; then nothing is left.
func TestSharedUMEMCloseOrder(t *testing.T) {
	const n = 10_000
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	p := newPacketSocket(t, v2.Peer)
	before := testenv.Snapshot(t)
	a, b := openSharedPair(t, v1.Host, v2.Host, 0)
	area := addrOf(a.UMEM().Area())
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if q, _ := bpf.QueryXDP(v1.Host.Index); q.Attached() {
		t.Fatalf("XDP program left on the first socket's interface: %+v", q)
	}
	if !testenv.Mapped(t, area) {
		t.Fatal("the shared UMEM was unmapped while a socket still used it")
	}

	fl := newFlow(v2.Peer, v2.Host, 30)
	if got := sendAndReceive(t, b, p, fl, n, 256, 30*time.Second); got != n {
		t.Fatalf("after the first socket closed, the second received %d of %d frames", got, n)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Mapped(t, area) {
		t.Fatal("UMEM still mapped after the last socket closed")
	}
	if q, _ := bpf.QueryXDP(v2.Host.Index); q.Attached() {
		t.Fatalf("XDP program left on the second socket's interface: %+v", q)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// TestSharedUMEMErrors gives ShareUMEM what it cannot use: every Open
// fails with an error that names the fault, and leaves nothing behind.
func TestSharedUMEMErrors(t *testing.T) {
	v1 := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	v2 := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	a := openOn(t, v1.Host, 0, &sharedOpts)
	full := openOn(t, v1.Host, 1, &xsk.Options{Filter: udpFilter}) // its fill ring takes every receive frame
	closed, err := xsk.Open(v2.Host.Name, 0, &sharedOpts)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	// A socket of its own on v2's queue 1 makes binding there fail, after
	// the new socket's rings were made on the UMEM.
	openOn(t, v2.Host, 1, &xsk.Options{Filter: udpFilter})
	fill := a.Frames().Fill
	before := testenv.Snapshot(t)

	tests := []struct {
		name   string
		ifname string
		queue  int
		o      xsk.Options
		want   string
		is     error
	}{
		{"same queue", v1.Host.Name, 0, xsk.Options{ShareUMEM: a, FillRingSize: 512, CompletionRingSize: 512},
			"must be on different interfaces or queues", unix.EINVAL},
		{"closed socket", v2.Host.Name, 0, xsk.Options{ShareUMEM: closed}, "is closed", net.ErrClosed},
		{"UMEM options", v2.Host.Name, 0, xsk.Options{ShareUMEM: a, NumFrames: 2048}, "NumFrames 2048 with ShareUMEM: the shared UMEM has 4096; leave it zero or the same", nil},
		{"frame size", v2.Host.Name, 0, xsk.Options{ShareUMEM: a, FrameSize: 4096}, "FrameSize 4096 with ShareUMEM: the shared UMEM has 2048", nil},
		{"headroom", v2.Host.Name, 0, xsk.Options{ShareUMEM: a, Headroom: 64}, "Headroom 64 with ShareUMEM: the shared UMEM has 0", nil},
		{"huge pages", v2.Host.Name, 0, xsk.Options{ShareUMEM: a, HugePages: true}, "HugePages with ShareUMEM: the shared UMEM is not on huge pages", nil},
		{"zero-copy", v2.Host.Name, 0, xsk.Options{ShareUMEM: a, Bind: xsk.BindZeroCopy}, "Bind zero-copy with ShareUMEM: the UMEM's socket is bound in copy mode", nil},
		{"need_wakeup", v2.Host.Name, 0, xsk.Options{ShareUMEM: a, NoNeedWakeup: true}, "NoNeedWakeup true with ShareUMEM", nil},
		{"too few frames", v2.Host.Name, 0, xsk.Options{ShareUMEM: full}, "UMEM too small for another fill ring of 2048: its 2048 receive frames already fill rings of 2048", nil},
		{"fill ring size", v2.Host.Name, 0, xsk.Options{ShareUMEM: a, FillRingSize: 1000}, "FillRingSize 1000: must be a power of two", nil},
		{"queue taken", v2.Host.Name, 1, xsk.Options{ShareUMEM: a, FillRingSize: 512, CompletionRingSize: 512, Filter: udpFilter},
			"sharing the UMEM of " + v1.Host.Name + " queue 0: another AF_XDP socket holds the queue", unix.EBUSY},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := xsk.Open(tt.ifname, tt.queue, &tt.o)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			var oe *xsk.OpError
			if !errors.As(err, &oe) || oe.Op != "open" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want an OpError for open containing %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %q does not match %v", err, tt.is)
			}
		})
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
	// The failed attempts kept no frames.
	if c := a.Frames(); c.Total() != 4096 || c.User() != 0 || c.Fill != fill {
		t.Fatalf("first socket's frames: %+v, want %d in the fill ring as before", c, fill)
	}
}

// frozenXSKMap is an XSKMAP that refuses updates from user space (frozen),
// so that registering a socket in it fails after the socket is bound.
func frozenXSKMap(t *testing.T) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	return m
}

// withoutNetAdmin runs fn on an OS thread whose effective capabilities
// lack CAP_NET_ADMIN (capabilities belong to the thread), and gives the
// thread its capabilities back before other goroutines may run on it. The
// thread may be the main one, whose capabilities /proc/self/status shows
// to testenv.RequirePrivileged. Should that fail, the thread stays locked
// to the goroutine and ends with it.
func withoutNetAdmin(t *testing.T, fn func() error) error {
	t.Helper()
	type result struct{ setup, err error }
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var orig [2]unix.CapUserData
		if err := unix.Capget(&hdr, &orig[0]); err != nil {
			res <- result{setup: fmt.Errorf("capget: %w", err)}
			return
		}
		dropped := orig
		dropped[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &dropped[0]); err != nil {
			res <- result{setup: fmt.Errorf("capset: %w", err)}
			return
		}
		err := fn()
		if rerr := unix.Capset(&hdr, &orig[0]); rerr != nil {
			res <- result{setup: fmt.Errorf("restore capabilities: capset: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		res <- result{err: err}
	}()
	r := <-res
	if r.setup != nil {
		t.Fatalf("drop CAP_NET_ADMIN: %v", r.setup)
	}
	return r.err
}

// TestSharedUMEMFailedOpenKeepsNoFrames makes Open with ShareUMEM fail
// wherever it can after the new socket's rings were made on the UMEM,
// before binding and after: every failure leaves the UMEM's frames where
// they were, and room for the fill ring the failed socket would have had.
func TestSharedUMEMFailedOpenKeepsNoFrames(t *testing.T) {
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	a := openOn(t, v1.Host, 0, &sharedOpts)
	// This process's program on v2, which redirects UDP only.
	openOn(t, v2.Host, 1, &xsk.Options{Filter: udpFilter})
	frozen := frozenXSKMap(t)
	before := a.Frames()
	if before.Fill != 1024 || before.Free != 3072 {
		t.Fatalf("first socket's frames after Open: %+v", before)
	}
	snap := testenv.Snapshot(t)

	share := func(o xsk.Options) *xsk.Options {
		o.ShareUMEM, o.FillRingSize, o.CompletionRingSize = a, 512, 512
		return &o
	}
	open := func(o *xsk.Options) error {
		s, err := xsk.Open(v2.Host.Name, 0, o)
		if err == nil {
			s.Close()
		}
		return err
	}
	tests := []struct {
		name string
		open func() error
		want string
		is   error
	}{
		{"filter", func() error { return open(share(xsk.Options{})) },
			"another socket on it must use the same Filter and XDPMode", nil},
		{"xdp mode", func() error { return open(share(xsk.Options{Filter: udpFilter, XDPMode: bpf.AttachGeneric})) },
			"another socket on it must use the same Filter and XDPMode", nil},
		// Refused after the socket is bound.
		{"xskmap", func() error { return open(share(xsk.Options{XSKMap: frozen})) },
			"register in xskmap", unix.EPERM},
		{"busy polling", func() error {
			return withoutNetAdmin(t, func() error { return open(share(xsk.Options{Filter: udpFilter, BusyPoll: 50 * time.Microsecond})) })
		}, "set busy polling: SO_PREFER_BUSY_POLL", unix.EPERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.open()
			if err == nil {
				t.Fatal("Open succeeded")
			}
			var oe *xsk.OpError
			if !errors.As(err, &oe) || oe.Op != "open" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want an OpError for open containing %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %q does not match %v", err, tt.is)
			}
			a.Refill()
			if after := a.Frames(); after != before {
				t.Fatalf("first socket's frames: %+v before the failed Open, %+v after", before, after)
			}
		})
	}
	if after := testenv.Snapshot(t); after != snap {
		t.Fatalf("leak: before %+v, after %+v", snap, after)
	}
	// The failed sockets left room for a fill ring as large as the first
	// socket's.
	bo := sharedOpts
	bo.NumFrames, bo.ShareUMEM = 0, a
	b := openOn(t, v2.Host, 0, &bo)
	if c := b.Frames(); c.Fill != 2048 || c.Free != 2048 || c.Lost != 0 {
		t.Fatalf("frames with both sockets open: %+v", c)
	}
}

// TestShareUMEMOfASharingSocket closes the socket that made the UMEM and
// shares the UMEM through the socket that shared it: the third socket
// receives, the first socket's receive frames count as lost and leave no
// room for fill rings, and the area goes with the last socket.
func TestShareUMEMOfASharingSocket(t *testing.T) {
	const n = 5_000
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	v3 := testenv.NewVeth(t, nil)
	p := newPacketSocket(t, v3.Peer)
	before := testenv.Snapshot(t)
	a, b := openSharedPair(t, v1.Host, v2.Host, 8192) // 4096 receive frames, for fill rings of 1024
	area := addrOf(a.UMEM().Area())
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	co := sharedOpts
	co.NumFrames, co.ShareUMEM = 0, b
	c, err := xsk.Open(v3.Host.Name, 0, &co)
	if err != nil {
		b.Close()
		t.Fatalf("Open with ShareUMEM of a socket sharing the UMEM of a closed one: %v", err)
	}
	if c.UMEM() != b.UMEM() {
		t.Fatal("the third socket has a UMEM of its own")
	}
	if f := c.Frames(); f.Lost != 1024 || f.Fill != 2048 || f.Free != 5120 || f.Total() != 8192 {
		t.Fatalf("frames: %+v, want the first socket's 1024 lost and 1024 in each open socket's fill ring", f)
	}
	// 1024 receive frames are left: no room for a fill ring of 2048.
	do := sharedOpts
	do.NumFrames, do.ShareUMEM, do.FillRingSize = 0, c, 2048
	if d, err := xsk.Open(v1.Host.Name, 0, &do); err == nil {
		d.Close()
		t.Fatal("Open with a fill ring beyond the receive frames left succeeded")
	} else if !strings.Contains(err.Error(), "its 4096 receive frames already fill rings of 2048 in all, and 1024 went with closed sockets") {
		t.Fatalf("Open with a fill ring beyond the receive frames left: %v", err)
	}

	fl := newFlow(v3.Peer, v3.Host, 30)
	if got := sendAndReceive(t, c, p, fl, n, 256, 30*time.Second); got != n {
		t.Fatalf("the third socket received %d of %d frames", got, n)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !testenv.Mapped(t, area) {
		t.Fatal("the UMEM was unmapped while the third socket used it")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if testenv.Mapped(t, area) {
		t.Fatal("UMEM still mapped after the last socket closed")
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// openSharedPair opens a on h1 (with numFrames frames; 0: sharedOpts')
// and b on h2 sharing a's UMEM. There is no cleanup: the caller closes
// them in the order it wants to check.
func openSharedPair(t *testing.T, h1, h2 netenv.Endpoint, numFrames int) (a, b *xsk.Socket) {
	t.Helper()
	o := sharedOpts
	if numFrames > 0 {
		o.NumFrames = numFrames
	}
	a, err := xsk.Open(h1.Name, 0, &o)
	if err != nil {
		t.Fatal(err)
	}
	bo := sharedOpts
	bo.NumFrames, bo.ShareUMEM = 0, a
	b, err = xsk.Open(h2.Name, 0, &bo)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	return a, b
}

// TestShareUMEMWhileItCloses opens a socket sharing the UMEM of one that
// another goroutine closes at the same moment, which the concurrency rules
// allow (Close from any goroutine): Open either shares the UMEM or fails
// with net.ErrClosed, never binds through the closed socket's descriptor
// (a data race the race detector sees), and leaves nothing behind.
func TestShareUMEMWhileItCloses(t *testing.T) {
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	before := testenv.Snapshot(t)
	shared, refused := 0, 0
	for range 30 {
		var a *xsk.Socket
		if err := v1.Host.Do(func() (err error) {
			a, err = xsk.Open(v1.Host.Name, 0, &sharedOpts)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		bo := sharedOpts
		bo.NumFrames, bo.ShareUMEM = 0, a
		closed := make(chan error, 1)
		start := make(chan struct{})
		go func() {
			<-start
			closed <- a.Close()
		}()
		var b *xsk.Socket
		err := v2.Host.Do(func() (err error) {
			close(start)
			b, err = xsk.Open(v2.Host.Name, 0, &bo)
			return err
		})
		if cerr := <-closed; cerr != nil {
			t.Fatalf("Close: %v", cerr)
		}
		switch {
		case err == nil:
			shared++
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		case errors.Is(err, net.ErrClosed):
			refused++
		default:
			t.Fatalf("Open with ShareUMEM of a socket closing meanwhile: %v, want success or net.ErrClosed", err)
		}
	}
	t.Logf("%d shared, %d refused", shared, refused)
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// TestFrameAfterCloseOfASharedUMEM closes each of two sockets sharing a
// UMEM in turn: Frame of the closed one returns nil, as Close promises,
// although the area stays mapped for the other.
func TestFrameAfterCloseOfASharedUMEM(t *testing.T) {
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	a, b := openSharedPair(t, v1.Host, v2.Host, 0)
	t.Cleanup(func() { a.Close(); b.Close() })
	descs := make([]xsk.Desc, 1)
	if n, err := a.Alloc(descs); n != 1 || err != nil {
		t.Fatalf("alloc: %d %v", n, err)
	}
	d := descs[0]
	if a.Frame(d) == nil || b.Frame(d) == nil {
		t.Fatal("Frame of an open socket returned nil")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if f := a.Frame(d); f != nil {
		t.Errorf("Frame of the UMEM's first socket after its Close: %d bytes", len(f))
	}
	if b.Frame(d) == nil {
		t.Fatal("Frame of the socket still sharing the UMEM returned nil")
	}
	if err := b.Release(descs); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if f := b.Frame(d); f != nil {
		t.Errorf("Frame after Close: %d bytes", len(f))
	}
}

// TestShareUMEMDefaultFillRingFits shares a UMEM whose receive frames have
// room left for a fill ring smaller than the default: the sharing socket,
// with its FillRingSize left zero, gets a ring those frames can fill
// rather than an error; once none are left, the error says whose sizes
// to change.
func TestShareUMEMDefaultFillRingFits(t *testing.T) {
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	v3 := testenv.NewVeth(t, nil)
	// 2048 receive frames: 1024 in the first socket's fill ring leave
	// 1024 for the next, less than the default ring of 2048.
	a := openOn(t, v1.Host, 0, &xsk.Options{NumFrames: 4096, FillRingSize: 1024})
	b := openOn(t, v2.Host, 0, &xsk.Options{ShareUMEM: a})
	if c := b.Frames(); c.Fill != 2048 {
		t.Errorf("frames after the second socket: %+v, want 2048 in the fill rings (1024 each)", c)
	}
	_, err := xsk.Open(v3.Host.Name, 0, &xsk.Options{ShareUMEM: a})
	if want := "give the socket that made the UMEM more receive frames"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("third socket on a UMEM with no receive frames left: %v, want an error saying %q", err, want)
	}
}

// TestShareUMEMAcrossNamespaces shares a UMEM between sockets on two
// interfaces in two network namespaces that happen to have the same
// ifindex (indexes are per namespace): they are different queues, so the
// second Open shares the UMEM instead of refusing it as "the same queue",
// and a frame sent to either socket reaches it.
func TestShareUMEMAcrossNamespaces(t *testing.T) {
	ns1, ns2 := testenv.NewNetns(t), testenv.NewNetns(t)
	v1 := testenv.NewVeth(t, &netenv.VethOptions{HostNS: ns1})
	v2 := testenv.NewVeth(t, &netenv.VethOptions{HostNS: ns2})
	if v1.Host.Index != v2.Host.Index {
		t.Fatalf("the two interfaces have ifindex %d and %d; the test needs them equal", v1.Host.Index, v2.Host.Index)
	}
	p1, p2 := newPacketSocket(t, v1.Peer), newPacketSocket(t, v2.Peer)
	before := testenv.Snapshot(t)
	var a, b *xsk.Socket
	if err := v1.Host.Do(func() (err error) {
		a, err = xsk.Open(v1.Host.Name, 0, &sharedOpts)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	bo := sharedOpts
	bo.ShareUMEM = a
	if err := v2.Host.Do(func() (err error) {
		b, err = xsk.Open(v2.Host.Name, 0, &bo)
		return err
	}); err != nil {
		t.Fatalf("Open sharing the UMEM of a socket in another namespace: %v", err)
	}
	for _, c := range []struct {
		s *xsk.Socket
		v *netenv.Veth
		p *packetSocket
	}{{a, v1, p1}, {b, v2, p2}} {
		p := c.p
		fl := newFlow(c.v.Peer, c.v.Host, 30)
		if got := sendAndReceive(t, c.s, p, fl, 100, 32, 10*time.Second); got != 100 {
			t.Fatalf("the socket on %s received %d of 100 frames", c.v.Host.Name, got)
		}
	}
	if err := errors.Join(b.Close(), a.Close()); err != nil {
		t.Fatal(err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// TestAllocKicksASharingSocket: sockets sharing a UMEM share its transmit
// frames. b queues a batch that takes every one of them, with a
// completion ring so small that its kick gives up with frames left in its
// TX ring, and then the sender allocates on a, as a forwarder whose
// frames go out through b may. Alloc on a reaps b's completion ring and
// sends what b's TX ring holds, so it gets every frame back; the peer of
// b receives the whole batch, and b counts every frame completed.
func TestAllocKicksASharingSocket(t *testing.T) {
	const batch = 64
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	a := openOn(t, v1.Host, 0, &xsk.Options{Filter: udpFilter, Bind: xsk.BindCopy, NumFrames: 128, TxFrames: batch,
		FillRingSize: 32, RxRingSize: 32})
	b := openOn(t, v2.Host, 0, &xsk.Options{Filter: udpFilter, ShareUMEM: a,
		FillRingSize: 32, RxRingSize: 32, TxRingSize: batch, CompletionRingSize: batch / 8})
	peer := newPacketSocket(t, v2.Peer)
	fl := newFlow(v2.Host, v2.Peer, 30)
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, batch, &got, time.Now().Add(10*time.Second)) }()
	if err := transmitFlow(t, b, fl, 0, batch); err != nil {
		t.Fatal(err)
	}
	if c := b.Frames(); c.Tx == 0 {
		t.Fatalf("frames after b's Transmit: %+v; want some left with b's rings", c)
	}

	held := make([]xsk.Desc, batch)
	back := 0
	for deadline := time.Now().Add(10 * time.Second); back < batch && time.Now().Before(deadline); {
		n, err := a.Alloc(held[back:])
		if err != nil {
			t.Fatal(err)
		}
		back += n
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if err := a.Release(held[:back]); err != nil {
		t.Fatal(err)
	}
	sn := <-done
	if back != batch {
		t.Fatalf("Alloc on a got back %d of the %d frames b queued; frames %+v", back, batch, a.Frames())
	}
	st, err := b.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if sn.n != batch || st.Completed != batch || st.TxDropped != 0 {
		t.Fatalf("b's peer received %d of %d frames; b's stats %+v", sn.n, batch, st)
	}
	checkFramesHome(t, a)
}

// TestShareUMEMOfATxOnlySocket shares the UMEM of a TxOnly socket in copy
// mode, whose fill ring the kernel never reads. With every frame for
// transmit (the default), a receiving socket is refused with an error
// that says what to change, and leaves nothing behind, while another
// TxOnly socket shares it and sends. With TxFrames below NumFrames, the
// TxOnly socket's fill ring holds no frame, and a receiving socket that
// shares its UMEM gets all the receive frames: what it receives goes out
// through the TxOnly socket, byte for byte, and every frame comes home.
func TestShareUMEMOfATxOnlySocket(t *testing.T) {
	const n = 2000
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	v3 := testenv.NewVeth(t, nil)
	v4 := testenv.NewVeth(t, nil)
	peer := newPacketSocket(t, v2.Peer)
	out := newPacketSocket(t, v3.Peer)
	p := newPacketSocket(t, v4.Peer)
	before := testenv.Snapshot(t)
	a := openOn(t, v1.Host, 0, &xsk.Options{TxOnly: true})
	var err error
	if err = v2.Host.Do(func() error {
		b, err := xsk.Open(v2.Host.Name, 0, &xsk.Options{Filter: udpFilter, ShareUMEM: a})
		if err == nil {
			b.Close()
		}
		return err
	}); err == nil || !strings.Contains(err.Error(), "no receive frames") || !strings.Contains(err.Error(), "TxFrames below NumFrames") {
		t.Fatalf("receiving socket sharing the UMEM of a TxOnly socket with no receive frames: %v, want an error naming TxFrames", err)
	}
	if c := a.Frames(); c.Free != umem.DefaultNumFrames {
		t.Fatalf("frames after the refused Open: %+v", c)
	}
	at := openOn(t, v2.Host, 0, &xsk.Options{TxOnly: true, ShareUMEM: a})
	fl := newFlow(v2.Host, v2.Peer, 30)
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, 100, &got, time.Now().Add(10*time.Second)) }()
	xskSender(t, at, fl, 100, 64, &got)
	if sn := <-done; sn.n != 100 {
		t.Fatalf("the TxOnly socket sharing the UMEM sent %d of 100 frames to its peer", sn.n)
	}
	checkFramesHome(t, a)

	// Half the frames receive: the receiving socket's fill ring gets
	// them all.
	tx := openOn(t, v3.Host, 0, &xsk.Options{TxOnly: true, TxFrames: 2048})
	if c := tx.Frames(); c.Fill != 0 || c.Free != 4096 {
		t.Fatalf("TxOnly socket with 2048 receive frames: %+v, want none in its fill ring", c)
	}
	rx := openOn(t, v4.Host, 0, &xsk.Options{Filter: udpFilter, ShareUMEM: tx})
	if c := rx.Frames(); c.Fill != 2048 {
		t.Fatalf("receiving socket sharing the TxOnly socket's UMEM: %+v, want its fill ring to hold the 2048 receive frames", c)
	}
	in := newFlow(v4.Peer, v4.Host, 40)
	got.Store(0)
	go func() { done <- out.receiveAll(t, in, n, &got, time.Now().Add(30*time.Second)) }()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		sendWindowed(t, in, n, 256, &got, func(f []byte) { p.send(t, f) })
	}()
	// The forwarder: what rx receives goes out through tx, unchanged.
	descs := make([]xsk.Desc, 64)
	fwd := 0
	for deadline := time.Now().Add(30 * time.Second); fwd < n && time.Now().Before(deadline); {
		k, err := rx.Receive(descs)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			if _, err := rx.Wait(xsk.Readable, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			continue
		}
		for q := descs[:k]; len(q) > 0; {
			m, err := tx.Transmit(q)
			if err != nil {
				t.Fatal(err)
			}
			q = q[m:]
		}
		fwd += k
	}
	<-sent
	sn := <-done
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := tx.Complete(); err != nil {
			t.Fatal(err)
		}
		if tx.Frames().Tx == 0 {
			break
		}
	}
	if sn.n != n || fwd != n {
		t.Fatalf("forwarded %d and the far peer received %d of %d frames", fwd, sn.n, n)
	}
	st, err := tx.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Completed != n || st.TxDropped != 0 {
		t.Fatalf("the TxOnly socket's stats %+v, want %d completed and none dropped", st, n)
	}
	if c := tx.Frames(); c.Total() != 4096 || c.User() != 0 || c.Tx != 0 || c.Fill+c.Free+c.Recycling != 4096 {
		t.Fatalf("frames at the end: %+v", c)
	}
	for _, s := range []*xsk.Socket{at, a, rx, tx} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}
