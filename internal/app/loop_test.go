package app

import (
	"testing"
	"time"

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

// TestRxDropWaitModes sends an exact number of frames across the veth pair
// at full speed and checks, in each wait mode, that every frame is either
// received by the loop or counted by the kernel as dropped for want of
// room (a receiver that sleeps may not keep up with the generator), and
// that the loop idled (slept, for the modes that sleep) before they came.
func TestRxDropWaitModes(t *testing.T) {
	const n = 50000
	for _, w := range []WaitMode{WaitSpin, WaitPoll, WaitHybrid, WaitNap} {
		t.Run(w.String(), func(t *testing.T) {
			topo, l := openLoop(t, w)
			l.Spin = 10 * time.Microsecond
			done := make(chan error, 1)
			go func() {
				_, err := l.RxDrop(0)
				done <- err
			}()
			time.Sleep(20 * time.Millisecond) // idle first
			if sent, err := topo.Gen.Send(n); err != nil || sent != n {
				t.Fatalf("generator sent %d of %d: %v", sent, n, err)
			}
			var st xsk.Stats
			deadline := time.Now().Add(10 * time.Second)
			for {
				var err error
				if st, err = l.Sock.Stats(); err != nil {
					t.Fatal(err)
				}
				if l.C.RxPackets.Load()+st.RxDropped+st.RxRingFull >= n || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			l.Stop.Store(true)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			got := l.C.RxPackets.Load()
			if got+st.RxDropped+st.RxRingFull != n || st.RxPackets != got {
				t.Fatalf("received %d (socket says %d), kernel drops %d+%d: %d of %d sent",
					got, st.RxPackets, st.RxDropped, st.RxRingFull, got+st.RxDropped+st.RxRingFull, n)
			}
			if got < n/4 {
				t.Fatalf("received only %d of %d", got, n)
			}
			if l.C.RxBytes.Load() != got*64 {
				t.Fatalf("received %d bytes in %d frames of 64", l.C.RxBytes.Load(), got)
			}
			sleeps := l.C.Sleeps.Load()
			if w == WaitSpin && sleeps != 0 || w != WaitSpin && sleeps == 0 {
				t.Fatalf("%v slept %d times", w, sleeps)
			}
			t.Logf("%v: received %d of %d, %d dropped by the kernel, %d sleeps", w, got, n, n-got, sleeps)
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
