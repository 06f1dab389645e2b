package baseline

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
)

// Receiver is what [BenchRecv] drives: a baseline receiver, or anything with
// the same methods (an adapter around an AF_XDP socket, say).
type Receiver interface {
	// Receive takes up to n packets, waiting no later than deadline.
	Receive(n uint64, deadline time.Time) (Counts, error)
	Stats() (Stats, error)
	Close() error
}

var (
	_ Receiver = (*UDPReceiver)(nil)
	_ Receiver = (*AFPacketReceiver)(nil)
)

// BenchRecv measures how fast r takes frames arriving at v's peer end while
// a pktgen generator (made by the caller with pktgen.NewFor(v.Host, ...),
// so that its frames come out at the peer) sends as fast as it can.
// Something on the peer must enable veth's XDP receive path: an XDP program,
// such as an AF_XDP socket's or a pktgen.Sink with pktgen.Pass.
//
// Every b.Loop iteration receives up to 4096 frames. It reports pps and
// ns/pkt as received, offered-pps as sent, and drops (the receiver's own
// drop counter over the run).
func BenchRecv(b *testing.B, v *netenv.Veth, g *pktgen.Generator, r Receiver) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent uint64
	var sendErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent, sendErr = g.SendContext(ctx, 0)
	}()
	stop := func() {
		cancel()
		wg.Wait()
	}
	defer stop()

	// Warm up: wait for the first frames, so that start-up costs and a
	// misconfigured path (nothing arrives) show before the clock starts.
	if c, err := r.Receive(1, time.Now().Add(5*time.Second)); err != nil || c.Packets == 0 {
		b.Fatalf("no frame reached the receiver at %s within 5s (err %v)", v.Peer.Name, err)
	}
	before, err := r.Stats()
	if err != nil {
		b.Fatal(err)
	}
	sentBefore := g.Total()
	var got uint64
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		c, err := r.Receive(4096, time.Now().Add(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		got += c.Packets
	}
	elapsed := time.Since(start)
	stop()
	if sendErr != nil && ctx.Err() == nil {
		b.Fatal(sendErr)
	}
	after, err := r.Stats()
	if err != nil {
		b.Fatal(err)
	}
	offered := sent - sentBefore
	if sent < sentBefore {
		offered = 0
	}
	b.ReportMetric(float64(got)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(max(got, 1)), "ns/pkt")
	b.ReportMetric(float64(offered)/elapsed.Seconds(), "offered-pps")
	b.ReportMetric(float64(after.Drops-before.Drops), "drops")
}
