package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// xconnectTopology is two veth pairs whose inner ends share a namespace:
// the generator feeds the first (in), the second's outer end counts what
// arrives (far), and two sockets on the inner ends share one UMEM.
func xconnectTopology(tb testing.TB, c *app.Config) (in, far *app.Topology, x *app.XConnect) {
	tb.Helper()
	ns := testenv.NewNetns(tb)
	var err error
	for _, t := range []**app.Topology{&in, &far} {
		o := &app.TopologyOptions{PeerNS: ns, Generator: t == &in, HostSink: t == &far, FrameLen: frameLen}
		if *t, err = app.NewTopology(o); err != nil {
			tb.Fatal(err)
		}
		topo := *t
		tb.Cleanup(func() {
			if err := topo.Close(); err != nil {
				tb.Error(err)
			}
		})
	}
	var a, b *xsk.Socket
	err = ns.Do(func() error {
		o := c.XSKOptions()
		// Receive frames for both fill rings.
		o.NumFrames = 8 * c.RingSize
		var err error
		if a, err = xsk.Open(in.Veth.Peer.Name, 0, o); err != nil {
			return err
		}
		o = c.XSKOptions()
		o.NumFrames, o.ShareUMEM = 0, a
		b, err = xsk.Open(far.Veth.Peer.Name, 0, o)
		return err
	})
	for _, s := range []*xsk.Socket{a, b} {
		if s != nil {
			tb.Cleanup(func() {
				if err := s.Close(); err != nil {
					tb.Error(err)
				}
			})
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
	return in, far, app.NewXConnect(a, b, c.Batch)
}

// BenchmarkXConnect forwards 64-byte frames from one veth pair to another
// through two sockets sharing a UMEM, each frame sent from the frame it
// arrived in: fed by the generator at full speed, counted at the far end
// (peer-pps; drops are the receiving socket's). Compare with
// BenchmarkL2Fwd, which sends back out of the receiving socket.
func BenchmarkXConnect(b *testing.B) {
	for _, batch := range batches {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := config(batch, 2048)
			in, far, x := xconnectTopology(b, c)
			benchRecv(b, in, recvPath{recv: x.Run, drops: xskDrops(b, x.Socks[0]), stop: func() { x.Stop.Store(true) },
				peer: func() uint64 {
					n, err := far.HostReceived()
					if err != nil {
						b.Fatal(err)
					}
					return n
				}})
			if err := x.Drain(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestXConnectAllocatesNothing is TestLoopsAllocateNothing for the
// shared-UMEM forwarder, which also checks that the far end counted every
// forwarded frame.
func TestXConnectAllocatesNothing(t *testing.T) {
	const runs = 20
	c := config(32, 2048)
	in, far, x := xconnectTopology(t, c)
	// The inner end's NAPI poll in a kernel thread, as it is in effect
	// on a loaded machine: feed must fill the RX ring all the same, or
	// Run waits for frames that veth dropped.
	if err := app.SetThreadedNAPI(in.Veth.Peer, true); err != nil {
		t.Fatal(err)
	}
	feed(t, in, 32*(runs+2))
	if a := testing.AllocsPerRun(runs, func() { must(t)(x.Run(32)) }); a != 0 {
		t.Fatalf("xconnect allocates %v times per 32 packets", a)
	}
	if err := x.Drain(); err != nil {
		t.Fatal(err)
	}
	fwd := x.Fwd[0].Load()
	if fwd < 32*(runs+1) || x.Fwd[1].Load() != 0 {
		t.Fatalf("forwarded %d and %d frames, want at least %d one way and none back", fwd, x.Fwd[1].Load(), 32*(runs+1))
	}
	// The kernel sends in the kick: what was queued has gone. Reap the
	// completions and wait for the far end's count.
	var got uint64
	for range 1000 {
		x.Socks[1].Complete()
		if got, _ = far.HostReceived(); got == fwd {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if got != fwd {
		t.Fatalf("far end received %d of %d forwarded frames", got, fwd)
	}
}
