package app

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
	"golang.org/x/sys/unix"
)

// openLoop builds a veth topology with a generator, opens a socket on the
// peer end and returns a loop over it in wait mode w.
func openLoop(t *testing.T, w WaitMode) (*Topology, *Loop) {
	t.Helper()
	testenv.RequirePrivileged(t)
	topo, err := NewTopology(&TopologyOptions{Generator: true, FrameLen: 64, HostSink: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	})
	var c Config
	c.Defaults()
	c.RingSize, c.Wait, c.Nap = 2048, w, 200*time.Microsecond
	var s *xsk.Socket
	err = topo.Veth.Peer.Do(func() error {
		s, err = xsk.Open(topo.Veth.Peer.Name, 0, c.XSKOptions())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return topo, NewLoop(s, &c)
}

// TestRxDropWaitModes checks, in each wait mode, that a loop which has
// gone idle (and, in the modes that sleep, has slept) wakes for traffic and
// receives every frame of it, and that under overload every frame is
// either received or counted by the kernel as dropped.
//
// Nothing here depends on how fast the machine is: the paced phase sends
// chunks that fit the rings (veth's own included) and waits for each to be
// received, so no frame may be dropped however late the loop or the peer's
// NAPI poll is scheduled; the overload phase only asserts what the rings
// guarantee (a full RX ring's worth arrives) and counts veth's overflow.
func TestRxDropWaitModes(t *testing.T) {
	const (
		chunk = 256 // fits veth's XDP ring, and well under the 2048-entry RX and fill rings
		paced = 80 * chunk
		burst = 50000 // far more than the rings hold
		ring  = 2048
	)
	for _, w := range []WaitMode{WaitSpin, WaitPoll, WaitHybrid, WaitNap} {
		t.Run(w.String(), func(t *testing.T) {
			topo, l := openLoop(t, w)
			l.Spin = 10 * time.Microsecond
			done := make(chan error, 1)
			go func() {
				_, err := l.RxDrop(0)
				done <- err
			}()
			stopped := false
			stop := func() {
				if !stopped {
					stopped = true
					l.Stop.Store(true)
					if err := <-done; err != nil {
						t.Error(err)
					}
				}
			}
			defer stop()

			// overflow is what veth dropped since the start because the
			// peer's 256-frame XDP ring was full: the host end's tx_dropped
			// (the peer's ring overflow, and nothing else on this pair).
			// Under overload it happens when the peer's NAPI poll is
			// deferred to ksoftirqd while the generator goes on; the frames
			// never reach the socket.
			host0, err := pktgen.ReadCounters(topo.Veth.Host)
			if err != nil {
				t.Fatal(err)
			}
			overflow := func() uint64 {
				t.Helper()
				c, err := pktgen.ReadCounters(topo.Veth.Host)
				if err != nil {
					t.Fatal(err)
				}
				return c.TxDropped - host0.TxDropped
			}
			// accounted waits until the loop's count plus the kernel's drops
			// reach want (or 10 s pass) and returns the socket's statistics
			// and veth's overflow.
			accounted := func(want uint64) (xsk.Stats, uint64) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for {
					st, err := l.Sock.Stats()
					if err != nil {
						t.Fatal(err)
					}
					o := overflow()
					if l.C.RxPackets.Load()+st.RxDropped+st.RxRingFull+o >= want || time.Now().After(deadline) {
						return st, o
					}
					time.Sleep(time.Millisecond)
				}
			}
			send := func(n uint64) {
				t.Helper()
				if sent, err := topo.Gen.Send(n); err != nil || sent != n {
					t.Fatalf("generator sent %d of %d: %v", sent, n, err)
				}
			}

			// Idle first: a sleeping mode must have slept before traffic.
			if w != WaitSpin {
				deadline := time.Now().Add(5 * time.Second)
				for l.C.Sleeps.Load() == 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if l.C.Sleeps.Load() == 0 {
					t.Fatalf("%v: never slept while idle for 5s", w)
				}
			}

			// Paced: every frame must be received.
			var sent uint64
			for sent < paced {
				send(chunk)
				sent += chunk
				accounted(sent)
			}
			st, o := accounted(sent)
			if got := l.C.RxPackets.Load(); got != paced || st.RxDropped+st.RxRingFull+o != 0 {
				t.Fatalf("paced: received %d of %d, socket drops %d+%d, veth ring overflow %d",
					got, paced, st.RxDropped, st.RxRingFull, o)
			}

			// Overload: exact accounting, and at least a ring's worth.
			send(burst)
			accounted(paced + burst)
			stop()
			// Read everything again once the loop has stopped: the socket's
			// count, read before the loop's inside accounted, may lag it.
			got := l.C.RxPackets.Load()
			st, err = l.Sock.Stats()
			if err != nil {
				t.Fatal(err)
			}
			o = overflow()
			if got+st.RxDropped+st.RxRingFull+o != paced+burst || st.RxPackets != got {
				t.Fatalf("received %d (socket says %d), socket drops %d+%d, veth ring overflow %d: %d of %d sent",
					got, st.RxPackets, st.RxDropped, st.RxRingFull, o, got+st.RxDropped+st.RxRingFull+o, paced+burst)
			}
			if got-paced < ring {
				t.Fatalf("overload: received %d of %d, less than the RX ring holds", got-paced, burst)
			}
			if l.C.RxBytes.Load() != got*64 {
				t.Fatalf("received %d bytes in %d frames of 64", l.C.RxBytes.Load(), got)
			}
			if sleeps := l.C.Sleeps.Load(); w == WaitSpin && sleeps != 0 {
				t.Fatalf("%v slept %d times", w, sleeps)
			}
			t.Logf("%v: overload: received %d of %d, %d dropped by the kernel (%d of them in veth); %d sleeps",
				w, got-paced, burst, paced+burst-got, o, l.C.Sleeps.Load())
		})
	}
}

// TestNapStops checks that a napping loop with no traffic notices Stop
// and returns nothing received, having napped, and no more often than
// naps of its length allow.
func TestNapStops(t *testing.T) {
	_, l := openLoop(t, WaitNap)
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		got, err := l.RxDrop(0)
		if err == nil && got != 0 {
			t.Errorf("received %d frames with no traffic", got)
		}
		done <- err
	}()
	// Stop once it has napped: a loop that a busy machine has not run
	// yet would see Stop before its first nap.
	for deadline := time.Now().Add(10 * time.Second); l.C.Sleeps.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	l.Stop.Store(true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RxDrop still running 10s after Stop")
	}
	// A nap lasts at least 200µs (and on a loaded machine much longer);
	// a loop that napped fewer times than that allows, or not at all,
	// would be spinning or stuck.
	elapsed := time.Since(start)
	if s := l.C.Sleeps.Load(); s == 0 || s > uint64(elapsed/(200*time.Microsecond))+1 {
		t.Fatalf("napped %d times in %v of 200µs naps", s, elapsed)
	}
}

