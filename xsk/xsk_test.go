package xsk_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/umem"
	"github.com/afxdp/afxdp/xsk"
)

const total = 100_000

var udpFilter = bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: testPort}

// openOn opens a socket on ep inside ep's namespace and closes it at
// cleanup.
func openOn(t testing.TB, ep netenv.Endpoint, queue int, o *xsk.Options) *xsk.Socket {
	t.Helper()
	var s *xsk.Socket
	err := ep.Do(func() error {
		var err error
		s, err = xsk.Open(ep.Name, queue, o)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// receiveAll receives frames of fl on s until want have arrived or the
// deadline passes, verifying each and releasing it. It reports progress in
// got.
func receiveAll(t testing.TB, s *xsk.Socket, fl *flow, want int, got *atomic.Int64, deadline time.Time) *seen {
	sn := newSeen(want)
	descs := make([]xsk.Desc, 64)
	for sn.n < want && time.Now().Before(deadline) {
		n, err := s.Receive(descs)
		if err != nil {
			t.Error(err)
			return sn
		}
		if n == 0 {
			if _, err := s.Wait(xsk.Readable, 10*time.Millisecond); err != nil {
				t.Error(err)
				return sn
			}
			continue
		}
		for _, d := range descs[:n] {
			seq, err := fl.check(s.Frame(d))
			if err == nil {
				err = sn.add(seq)
			}
			if err != nil {
				t.Error(err)
				return sn
			}
		}
		if err := s.Release(descs[:n]); err != nil {
			t.Error(err)
			return sn
		}
		got.Add(int64(n))
	}
	return sn
}

// sendWindowed sends frames 0..want-1 of fl through send, keeping at most
// window frames ahead of what the receiver has counted in got.
func sendWindowed(t testing.TB, fl *flow, want, window int, got *atomic.Int64, send func([]byte)) {
	buf := make([]byte, 2048)
	deadline := time.Now().Add(60 * time.Second)
	for seq := 0; seq < want; seq++ {
		for seq-int(got.Load()) >= window {
			if time.Now().After(deadline) {
				t.Errorf("receiver stalled at %d of %d frames", got.Load(), seq)
				return
			}
			time.Sleep(20 * time.Microsecond)
		}
		n, err := fl.write(buf, uint64(seq))
		if err != nil {
			t.Error(err)
			return
		}
		send(buf[:n])
	}
}

// sendAndReceive sends frames 0..n-1 of fl from p, at most window ahead of
// what s has received, and receives them on s within timeout, verifying
// each: it returns how many arrived.
func sendAndReceive(t testing.TB, s *xsk.Socket, p *packetSocket, fl *flow, n, window int, timeout time.Duration) int {
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- receiveAll(t, s, fl, n, &got, time.Now().Add(timeout)) }()
	sendWindowed(t, fl, n, window, &got, func(f []byte) { p.send(t, f) })
	return (<-done).n
}

func checkFramesHome(t testing.TB, s *xsk.Socket) {
	t.Helper()
	c := s.Frames()
	if c.Total() != s.UMEM().Options().NumFrames || c.User() != 0 {
		t.Errorf("frames not all accounted for: %+v (total %d)", c, c.Total())
	}
}

func TestReceive(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{Filter: udpFilter})
	t.Logf("bound in %v mode, XDP %v", s.Mode(), s.XDPMode())
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Peer, v.Host, 18)
	if id, err := s.NAPIID(); err != nil || id != 0 {
		t.Errorf("NAPIID before any packet = %d, %v; want 0, nil", id, err)
	}

	if got := sendAndReceive(t, s, peer, fl, total, 512, 60*time.Second); got != total {
		t.Fatalf("received %d of %d frames", got, total)
	}
	id, err := s.NAPIID()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NAPI ID after %d packets: %d", total, id)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	if st.RxPackets != total || st.RxDropped != 0 || st.RxRingFull != 0 || st.RxInvalidDescs != 0 {
		t.Errorf("stats do not match %d frames received once: %+v", total, st)
	}
	var wantBytes uint64
	for seq := range uint64(total) {
		wantBytes += uint64(42 + fl.payloadLenFor(seq))
	}
	if st.RxBytes != wantBytes {
		t.Errorf("RxBytes %d, want %d", st.RxBytes, wantBytes)
	}
	if st.RxBatches == 0 || st.RxBatches > st.RxPackets {
		t.Errorf("RxBatches %d for %d packets", st.RxBatches, st.RxPackets)
	}
	checkFramesHome(t, s)
}

