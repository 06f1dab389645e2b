package xsk_test

import (
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// xskSender transmits the frames of fl through an AF_XDP socket (which,
// in copy mode, puts them on the socket's own queue), keeping at most
// window frames ahead of got, and returns once the TX ring is empty and
// every frame has come back on the completion ring.
//
// A copy-mode kick can leave frames in the TX ring: when the receiving
// end's NAPI poll lags (run later by ksoftirqd on a busy machine), veth
// holds the socket's send buffer full and the kernel answers EAGAIN. Only
// a later kick sends them, so while it waits for the receiver and once all
// is queued, xskSender calls Complete, which kicks.
func xskSender(t testing.TB, s *xsk.Socket, fl *flow, want, window int, got *atomic.Int64) {
	descs := make([]xsk.Desc, 32)
	deadline := time.Now().Add(60 * time.Second)
	push := func() bool {
		if _, err := s.Complete(); err != nil {
			t.Error(err)
			return false
		}
		time.Sleep(20 * time.Microsecond)
		return true
	}
	for seq := 0; seq < want; {
		if time.Now().After(deadline) {
			t.Errorf("sender stalled at %d of %d (receiver has %d)", seq, want, got.Load())
			return
		}
		if seq-int(got.Load()) >= window {
			if !push() {
				return
			}
			continue
		}
		n, err := s.Alloc(descs[:min(len(descs), want-seq)])
		if err != nil {
			t.Error(err)
			return
		}
		for i := range descs[:n] {
			l, err := fl.write(s.Frame(descs[i])[:descs[i].Len], uint64(seq+i))
			if err != nil {
				t.Error(err)
				return
			}
			descs[i].Len = uint32(l)
		}
		sent, err := s.Transmit(descs[:n])
		if err != nil {
			t.Error(err)
			return
		}
		if err := s.Release(descs[sent:n]); err != nil {
			t.Error(err)
			return
		}
		seq += sent
	}
	// Until every frame queued has come back (Stats, unlike Frames, may
	// be read while another goroutine receives on the socket).
	for {
		st, err := s.Stats()
		if err != nil {
			t.Error(err)
			return
		}
		if st.Completed >= st.TxPackets {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("sender: %d frames still in the transmit path (receiver has %d of %d)", st.TxPackets-st.Completed, got.Load(), want)
			return
		}
		if !push() {
			return
		}
	}
}

// TestXSKSenderPushesWhatAKickLeft holds back the receiving end's NAPI
// poll, as a busy machine can, while xskSender queues twice what the
// socket's send buffer lets veth hold: the kicks stop with frames in the
// TX ring, and every frame must still arrive, sent by a later kick.
func TestXSKSenderPushesWhatAKickLeft(t *testing.T) {
	const n = 512
	v := testenv.NewVeth(t, nil)
	if err := app.SetVethThreadedNAPI(v.Host, true); err != nil {
		t.Fatal(err)
	}
	s := openOn(t, v.Host, 0, &xsk.Options{Filter: udpFilter})
	peer := openOn(t, v.Peer, 0, &xsk.Options{NoXDP: true, NumFrames: 1024, FillRingSize: 512, TxFrames: n})
	fl := newFlow(v.Peer, v.Host, 26)
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- receiveAll(t, s, fl, n, &got, time.Now().Add(20*time.Second)) }()
	holdNAPI(t, v.Host, time.Second)
	xskSender(t, peer, fl, n, n, &got)
	if sn := <-done; sn.n != n {
		t.Fatalf("received %d of %d frames", sn.n, n)
	}
	st, err := peer.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TxPackets != n || st.Completed != n || st.TxDropped != 0 {
		t.Errorf("sender's stats do not match %d frames sent: %+v", n, st)
	}
}