// TestTxOnlyNap transmits an exact number of frames in nap mode (which
// kicks the kernel before each nap) and counts them at the far end.
func TestTxOnlyNap(t *testing.T) {
	topo, l := openLoop(t, WaitNap)
	frame := make([]byte, 64)
	copy(frame, topo.Veth.Host.MAC)
	copy(frame[6:], topo.Veth.Peer.MAC)
	if err := l.PrepareTx(frame); err != nil {
		t.Fatal(err)
	}
	before, err := topo.HostReceived()
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	sent, err := l.TxOnly(n)
	if err != nil || sent < n {
		t.Fatalf("queued %d of %d: %v", sent, n, err)
	}
	// Let the ring drain: TxOnly returns once the frames are queued.
	deadline := time.Now().Add(5 * time.Second)
	var got uint64
	for time.Now().Before(deadline) {
		if err := l.Sock.Kick(); err != nil {
			t.Fatal(err)
		}
		after, err := topo.HostReceived()
		if err != nil {
			t.Fatal(err)
		}
		if got = after - before; got >= sent {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if got != sent {
		t.Fatalf("far end received %d of %d queued", got, sent)
	}
	if err := l.ReleaseTx(); err != nil {
		t.Fatal(err)
	}
}

// TestSweepTakesWhatTheRingHolds leaves frames in the RX ring with no
// loop running, as a run's end does when its loop stops before it has
// taken everything: Sweep receives every one of them, so that the
// socket's count and the kernel's drops add up to what the peer end took
// in.
func TestSweepTakesWhatTheRingHolds(t *testing.T) {
	topo, l := openLoop(t, WaitSpin)
	peer0, err := pktgen.ReadCounters(topo.Veth.Peer)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000 // fewer than the RX and fill rings hold
	if sent, err := topo.Gen.Send(n); err != nil || sent != n {
		t.Fatalf("sent %d, %v", sent, err)
	}
	var in uint64
	for deadline := time.Now().Add(5 * time.Second); in < n && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		p, err := pktgen.ReadCounters(topo.Veth.Peer)
		if err != nil {
			t.Fatal(err)
		}
		in = p.RxPackets - peer0.RxPackets
	}
	got, err := l.Sweep()
	if err != nil {
		t.Fatal(err)
	}
	st, err := l.Sock.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got != in || st.RxPackets+st.RxDropped+st.RxRingFull != in || l.C.RxPackets.Load() != got {
		t.Errorf("peer took in %d; Sweep took %d (counted %d), socket received %d and dropped %d",
			in, got, l.C.RxPackets.Load(), st.RxPackets, st.RxDropped+st.RxRingFull)
	}
	if got, err := l.Sweep(); got != 0 || err != nil {
		t.Errorf("second Sweep: %d, %v; want 0, nil", got, err)
	}
}

// fakeTx queues at most room[i] frames on its i-th call (0 once room is
// used up) and fails with err[i] when that is set.
type fakeTx struct {
	room  []int
	err   []error
	calls int
}

func (f *fakeTx) Transmit(descs []xsk.Desc) (int, error) {
	i := f.calls
	f.calls++
	if i >= len(f.room) {
		return 0, nil
	}
	m := min(f.room[i], len(descs))
	var err error
	if i < len(f.err) {
		err = f.err[i]
	}
	return m, err
}

// TestTransmitAllCountsWhatItQueued checks that TransmitAll reports every
// frame it queued when it gives up part way, so that l2fwd and echo count
// the frames that went out and give back only the rest: stopped while the
// TX ring has no room, or failing after having queued some.
func TestTransmitAllCountsWhatItQueued(t *testing.T) {
	errTx := errors.New("transmit failed")
	errWait := errors.New("wait failed")
	descs := make([]xsk.Desc, 10)
	for _, tc := range []struct {
		name    string
		tx      fakeTx
		stop    bool
		waitErr error
		want    int
		wantErr error
	}{
		{name: "all", tx: fakeTx{room: []int{4, 0, 6}}, want: 10},
		{name: "stopped with the ring full", tx: fakeTx{room: []int{3, 2}}, stop: true, want: 5},
		{name: "transmit fails after queuing some", tx: fakeTx{room: []int{3, 4}, err: []error{nil, errTx}}, want: 7, wantErr: errTx},
		{name: "wait fails", tx: fakeTx{room: []int{6}}, waitErr: errWait, want: 6, wantErr: errWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stop atomic.Bool
			stop.Store(tc.stop)
			waits := 0
			n, err := TransmitAll(&tc.tx, descs, func() error { waits++; return tc.waitErr }, &stop)
			if n != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("TransmitAll: %d, %v; want %d, %v", n, err, tc.want, tc.wantErr)
			}
			if tc.stop && waits != 0 {
				t.Errorf("waited %d times although stopped", waits)
			}
		})
	}
}

