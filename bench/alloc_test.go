package bench

import (
	"testing"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// TestLoopsAllocateNothing checks that the rxdrop, txonly and l2fwd loops
// allocate nothing per packet: frames are first sent into the socket's RX
// ring, the generator is stopped (it allocates per system call), and then
// every loop iteration is counted.
func TestLoopsAllocateNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, kind := range []app.Kind{app.RxDrop, app.TxOnly, app.L2Fwd} {
		t.Run(kind.String(), func(t *testing.T) {
			topo, err := app.NewTopology(&app.TopologyOptions{Generator: kind != app.TxOnly, FrameLen: frameLen, HostSink: true})
			if err != nil {
				t.Fatal(err)
			}
			defer topo.Close()
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
				if _, err := topo.Gen.Send(32 * (runs + 2)); err != nil {
					t.Fatal(err)
				}
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