// TestSecondQueue binds sockets on both queues of a two-queue veth and
// sends from the peer's queue 1: every frame arrives at the queue-1
// socket, none at the queue-0 one, and both share one XDP program.
func TestSecondQueue(t *testing.T) {
	const n = 50_000
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	s0 := openOn(t, v.Host, 0, &xsk.Options{Filter: udpFilter})
	s1 := openOn(t, v.Host, 1, &xsk.Options{Filter: udpFilter})
	if s0.Program() == nil || s0.Program() != s1.Program() {
		t.Fatalf("sockets on one interface do not share the program: %p %p", s0.Program(), s1.Program())
	}
	// The peer sends through its own queue 1; veth delivers a frame to
	// the receive queue matching the queue it was sent on.
	peer := openOn(t, v.Peer, 1, &xsk.Options{NoXDP: true, NumFrames: 1024, FillRingSize: 512, TxFrames: 512})
	fl := newFlow(v.Peer, v.Host, 26)

	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- receiveAll(t, s1, fl, n, &got, time.Now().Add(60*time.Second)) }()
	xskSender(t, peer, fl, n, 512, &got)
	sn := <-done
	if sn.n != n {
		t.Fatalf("queue 1 received %d of %d frames", sn.n, n)
	}
	descs := make([]xsk.Desc, 64)
	if k, err := s0.Receive(descs); k != 0 || err != nil {
		t.Fatalf("queue 0 received %d frames (%v), want none", k, err)
	}
	st, _ := s0.Stats()
	if st.RxPackets != 0 || st.RxDropped != 0 {
		t.Fatalf("queue 0 stats %+v", st)
	}
}

// TestMacvlan runs a socket on a macvlan on top of a veth: generic XDP,
// frames in from the peer and out to it.
func TestMacvlan(t *testing.T) {
	const n = 50_000
	v := testenv.NewVeth(t, nil)
	mv := testenv.NewMacvlan(t, v.Host, &netenv.MacvlanOptions{})
	s := openOn(t, mv.Endpoint, 0, &xsk.Options{Filter: udpFilter})
	if s.XDPMode() != bpf.AttachGeneric {
		t.Fatalf("XDP mode on macvlan: %v, want generic", s.XDPMode())
	}
	peer := newPacketSocket(t, v.Peer)

	in := newFlow(v.Peer, mv.Endpoint, 18)
	if got := sendAndReceive(t, s, peer, in, n, 256, 60*time.Second); got != n {
		t.Fatalf("macvlan socket received %d of %d frames", got, n)
	}

	out := newFlow(mv.Endpoint, v.Peer, 50)
	out.hdr.SrcPort = 40002
	var gotOut atomic.Int64
	var outSeen *seen
	done := make(chan struct{})
	go func() {
		outSeen = peer.receiveAll(t, out, n, &gotOut, time.Now().Add(60*time.Second))
		close(done)
	}()
	xskSender(t, s, out, n, 256, &gotOut)
	<-done
	if outSeen.n != n {
		t.Fatalf("peer received %d of %d frames from the macvlan socket", outSeen.n, n)
	}
	checkFramesHome(t, s)
}