// TestL2FwdStopAccounts stops l2fwd under overload, when it may be
// waiting for room in the TX ring, and checks that every frame it
// received is counted as transmitted or as given back unsent.
func TestL2FwdStopAccounts(t *testing.T) {
	topo, l := openLoop(t, WaitSpin)
	done := make(chan error, 1)
	go func() {
		_, err := l.L2Fwd(0)
		done <- err
	}()
	if sent, err := topo.Gen.Send(20000); err != nil || sent != 20000 {
		t.Fatalf("generator sent %d: %v", sent, err)
	}
	// Stop once the loop has received something: a loop goroutine that a
	// busy machine has not run yet would see Stop first.
	for deadline := time.Now().Add(10 * time.Second); l.C.RxPackets.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	l.Stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rx, tx, unsent := l.C.RxPackets.Load(), l.C.TxPackets.Load(), l.C.Unsent.Load()
	if rx == 0 || rx != tx+unsent || l.C.TxBytes.Load() != tx*64 {
		t.Fatalf("received %d, transmitted %d (%d bytes), unsent %d", rx, tx, l.C.TxBytes.Load(), unsent)
	}
}

// TestTxOnlyCountsQueuedOnFailure takes the socket's link down, so that
// Transmit queues frames and then fails in the kick: the frames it queued
// are the kernel's, and TxOnly counts them, as the socket does, and does
// not keep them as its own for ReleaseTx to give back.
func TestTxOnlyCountsQueuedOnFailure(t *testing.T) {
	topo, l := openLoop(t, WaitSpin)
	frame := make([]byte, 64)
	copy(frame, topo.Veth.Host.MAC)
	copy(frame[6:], topo.Veth.Peer.MAC)
	if err := l.PrepareTx(frame); err != nil {
		t.Fatal(err)
	}
	testenv.SetLink(t, topo.Veth.Peer, false)
	sent, err := l.TxOnly(1000)
	if err == nil {
		t.Fatalf("TxOnly on a link that is down: queued %d, no error", sent)
	}
	st, serr := l.Sock.Stats()
	if serr != nil {
		t.Fatal(serr)
	}
	if st.TxPackets == 0 || sent != st.TxPackets || l.C.TxPackets.Load() != st.TxPackets {
		t.Fatalf("socket queued %d; TxOnly says %d, counted %d (%v)", st.TxPackets, sent, l.C.TxPackets.Load(), err)
	}
	if err := l.ReleaseTx(); err != nil {
		t.Fatalf("ReleaseTx: %v", err)
	}
}

