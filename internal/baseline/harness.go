package baseline

import (
	"context"
	"errors"
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
// ns/pkt as received and drops (the receiver's own drop counter), both
// over the timed loop; and offered-pps, the generator's average rate over
// its whole run: its count moves once per BPF_PROG_RUN call of 65,536
// frames, too seldom to be read at the loop's ends. A generator that
// fails fails the benchmark.
func BenchRecv(b *testing.B, v *netenv.Veth, g *pktgen.Generator, r Receiver) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Written by the generator's goroutine, read after wg.Wait.
	var (
		sent    uint64
		sendErr error
		genTime time.Duration
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		sent, sendErr = g.SendContext(ctx, 0)
		genTime = time.Since(start)
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
	// Drops at the loop's end, before the generator stops: its last call
	// runs to its end, and what it sends then, with nobody reading, would
	// be dropped.
	after, err := r.Stats()
	if err != nil {
		b.Fatal(err)
	}
	stop()
	if sendErr != nil && !errors.Is(sendErr, context.Canceled) {
		b.Fatal(sendErr)
	}
	b.ReportMetric(float64(got)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(max(got, 1)), "ns/pkt")
	b.ReportMetric(float64(sent)/genTime.Seconds(), "offered-pps")
	b.ReportMetric(float64(after.Drops-before.Drops), "drops")
}