// passProgram loads an XDP program that passes everything: someone
// else's program.
func passProgram(t testing.TB) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestForeignProgramStays(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	foreign := passProgram(t)
	l, err := netlink.LinkByIndex(v.Host.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, foreign.FD(), unix.XDP_FLAGS_DRV_MODE); err != nil {
		t.Fatal(err)
	}
	info, _ := foreign.Info()
	id, _ := info.ID()

	before := testenv.Snapshot(t)
	_, err = xsk.Open(v.Host.Name, 0, nil)
	if !errors.Is(err, xsk.ErrBusy) {
		t.Fatalf("open over a foreign program: %v, want ErrBusy", err)
	}
	var be *bpf.BusyError
	if !errors.As(err, &be) || be.ProgramID != uint32(id) {
		t.Fatalf("busy error does not name program %d: %v", id, err)
	}
	t.Log(err)
	q, err := bpf.QueryXDP(v.Host.Index)
	if err != nil || q.Driver.ID != uint32(id) {
		t.Fatalf("foreign program %d no longer attached: %+v %v", id, q, err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("failed Open leaked: before %+v, after %+v", before, after)
	}

	// Asked to, Open replaces it.
	s, err := xsk.Open(v.Host.Name, 0, &xsk.Options{ReplaceXDP: true})
	if err != nil {
		t.Fatal(err)
	}
	q, _ = bpf.QueryXDP(v.Host.Index)
	if q.Driver.ID != s.Program().ID() {
		t.Fatalf("after replace the interface runs program %d, want ours %d", q.Driver.ID, s.Program().ID())
	}
	s.Close()
}

// TestCloseLeavesNothing checks that Close undoes everything: no XDP
// program, no file descriptor, no mapping, and every call fails after.
func TestCloseLeavesNothing(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	before := testenv.Snapshot(t)
	s, err := xsk.Open(v.Host.Name, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	area := s.UMEM().Area()
	umemAddr := uintptr(0)
	if len(area) > 0 {
		umemAddr = addrOf(area)
	}
	// Move some frames so that Close finds them in every place.
	descs := make([]xsk.Desc, 16)
	n, _ := s.Alloc(descs)
	for i := range descs[:n] {
		descs[i].Len = 60
	}
	s.Transmit(descs[:8])
	if q, _ := bpf.QueryXDP(v.Host.Index); !q.Attached() {
		t.Fatal("no XDP program attached while open")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if q, _ := bpf.QueryXDP(v.Host.Index); q.Attached() {
		t.Fatalf("XDP program left on the interface: %+v", q)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
	if testenv.Mapped(t, umemAddr) {
		t.Fatal("UMEM still mapped after Close")
	}

	calls := map[string]func() error{
		"Receive":  func() error { _, err := s.Receive(descs); return err },
		"Transmit": func() error { _, err := s.Transmit(descs[8:n]); return err },
		"Alloc":    func() error { _, err := s.Alloc(descs); return err },
		"Release":  func() error { return s.Release(descs[8:n]) },
		"Refill":   func() error { _, err := s.Refill(); return err },
		"Complete": func() error { _, err := s.Complete(); return err },
		"Kick":     s.Kick,
		"Wait":     func() error { _, err := s.Wait(xsk.Readable, time.Second); return err },
		"Stats":    func() error { _, err := s.Stats(); return err },
		"NAPIID":   func() error { _, err := s.NAPIID(); return err },
	}
	for name, call := range calls {
		err := call()
		var oe *xsk.OpError
		if !errors.Is(err, net.ErrClosed) || !errors.As(err, &oe) || oe.Interface != v.Host.Name {
			t.Errorf("%s after Close: %v, want an OpError wrapping net.ErrClosed", name, err)
		}
	}
}

func TestCloseInterruptsWait(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s, err := xsk.Open(v.Host.Name, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := s.Wait(xsk.Readable, -1)
		res <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Wait returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt Wait")
	}
}

func TestWaitTimesOut(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, nil)
	start := time.Now()
	ev, err := s.Wait(xsk.Readable, 30*time.Millisecond)
	if err != nil || ev != 0 {
		t.Fatalf("Wait on an idle socket: %v %v", ev, err)
	}
	if time.Since(start) < 25*time.Millisecond {
		t.Fatalf("Wait returned after %v, before its timeout", time.Since(start))
	}
	if ev, err := s.Wait(xsk.Writable, time.Second); err != nil || ev&xsk.Writable == 0 {
		t.Fatalf("an empty TX ring is not writable: %v %v", ev, err)
	}
}

func TestBadInput(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	tests := []struct {
		name   string
		ifname string
		queue  int
		opts   xsk.Options
		want   []string
		is     error
	}{
		{"unknown interface", "afxnosuchif0", 0, xsk.Options{}, []string{"open afxnosuchif0 queue 0", "unknown interface"}, unix.ENODEV},
		{"empty name", "", 0, xsk.Options{}, []string{"interface name is empty"}, nil},
		{"negative queue", v.Host.Name, -1, xsk.Options{}, []string{"queue -1: must not be negative"}, nil},
		{"queue beyond", v.Host.Name, 3, xsk.Options{}, []string{"queue 3: the interface has at most 1 receive queues"}, unix.EINVAL},
		{"ring size", v.Host.Name, 0, xsk.Options{RxRingSize: 1000}, []string{"RxRingSize 1000: must be a power of two"}, nil},
		{"fill ring size", v.Host.Name, 0, xsk.Options{FillRingSize: 100}, []string{"FillRingSize 100: must be a power of two"}, nil},
		{"frame size", v.Host.Name, 0, xsk.Options{FrameSize: 3000}, []string{"FrameSize 3000: must be 2048 or 4096"}, nil},
		{"umem too small", v.Host.Name, 0, xsk.Options{NumFrames: 256, FillRingSize: 2048}, []string{"UMEM too small for the rings"}, nil},
		{"zero-copy on veth", v.Host.Name, 0, xsk.Options{Bind: xsk.BindZeroCopy}, []string{"zero-copy", "does not support"}, xsk.ErrNotSupported},
		{"tx budget", v.Host.Name, 0, xsk.Options{TxBudget: 16}, []string{"TxBudget 16"}, nil},
		{"busy poll budget alone", v.Host.Name, 0, xsk.Options{BusyPollBudget: 8}, []string{"BusyPollBudget 8: needs BusyPoll"}, nil},
		{"bind mode", v.Host.Name, 0, xsk.Options{Bind: 7}, []string{"Bind 7: unknown bind mode"}, nil},
		{"xdp mode", v.Host.Name, 0, xsk.Options{XDPMode: 9}, []string{"XDPMode 9"}, nil},
		{"filter", v.Host.Name, 0, xsk.Options{Filter: bpf.Filter{DstPort: 53}}, []string{"Filter.DstPort 53: needs IPProto"}, nil},
		{"share a socket Open did not make", v.Host.Name, 0, xsk.Options{ShareUMEM: &xsk.Socket{}, NoNeedWakeup: true, FillRingSize: 1024, CompletionRingSize: 1024}, []string{"ShareUMEM: not a socket that Open returned"}, unix.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testenv.Snapshot(t)
			s, err := xsk.Open(tt.ifname, tt.queue, &tt.opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not match %v", err, tt.is)
			}
			var oe *xsk.OpError
			if !errors.As(err, &oe) || oe.Op != "open" || oe.Queue != tt.queue {
				t.Errorf("error %q is not an OpError for open on queue %d", err, tt.queue)
			}
			failedOpenLeftNothing(t, v.Host.Index, before)
		})
	}
}

// TestBadDescriptors hands Transmit and Release descriptors that name no
// frame the caller holds.
func TestBadDescriptors(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, nil)
	descs := make([]xsk.Desc, 2)
	if n, _ := s.Alloc(descs); n != 2 {
		t.Fatal("alloc")
	}
	descs[0].Len = 60
	descs[1].Len = 60
	bad := []xsk.Desc{descs[0], {Addr: 1 << 40, Len: 60}, descs[1]}
	n, err := s.Transmit(bad)
	if n != 1 || !errors.Is(err, xsk.ErrInvalidDesc) {
		t.Fatalf("transmit with a descriptor outside the UMEM: %d, %v", n, err)
	}
	if err := s.Release(descs[:1]); !errors.Is(err, xsk.ErrInvalidDesc) {
		t.Fatalf("release of a frame already transmitted: %v", err)
	}
	if err := s.Release(descs[1:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(descs[1:]); !errors.Is(err, xsk.ErrInvalidDesc) {
		t.Fatalf("second release: %v", err)
	}
	for s.Frames().Tx > 0 {
		s.Complete()
	}
	checkFramesHome(t, s)
}

// TestTransmitRefusesOptions hands Transmit descriptors with Options bits.
// The socket is bound without multi-buffer (XDP_USE_SG) and has no tx
// metadata, and the kernel would mishandle each: unknown bits it drops as
// invalid, XDP_PKT_CONTD joins the next packet to this one, and
// XDP_TX_METADATA (Linux 6.18, copy mode) fails every kick with EINVAL,
// stays at the head of the TX ring and completes the frame on each retry.
func TestTransmitRefusesOptions(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, nil)
	for _, opt := range []uint32{unix.XDP_PKT_CONTD, unix.XDP_TX_METADATA, 1 << 2, 1 << 31} {
		descs := make([]xsk.Desc, 3)
		if n, _ := s.Alloc(descs); n != 3 {
			t.Fatal("alloc")
		}
		for i := range descs {
			descs[i].Len = 60
		}
		descs[1].Options = opt
		n, err := s.Transmit(descs)
		if n != 1 || !errors.Is(err, xsk.ErrInvalidDesc) || !strings.Contains(err.Error(), "options") {
			t.Errorf("options %#x: transmit = %d, %v; want 1 and an error about the options", opt, n, err)
		}
		if err := s.Release(descs[n:]); err != nil {
			t.Errorf("options %#x: release of the frames not queued: %v", opt, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for s.Frames().Tx > 0 && time.Now().Before(deadline) {
			s.Kick()
			s.Complete()
		}
		checkFramesHome(t, s)
		if c := s.Frames(); c.Tx != 0 {
			t.Fatalf("options %#x: %d frames never completed", opt, c.Tx)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TxInvalidDescs != 0 || st.Completed != 4 {
		t.Errorf("stats %+v: want no invalid descriptors and 4 completions", st)
	}
}

// TestExternalMap plays the agent: it owns the program and the XSKMAP, and
// the socket only registers itself there.
func TestExternalMap(t *testing.T) {
	const n = 5_000
	v := testenv.NewVeth(t, nil)
	prog, err := bpf.NewProgram(&bpf.ProgramOptions{Filter: udpFilter})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	att, err := prog.Attach(v.Host.Index, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()

	for _, external := range []string{"XSKMap", "NoXDP"} {
		o := &xsk.Options{XSKMap: prog.XSKMap()}
		if external == "NoXDP" {
			o = &xsk.Options{NoXDP: true}
		}
		s, err := xsk.Open(v.Host.Name, 0, o)
		if err != nil {
			t.Fatal(err)
		}
		if s.Program() != nil {
			t.Fatalf("%s: the socket loaded a program", external)
		}
		if external == "NoXDP" {
			if err := prog.Register(0, s.FD()); err != nil {
				t.Fatal(err)
			}
		}
		peer := newPacketSocket(t, v.Peer)
		fl := newFlow(v.Peer, v.Host, 18)
		if got := sendAndReceive(t, s, peer, fl, n, 256, 30*time.Second); got != n {
			t.Fatalf("%s: received %d of %d", external, got, n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// The entry went with the socket: the flow falls through to
		// the kernel's stack instead of into a dead socket.
		expectKernelDelivery(t, v, peer, fl)
		// The agent's program stays.
		if q, _ := bpf.QueryXDP(v.Host.Index); q.Driver.ID != prog.ID() {
			t.Fatalf("%s: closing the socket detached the agent's program: %+v", external, q)
		}
	}
}

// TestHotPathAllocatesNothing moves frames from one socket to another
// across the veth and counts allocations in the steady state.
func TestHotPathAllocatesNothing(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	tx := openOn(t, v.Host, 0, &xsk.Options{Filter: udpFilter})
	rx := openOn(t, v.Peer, 0, &xsk.Options{Filter: udpFilter})
	fl := newFlow(v.Host, v.Peer, 18)
	out := make([]xsk.Desc, 32)
	in := make([]xsk.Desc, 64)
	var seq uint64
	received := 0
	round := func() {
		n, _ := tx.Alloc(out)
		for i := range out[:n] {
			l, _ := fl.write(tx.Frame(out[i])[:out[i].Len], seq)
			out[i].Len = uint32(l)
			seq++
		}
		k, _ := tx.Transmit(out[:n])
		tx.Release(out[k:n])
		m, _ := rx.Receive(in)
		received += m
		rx.Release(in[:m])
		rx.Refill()
		tx.Complete()
	}
	for range 100 {
		round()
	}
	if allocs := testing.AllocsPerRun(500, round); allocs != 0 {
		t.Fatalf("%v allocations per round of receive, release, refill, alloc, transmit, complete", allocs)
	}
	// Loops read the counters as they go (the benchmarks do, every
	// iteration): Stats must not allocate either.
	if allocs := testing.AllocsPerRun(500, func() { rx.Stats() }); allocs != 0 {
		t.Fatalf("%v allocations per Stats", allocs)
	}
	if received == 0 {
		t.Fatal("nothing crossed the veth")
	}
}

// expectKernelDelivery sends a frame of fl from the peer and checks that a
// kernel UDP socket on the host receives it: proof that no XSKMAP entry
// diverts the flow any more.
func expectKernelDelivery(t *testing.T, v *netenv.Veth, peer *packetSocket, fl *flow) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: v.Host.IP().AsSlice(), Port: testPort})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	n, err := fl.write(buf, 7)
	if err != nil {
		t.Fatal(err)
	}
	for try := 0; try < 20; try++ {
		peer.send(t, buf[:n])
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if m, _, err := c.ReadFromUDP(buf); err == nil && m == fl.payloadLenFor(7) {
			return
		}
	}
	t.Fatal("the flow did not reach the kernel's UDP socket after Close")
}

// TestManualRings leaves the fill and completion rings to the caller: with
// no Refill the kernel runs out of frames to receive into, and with no
// Complete the transmitted frames stay with the kernel. Each frame is sent
// once the last is accounted for, received or counted dropped by the
// kernel, however long a busy machine takes to deliver it.
func TestManualRings(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{
		Filter: udpFilter, ManualRings: true,
		NumFrames: 256, FillRingSize: 128, TxFrames: 128,
	})
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Peer, v.Host, 18)
	buf := make([]byte, 256)
	descs := make([]xsk.Desc, 64)
	rxDropped := func() uint64 {
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st.RxDropped
	}

	// receive sends k frames one at a time, each once the kernel has
	// handed the last to the socket or counted it dropped (no fill
	// frame), and returns how many arrived and how many were dropped.
	seq := uint64(0)
	receive := func(k int) (got, dropped int) {
		for range k {
			n, _ := fl.write(buf, seq)
			seq++
			before := rxDropped()
			peer.send(t, buf[:n])
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
				m, err := s.Receive(descs[:1])
				if err != nil {
					t.Fatal(err)
				}
				if m == 1 {
					got++
					if err := s.Release(descs[:1]); err != nil {
						t.Fatal(err)
					}
					break
				}
				if d := rxDropped() - before; d > 0 {
					dropped += int(d)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("frame %d neither arrived nor was counted dropped", seq-1)
				}
			}
		}
		return got, dropped
	}
	// Open primed the fill ring with all 128 receive frames; released
	// frames do not go back without Refill.
	if got, dropped := receive(130); got != 128 || dropped != 2 {
		t.Fatalf("without refilling, received %d frames and the kernel dropped %d; want the 128 primed, and 2 dropped", got, dropped)
	}
	if st, _ := s.Stats(); st.FillRingEmpty == 0 {
		t.Fatalf("kernel did not report running out of fill frames: %+v", st)
	}
	if n, err := s.Refill(); n != 128 || err != nil {
		t.Fatalf("Refill: %d %v", n, err)
	}
	if got, dropped := receive(10); got != 10 || dropped != 0 {
		t.Fatalf("after Refill received %d of 10, %d dropped", got, dropped)
	}

	n, _ := s.Alloc(descs[:8])
	for i := range descs[:n] {
		descs[i].Len = 60
	}
	if sent, err := s.Transmit(descs[:n]); sent != 8 || err != nil {
		t.Fatalf("transmit: %d %v", sent, err)
	}
	if c := s.Frames(); c.Tx != 8 {
		t.Fatalf("without Complete the kernel should still hold 8 frames: %+v", c)
	}
	// A kick cut short leaves frames for the next Complete to send.
	done := 0
	for deadline := time.Now().Add(10 * time.Second); done < 8 && time.Now().Before(deadline); {
		c, err := s.Complete()
		if err != nil {
			t.Fatal(err)
		}
		done += c
	}
	if done != 8 {
		t.Fatalf("Complete took back %d of 8 frames", done)
	}
	checkFramesHome(t, s)
}

// TestManualRingsAllocReapsNothing: with ManualRings, Alloc takes only
// frames already free and leaves completions on the completion ring for
// Complete, even when it finds no free frame.
func TestManualRingsAllocReapsNothing(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{
		Filter: udpFilter, ManualRings: true,
		NumFrames: 256, FillRingSize: 128, TxFrames: 128,
	})
	descs := make([]xsk.Desc, 128)
	n, err := s.Alloc(descs)
	if n != 128 || err != nil {
		t.Fatalf("Alloc: %d %v, want all 128 transmit frames", n, err)
	}
	for i := range descs {
		descs[i].Len = 60
	}
	if k, err := s.Transmit(descs); k != 128 || err != nil {
		t.Fatalf("Transmit: %d %v", k, err)
	}
	// In copy mode the kick sends; give the kernel time to complete.
	time.Sleep(100 * time.Millisecond)
	if n, err := s.Alloc(descs[:1]); n != 0 || err != nil {
		t.Fatalf("Alloc with every transmit frame in flight: %d %v, want 0", n, err)
	}
	if st, _ := s.Stats(); st.Completed != 0 {
		t.Fatalf("Alloc reaped %d completions with ManualRings", st.Completed)
	}
	if c := s.Frames(); c.Tx != 128 {
		t.Fatalf("frames: %+v, want all 128 in the transmit path", c)
	}
	completed := 0
	for deadline := time.Now().Add(5 * time.Second); completed < 128 && time.Now().Before(deadline); {
		c, err := s.Complete()
		if err != nil {
			t.Fatal(err)
		}
		completed += c
		time.Sleep(time.Millisecond)
	}
	if completed != 128 {
		t.Fatalf("Complete reaped %d of 128", completed)
	}
	if n, err := s.Alloc(descs[:1]); n != 1 || err != nil {
		t.Fatalf("Alloc after Complete: %d %v, want 1", n, err)
	}
	if err := s.Release(descs[:1]); err != nil {
		t.Fatal(err)
	}
	checkFramesHome(t, s)
}

// TestOpenReportsInterfaceTableFailure makes Open unable to read the
// interface table (no descriptor left for the netlink socket): the error
// carries EMFILE, and does not call the interface unknown.
func TestOpenReportsInterfaceTableFailure(t *testing.T) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// The lowest free descriptor becomes the limit: the next one opened
	// is refused with EMFILE.
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	low := old
	low.Cur = uint64(fd)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
				t.Errorf("restore RLIMIT_NOFILE: %v", err)
			}
		}
	}
	defer restore()
	s, err := xsk.Open("lo", 0, nil)
	restore()
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded with no descriptor to spare")
	}
	var oe *xsk.OpError
	if !errors.As(err, &oe) || oe.Op != "open" || oe.Interface != "lo" {
		t.Errorf("error %q is not an OpError for open on lo", err)
	}
	if !errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENODEV) || strings.Contains(err.Error(), "unknown interface") {
		t.Fatalf("error %q: want one that matches EMFILE and does not call lo unknown", err)
	}
	t.Log(err)
}

