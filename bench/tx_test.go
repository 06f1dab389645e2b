package bench

import (
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// TestTxDrainDeliversEveryQueuedFrame checks what benchSend's "lost" rests
// on: txonly's loop returns with frames still queued on the TX ring (the
// kernel sends in copy mode only inside a kick, up to its budget), and
// once drainTx has kicked them out every queued frame arrives at the far
// end, so that frames still waiting in the ring are not counted as lost.
// The far end's NAPI runs in a thread, as in BenchmarkTxOnlyKnobs, which
// leaves the most behind.
func TestTxDrainDeliversEveryQueuedFrame(t *testing.T) {
	testenv.RequirePrivileged(t)
	topo, err := app.NewTopology(&app.TopologyOptions{HostSink: true, FrameLen: frameLen})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := app.SetThreadedNAPI(topo.Veth.Host, true); err != nil {
		t.Fatal(err)
	}
	defer app.SetThreadedNAPI(topo.Veth.Host, false)
	c := config(256, 2048)
	c.TxBudget = 256
	var s *xsk.Socket
	if err := topo.Veth.Peer.Do(func() (err error) {
		s, err = openRaw(topo, c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := app.NewLoop(s, c)
	frame := make([]byte, frameLen)
	h := packet.UDP{SrcMAC: topo.Veth.Peer.MAC, DstMAC: topo.Veth.Host.MAC, SrcIP: topo.Veth.Peer.IP(), DstIP: topo.Veth.Host.IP(),
		SrcPort: 40000, DstPort: 9000}
	if _, err := h.Write(frame, frameLen-packet.HeadersLen); err != nil {
		t.Fatal(err)
	}
	if err := l.PrepareTx(frame); err != nil {
		t.Fatal(err)
	}
	unpin, err := app.PinThread(loopCPU)
	if err != nil {
		t.Fatal(err)
	}
	defer unpin()
	for round := range 3 {
		h0, p0 := counters(t, topo.Veth.Host), counters(t, topo.Veth.Peer)
		st0, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		sent, err := l.TxOnly(100000)
		if err != nil {
			t.Fatal(err)
		}
		if err := drainTx(s, time.Second); err != nil {
			t.Fatal(err)
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		// What veth dropped on the way (a full ring at the far end,
		// whose NAPI thread fell behind) is lost for real.
		var got, dropped uint64
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			h, p := counters(t, topo.Veth.Host).Sub(h0), counters(t, topo.Veth.Peer).Sub(p0)
			if got, dropped = h.RxPackets, h.RxDropped+p.TxDropped; got+dropped >= sent {
				break
			}
		}
		t.Logf("round %d: queued %d, arrived %d, dropped by veth %d", round, sent, got, dropped)
		if q, done := st.TxPackets-st0.TxPackets, st.Completed-st0.Completed; q != sent || done != sent || got+dropped != sent {
			t.Fatalf("round %d: queued %d (the loop says %d), completed %d; arrived %d, dropped by veth %d",
				round, q, sent, done, got, dropped)
		}
	}
	if err := l.ReleaseTx(); err != nil {
		t.Fatal(err)
	}
}

func counters(t *testing.T, ep netenv.Endpoint) pktgen.Counters {
	t.Helper()
	c, err := pktgen.ReadCounters(ep)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
