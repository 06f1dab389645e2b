package app

import (
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
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
// chunks that fit the rings and waits for each to be received, so no frame
// may be dropped however late the loop is scheduled; the overload phase
// only asserts what the rings guarantee (a full RX ring's worth arrives).
func TestRxDropWaitModes(t *testing.T) {
	const (
		chunk = 512 // well under the 2048-entry RX and fill rings
		paced = 40 * chunk
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

			// accounted waits until the loop's count plus the kernel's drops
			// reach want (or 10 s pass) and returns the socket's statistics.
			accounted := func(want uint64) xsk.Stats {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for {
					st, err := l.Sock.Stats()
					if err != nil {
						t.Fatal(err)
					}
					if l.C.RxPackets.Load()+st.RxDropped+st.RxRingFull >= want || time.Now().After(deadline) {
						return st
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
			st := accounted(sent)
			if got := l.C.RxPackets.Load(); got != paced || st.RxDropped+st.RxRingFull != 0 {
				t.Fatalf("paced: received %d of %d, kernel drops %d+%d", got, paced, st.RxDropped, st.RxRingFull)
			}

			// Overload: exact accounting, and at least a ring's worth.
			send(burst)
			st = accounted(paced + burst)
			stop()
			got := l.C.RxPackets.Load()
			if got+st.RxDropped+st.RxRingFull != paced+burst || st.RxPackets != got {
				t.Fatalf("received %d (socket says %d), kernel drops %d+%d: %d of %d sent",
					got, st.RxPackets, st.RxDropped, st.RxRingFull, got+st.RxDropped+st.RxRingFull, paced+burst)
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
			t.Logf("%v: overload: received %d of %d, %d dropped by the kernel; %d sleeps",
				w, got-paced, burst, paced+burst-got, l.C.Sleeps.Load())
		})
	}
}

// TestNapStops checks that a napping loop with no traffic notices Stop
// within a few naps and returns nothing received.
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
	time.Sleep(50 * time.Millisecond)
	l.Stop.Store(true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("RxDrop did not return within 1s of Stop")
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