// failedOpenLeftNothing checks, after an Open that failed, that the process
// holds what it held before (fds, mappings) and that no XDP program is left
// on the interface ifindex.
func failedOpenLeftNothing(t *testing.T, ifindex int, before testenv.Resources) {
	t.Helper()
	if after := testenv.Snapshot(t); after != before {
		t.Errorf("failed Open leaked: before %+v, after %+v", before, after)
	}
	if q, _ := bpf.QueryXDP(ifindex); q.Attached() {
		t.Errorf("failed Open left an XDP program: %+v", q)
	}
}

// openToDelete opens a socket on the host end of a veth pair that the
// test may delete (v.Close) while the socket is open, and returns the
// leak snapshot taken before the socket.
func openToDelete(t *testing.T) (*netenv.Veth, *xsk.Socket, testenv.Resources) {
	t.Helper()
	ns := testenv.NewNetns(t)
	v, err := netenv.NewVeth(&netenv.VethOptions{PeerNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	before := testenv.Snapshot(t)
	s, err := xsk.Open(v.Host.Name, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v, s, before
}

// TestWaitReportsDeletedInterface deletes the interface of an open socket
// while a goroutine waits on it forever: Wait returns an error matching
// ENXIO instead of waiting for packets that cannot come, so do later
// Waits, Transmit says so too, and Close leaves nothing behind.
func TestWaitReportsDeletedInterface(t *testing.T) {
	v, s, before := openToDelete(t)
	waited := make(chan error, 1)
	go func() {
		_, err := s.Wait(xsk.Readable, -1)
		waited <- err
	}()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if !errors.Is(err, unix.ENXIO) {
			t.Fatalf("Wait when the interface was deleted: %v, want ENXIO", err)
		}
		t.Log(err)
	case <-time.After(20 * time.Second):
		s.Close()
		t.Fatal("Wait still waiting after the interface was deleted")
	}
	if _, err := s.Wait(xsk.Readable|xsk.Writable, 10*time.Millisecond); !errors.Is(err, unix.ENXIO) {
		t.Errorf("second Wait: %v, want ENXIO", err)
	}
	descs := make([]xsk.Desc, 4)
	n, _ := s.Alloc(descs)
	for i := range descs[:n] {
		descs[i].Len = 60
	}
	if _, err := s.Transmit(descs[:n]); !errors.Is(err, unix.ENXIO) {
		t.Errorf("Transmit: %v, want ENXIO", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// TestReceiveReportsDeletedInterface spins on Receive, as a busy receiver
// does, before and after the socket's interface is deleted: on the bound
// socket the calls that find nothing, the ones that ask the kernel among
// them, return no error; once the interface is gone, Receive fails with an
// error matching ENXIO within a bounded run of empty calls, and keeps
// failing.
func TestReceiveReportsDeletedInterface(t *testing.T) {
	v, s, before := openToDelete(t)
	defer s.Close()
	descs := make([]xsk.Desc, 16)
	const calls = 1 << 16 // many times the calls between two probes
	for i := 0; i < calls; i++ {
		if n, err := s.Receive(descs); err != nil || n != 0 {
			t.Fatalf("Receive %d on an idle bound socket: %d, %v; want 0, nil", i, n, err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	i := 0
	for ; i < calls; i++ {
		n, err := s.Receive(descs)
		if n != 0 {
			t.Fatalf("Receive after the interface was deleted: %d packets", n)
		}
		if err != nil {
			if !errors.Is(err, unix.ENXIO) {
				t.Fatalf("Receive after the interface was deleted: %v, want ENXIO", err)
			}
			t.Logf("after %d empty calls: %v", i+1, err)
			break
		}
	}
	if i == calls {
		t.Fatalf("Receive found nothing %d times after the interface was deleted, and said nothing", calls)
	}
	if _, err := s.Receive(descs); !errors.Is(err, unix.ENXIO) {
		t.Errorf("next Receive: %v, want ENXIO", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// TestQueueNotInUse opens a socket on a queue the interface has room for
// but does not use (ethtool -L took it away): the kernel's bare EINVAL
// comes with the likely cause and the command that shows it.
func TestQueueNotInUse(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	before := testenv.Snapshot(t)
	err := v.Host.Do(func() error {
		setChannels(t, v.Host.Name, 1, 1)
		_, err := xsk.Open(v.Host.Name, 1, &xsk.Options{Bind: xsk.BindCopy})
		return err
	})
	if want := "queue 1 may be beyond the queues " + v.Host.Name + " has in use: ethtool -l"; !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open on a queue not in use: %v, want EINVAL saying %q", err, want)
	}
	failedOpenLeftNothing(t, v.Host.Index, before)
}