// TestL2FwdCountsQueuedOnFailure gives l2fwd frames to forward on a link
// that is down, so that Transmit queues them and then fails in the kick:
// the frames it queued are counted as transmitted, as the socket counts
// them, and every frame received is transmitted or counted unsent.
func TestL2FwdCountsQueuedOnFailure(t *testing.T) {
	topo, l := openLoop(t, WaitSpin)
	const n = 100
	if sent, err := topo.Gen.Send(n); err != nil || sent != n {
		t.Fatalf("generator sent %d: %v", sent, err)
	}
	// Let them reach the RX ring (Receive fills the fill ring first).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if p, err := topo.PeerReceived(); err == nil && p >= n {
			break
		}
	}
	testenv.SetLink(t, topo.Veth.Peer, false)
	fwd, err := l.L2Fwd(0)
	if err == nil {
		t.Fatalf("L2Fwd on a link that is down: forwarded %d, no error", fwd)
	}
	st, serr := l.Sock.Stats()
	if serr != nil {
		t.Fatal(serr)
	}
	rx, tx, unsent := l.C.RxPackets.Load(), l.C.TxPackets.Load(), l.C.Unsent.Load()
	if st.TxPackets == 0 || fwd != st.TxPackets || tx != st.TxPackets || rx != tx+unsent {
		t.Fatalf("socket queued %d; L2Fwd says %d; counted received %d, transmitted %d, unsent %d (%v)",
			st.TxPackets, fwd, rx, tx, unsent, err)
	}
}

// TestLoopSeesDeletedInterface deletes the interface under an idle RxDrop
// loop in each mode that does not wait in Wait on every idle iteration
// (spin, nap), and in poll: the loop returns an error matching ENXIO
// rather than spinning or sleeping on a socket that can receive nothing.
func TestLoopSeesDeletedInterface(t *testing.T) {
	for _, w := range []WaitMode{WaitSpin, WaitNap, WaitPoll} {
		t.Run(w.String(), func(t *testing.T) {
			topo, l := openLoop(t, w)
			done := make(chan error, 1)
			go func() {
				_, err := l.RxDrop(0)
				done <- err
			}()
			time.Sleep(50 * time.Millisecond) // idle for a while first
			peer := topo.Veth.Peer
			h := peer.NS.Handle()
			link, err := h.LinkByIndex(peer.Index)
			if err == nil {
				err = h.LinkDel(link)
			}
			if err != nil {
				l.Stop.Store(true)
				<-done
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, unix.ENXIO) {
					t.Fatalf("RxDrop after the interface went: %v, want ENXIO", err)
				}
			case <-time.After(20 * time.Second):
				l.Stop.Store(true)
				<-done
				t.Fatal("RxDrop still running 20s after its interface was deleted")
			}
		})
	}
}