func TestTransmit(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{Filter: udpFilter})
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Host, v.Peer, 30)

	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, total, &got, time.Now().Add(60*time.Second)) }()
	xskSender(t, s, fl, total, 512, &got)
	sn := <-done
	if sn.n != total {
		t.Fatalf("peer received %d of %d frames", sn.n, total)
	}
	// Every frame comes back through the completion ring.
	deadline := time.Now().Add(10 * time.Second)
	for s.Frames().Tx > 0 && time.Now().Before(deadline) {
		s.Complete()
		s.Kick()
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", st)
	if st.TxPackets != total || st.TxInvalidDescs != 0 || st.Completed != total {
		t.Errorf("stats do not match %d frames sent: %+v", total, st)
	}
	checkFramesHome(t, s)
}

// TestReceiveAndTransmit receives on one goroutine while another transmits
// on the same socket. Run it with -race.
func TestReceiveAndTransmit(t *testing.T) {
	const n = 20_000
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{Filter: udpFilter})
	peerTx := newPacketSocket(t, v.Peer)
	peerRx := newPacketSocket(t, v.Peer)
	in := newFlow(v.Peer, v.Host, 20)
	out := newFlow(v.Host, v.Peer, 40)
	out.hdr.SrcPort = 40001

	var wg sync.WaitGroup
	var gotIn, gotOut atomic.Int64
	var inSeen *seen
	wg.Add(3)
	go func() { defer wg.Done(); inSeen = receiveAll(t, s, in, n, &gotIn, time.Now().Add(60*time.Second)) }()
	go func() {
		defer wg.Done()
		sendWindowed(t, in, n, 256, &gotIn, func(b []byte) { peerTx.send(t, b) })
	}()
	var outSeen *seen
	go func() {
		defer wg.Done()
		outSeen = peerRx.receiveAll(t, out, n, &gotOut, time.Now().Add(60*time.Second))
	}()
	xskSender(t, s, out, n, 256, &gotOut)
	wg.Wait()
	if inSeen.n != n || outSeen.n != n {
		t.Fatalf("received %d and sent %d of %d frames", inSeen.n, outSeen.n, n)
	}
}

