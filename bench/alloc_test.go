package bench

import (
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// TestLoopsAllocateNothing checks that the rxdrop, txonly and l2fwd loops
// allocate nothing per packet: frames are first sent into the socket's RX
// ring, the generator is stopped (it allocates per system call), and then
// every loop iteration is counted. The receiving loops run a second time
// with the peer's NAPI poll in a kernel thread, as it is in effect on a
// loaded machine (softirqs deferred to ksoftirqd): the frames must reach
// the RX ring all the same, or the loops wait for them for ever.
func TestLoopsAllocateNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		kind     app.Kind
		threaded bool
	}{{app.RxDrop, false}, {app.TxOnly, false}, {app.L2Fwd, false}, {app.RxDrop, true}, {app.L2Fwd, true}} {
		kind, name := tc.kind, tc.kind.String()
		if tc.threaded {
			name += "/threaded-napi"
		}
		t.Run(name, func(t *testing.T) {
			topo, err := app.NewTopology(&app.TopologyOptions{Generator: kind != app.TxOnly, FrameLen: frameLen, HostSink: true})
			if err != nil {
				t.Fatal(err)
			}
			defer topo.Close()
			if tc.threaded {
				if err := app.SetVethThreadedNAPI(topo.Veth.Peer, true); err != nil {
					t.Fatal(err)
				}
			}
			c := config(32, 2048)
			var l *app.Loop
			err = topo.Veth.Peer.Do(func() error {
				s, err := openRaw(topo, c)
				l = app.NewLoop(s, c)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Sock.Close()
			const runs = 20
			var step func()
			switch kind {
			case app.TxOnly:
				if err := l.PrepareTx(make([]byte, frameLen)); err != nil {
					t.Fatal(err)
				}
				step = func() { must(t)(l.TxOnly(32)) }
			default:
				// Enough frames for every run, waiting in the RX ring.
				feed(t, topo, 32*(runs+2))
				if kind == app.RxDrop {
					step = func() { must(t)(l.RxDrop(32)) }
				} else {
					step = func() { must(t)(l.L2Fwd(32)) }
				}
			}
			if a := testing.AllocsPerRun(runs, step); a != 0 {
				t.Fatalf("%s allocates %v times per 32 packets", kind, a)
			}
			// What the poll and hybrid modes add when idle.
			if a := testing.AllocsPerRun(runs, func() { l.Sock.Wait(xsk.Readable|xsk.Writable, 0) }); a != 0 {
				t.Fatalf("Wait allocates %v times", a)
			}
		})
	}
}

func must(t *testing.T) func(uint64, error) {
	return func(_ uint64, err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// vethRing is the number of frames veth's XDP ring holds: what a generator
// may send to a veth end before that end's NAPI poll has taken them off.
const vethRing = 256

// feed sends n frames from topo's generator to the peer end in chunks that
// fit veth's XDP ring, each once the peer's NAPI poll has taken the last
// chunk off the ring, so that veth drops none however late that poll runs
// (on a loaded machine, in ksoftirqd, long after the generator's call).
// It fails t unless every frame went through the peer's XDP program into
// its socket: none dropped by veth (the host end's tx_dropped) or on the
// way into the socket (the peer's rx_dropped).
func feed(t *testing.T, topo *app.Topology, n uint64) {
	t.Helper()
	h0, p0 := counters(t, topo.Veth.Host), counters(t, topo.Veth.Peer)
	for sent := uint64(0); sent < n; {
		c := min(vethRing, n-sent)
		if got, err := topo.Gen.Send(c); err != nil || got != c {
			t.Fatalf("generator sent %d of %d: %v", got, c, err)
		}
		sent += c
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			h, p := counters(t, topo.Veth.Host).Sub(h0), counters(t, topo.Veth.Peer).Sub(p0)
			if h.TxDropped != 0 || p.RxDropped != 0 {
				t.Fatalf("sent %d frames in chunks of %d: veth dropped %d, the peer %d", sent, vethRing, h.TxDropped, p.RxDropped)
			}
			if p.RxPackets >= sent {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sent %d frames: the peer took in %d in 10s", sent, p.RxPackets)
			}
		}
	}
}