// TestCopyModeHoldsNoMoreThanTheRXRing checks that in copy mode the kernel
// is never given more receive frames than the RX ring holds: a receiver
// that falls behind loses the excess packets before the kernel copies them
// (no fill frame), never after (RX ring full), and gets the first ring's
// worth intact.
func TestCopyModeHoldsNoMoreThanTheRXRing(t *testing.T) {
	const rxRing, burst = 64, 300
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{
		Filter: udpFilter, Bind: xsk.BindCopy,
		NumFrames: 1024, RxRingSize: rxRing, FillRingSize: 256,
	})
	if c := s.Frames(); c.Fill != rxRing {
		t.Fatalf("after Open the kernel holds %d receive frames, want the RX ring's %d: %+v", c.Fill, rxRing, c)
	}
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Peer, v.Host, 18)
	buf := make([]byte, 256)
	for seq := range uint64(burst) {
		n, err := fl.write(buf, seq)
		if err != nil {
			t.Fatal(err)
		}
		peer.send(t, buf[:n])
	}
	var st xsk.Stats
	for deadline := time.Now().Add(5 * time.Second); ; {
		var err error
		if st, err = s.Stats(); err != nil {
			t.Fatal(err)
		}
		if st.RxDropped+st.RxRingFull >= burst-rxRing || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if st.RxRingFull != 0 || st.RxDropped != burst-rxRing || st.FillRingEmpty == 0 {
		t.Fatalf("%d frames into an RX ring of %d: want %d dropped for want of a fill frame and none for a full RX ring; stats %+v",
			burst, rxRing, burst-rxRing, st)
	}

	// The first ring's worth arrived, in order and intact.
	descs := make([]xsk.Desc, 16)
	var next uint64
	for deadline := time.Now().Add(5 * time.Second); next < rxRing && time.Now().Before(deadline); {
		n, err := s.Receive(descs)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range descs[:n] {
			seq, err := fl.check(s.Frame(d))
			if err != nil {
				t.Fatal(err)
			}
			if seq != next {
				t.Fatalf("got frame %d, want %d", seq, next)
			}
			next++
		}
		if err := s.Release(descs[:n]); err != nil {
			t.Fatal(err)
		}
	}
	if next != rxRing {
		t.Fatalf("received %d frames, want %d", next, rxRing)
	}
	if n, err := s.Receive(descs); n != 0 || err != nil {
		t.Fatalf("Receive after the ring's worth: %d, %v", n, err)
	}
	if c := s.Frames(); c.Fill != rxRing || c.User() != 0 {
		t.Fatalf("after the receiver caught up the kernel holds %d receive frames, want %d: %+v", c.Fill, rxRing, c)
	}

	// And the socket goes on receiving everything once it keeps up.
	fl2 := newFlow(v.Peer, v.Host, 30)
	if got := sendAndReceive(t, s, peer, fl2, 5000, rxRing/2, 30*time.Second); got != 5000 {
		t.Fatalf("after the overload received %d of 5000 frames", got)
	}
	checkFramesHome(t, s)
}

// TestTxOnly opens a transmit-only socket. On veth it binds in copy mode,
// where it loads no program: its frames reach the peer, and frames for the
// host end still reach the kernel's stack while it is open.
func TestTxOnly(t *testing.T) {
	const want = 1000
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{TxOnly: true})
	if s.Mode() != xsk.BindCopy || s.Program() != nil {
		t.Fatalf("TxOnly socket on veth: %s mode, program %v; want copy mode and no program", s.Mode(), s.Program())
	}
	// With TxFrames unset, every frame transmits: none idles in a fill
	// ring of a socket that never receives.
	if c := s.Frames(); c.Free != umem.DefaultNumFrames || c.Fill != 0 {
		t.Errorf("TxOnly socket's frames %+v, want all %d free for transmit", c, umem.DefaultNumFrames)
	}
	if err := v.Host.Do(func() error {
		info, err := bpf.QueryXDP(v.Host.Index)
		if err == nil && info.Attached() {
			t.Errorf("XDP attached to %s under a TxOnly socket: %+v", v.Host.Name, info)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Host, v.Peer, 30)
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, want, &got, time.Now().Add(30*time.Second)) }()
	xskSender(t, s, fl, want, 256, &got)
	if sn := <-done; sn.n != want {
		t.Fatalf("peer received %d of %d frames", sn.n, want)
	}
	expectKernelDelivery(t, v, peer, newFlow(v.Peer, v.Host, 30))

	err := v.Host.Do(func() error {
		_, err := xsk.Open(v.Host.Name, 1, &xsk.Options{TxOnly: true, NoXDP: true})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "TxOnly") {
		t.Errorf("Open with TxOnly and NoXDP: %v, want an error naming TxOnly", err)
	}

	// Beside a receiving socket whose program has a filter, a TxOnly
	// socket on another queue opens: it uses no program's filter.
	v2 := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	openOn(t, v2.Host, 0, &xsk.Options{Filter: udpFilter})
	if tx := openOn(t, v2.Host, 1, &xsk.Options{TxOnly: true}); tx.Program() != nil {
		t.Errorf("TxOnly socket beside a receiver in copy mode holds a program")
	}
}
