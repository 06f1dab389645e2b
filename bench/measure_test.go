package bench

import (
	"math"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/testenv"
)

// benchOnce runs fn as a benchmark of one b.Loop iteration, as CI's
// -benchtime=1x does, and fails t unless it passed.
func benchOnce(t *testing.T, fn func(b *testing.B)) testing.BenchmarkResult {
	t.Helper()
	r, ok := testenv.BenchOnce(t, fn)
	if !ok {
		t.Fatalf("benchmark ran %d iterations, want 1 (did it fail?)", r.N)
	}
	return r
}

// idleFeeder is a generator that offers nothing and uses no CPU.
type idleFeeder struct{}

func (idleFeeder) Stop() (time.Duration, error) { return 0, nil }
func (idleFeeder) CPU() time.Duration           { return 0 }
func (idleFeeder) Offered() (uint64, time.Time, error) {
	return 0, time.Now(), nil
}

// nanosSince is a counter that moves by one every nanosecond, like the
// drop counter of a receiver under a steady load that nothing serves.
func nanosSince(origin time.Time) uint64 { return uint64(time.Since(origin)) }

// checkSpan checks that r's per-packet metrics cover the timed loop of
// the benchmark (r.T, ns/op) and nothing else: pkts packets handled in it
// make ns/pkt exactly r.T/pkts, and a counter moving once a nanosecond
// (reported as name, if not "") moves no more than r.T. testing's b.Loop reads the
// memory statistics, stopping the world, as it starts and ends the timer:
// a span measured around the loop holds those pauses, in which the loop
// under test does not run, and, at -benchtime=1x, often more time than
// the loop itself.
func checkSpan(t *testing.T, r testing.BenchmarkResult, pkts uint64, name string) {
	t.Helper()
	ns := float64(r.T.Nanoseconds())
	want := ns / float64(pkts)
	if got := r.Extra["ns/pkt"]; math.Abs(got-want) > 1e-9*want {
		t.Errorf("ns/pkt %v, want %v: %d packets in the timed %v (ns/op %d)", got, want, pkts, r.T, r.NsPerOp())
	}
	if got, want := r.Extra["pps"], float64(pkts)/r.T.Seconds(); math.Abs(got-want) > 1e-9*want {
		t.Errorf("pps %v, want %v", got, want)
	}
	if n := r.Extra[name]; name != "" && n > ns {
		t.Errorf("%s counted over %v ns, more than the timed loop's %v", name, n, r.T)
	}
}

// TestRecvMetricsCoverTheTimedLoop checks that benchRecv's pps, ns/pkt,
// drops and CPU time are those of the packets received in the timed loop,
// over that loop's time, not over a span that holds testing's own pauses
// (drops the receiver did not cause, time it did not spend).
func TestRecvMetricsCoverTheTimedLoop(t *testing.T) {
	var timed uint64
	origin := time.Now()
	r := benchOnce(t, func(b *testing.B) {
		warm := true
		measureRecv(b, idleFeeder{}, recvPath{
			recv: func(n uint64) (uint64, error) {
				if warm {
					warm = false
				} else {
					timed += n
				}
				return n, nil
			},
			drops: func() uint64 { return nanosSince(origin) },
			stop:  func() {},
		})
	})
	if timed != perIter {
		t.Fatalf("timed loop received %d packets, want %d", timed, perIter)
	}
	checkSpan(t, r, timed, "drops")
}

// TestSendMetricsCoverTheTimedLoop is TestRecvMetricsCoverTheTimedLoop
// for benchSend: a far end that counts everything sent shows no loss.
func TestSendMetricsCoverTheTimedLoop(t *testing.T) {
	var sent uint64
	r := benchOnce(t, func(b *testing.B) {
		measureSend(b, func() (uint64, error) { return sent, nil }, func(n uint64) (uint64, error) {
			sent += n
			return n, nil
		}, nil)
	})
	checkSpan(t, r, perIter, "")
	if l := r.Extra["lost"]; l != 0 {
		t.Errorf("lost %v of %d frames that all arrived", l, sent)
	}
	if pp, want := r.Extra["peer-pps"], float64(perIter)/r.T.Seconds(); math.Abs(pp-want) > 1e-9*want {
		t.Errorf("peer-pps %v, want %v", pp, want)
	}
}

// scriptedFeeder is a generator whose count of frames offered moves by
// perCall, and its clock by a second, at every reading; over its whole
// run it claims another rate altogether.
type scriptedFeeder struct {
	idleFeeder
	perCall, count uint64
	at             time.Time
}

func (f *scriptedFeeder) Rate() float64 { return 5e6 }

func (f *scriptedFeeder) Offered() (uint64, time.Time, error) {
	f.count += f.perCall
	f.at = f.at.Add(time.Second)
	return f.count, f.at, nil
}

// TestRecvOfferedCoversTheTimedLoop checks that offered-pps is what the
// generator offered around the timed loop, the window pps and drops are
// over, not its average over its whole run, which starts before the
// warm-up and, at -benchtime=1x, lasts a hundred times longer than the
// loop.
func TestRecvOfferedCoversTheTimedLoop(t *testing.T) {
	f := &scriptedFeeder{perCall: 1000, at: time.Now()}
	r := benchOnce(t, func(b *testing.B) {
		measureRecv(b, f, recvPath{
			recv:  func(n uint64) (uint64, error) { return n, nil },
			drops: func() uint64 { return 0 },
			stop:  func() {},
		})
	})
	if got := r.Extra["offered-pps"]; got != 1000 {
		t.Errorf("offered-pps %v, want 1000: the frames offered between the two readings around the timed loop, over the time between them", got)
	}
}

// TestCounterRecvCountsEveryFrame checks that a receiver counted by a
// kernel counter (BenchmarkXDPDrop's) counts every movement of the
// counter once, from the mark at the start of the timed loop on: none
// that happened between two calls is lost, none before the mark counts.
func TestCounterRecvCountsEveryFrame(t *testing.T) {
	// A counter that moves by 1000 at every reading, as one under load
	// moves while it is being read.
	var c uint64
	read := func() (uint64, error) {
		c += 1000
		return c, nil
	}
	p := counterRecv(read)
	if n, err := p.recv(1); err != nil || n == 0 { // warm-up
		t.Fatalf("warm-up: %d, %v", n, err)
	}
	c += 5000 // frames before the timed loop
	if err := p.mark(); err != nil {
		t.Fatal(err)
	}
	start := c
	var got uint64
	for range 5 {
		n, err := p.recv(perIter)
		if err != nil {
			t.Fatal(err)
		}
		if n < perIter {
			t.Fatalf("recv(%d) = %d", perIter, n)
		}
		got += n
	}
	if got != c-start {
		t.Fatalf("counted %d frames, the counter moved by %d from the mark to the last reading", got, c-start)
	}
}

// TestRecvDropsThatGoBackFail checks that a drop counter that fell over
// the timed loop fails the benchmark, where the difference of the two
// readings would be reported as 2^64 drops.
func TestRecvDropsThatGoBackFail(t *testing.T) {
	d := uint64(1000)
	r, ok := testenv.BenchOnce(t, func(b *testing.B) {
		measureRecv(b, idleFeeder{}, recvPath{
			recv: func(n uint64) (uint64, error) { return n, nil },
			drops: func() uint64 {
				d -= 10
				return d
			},
			stop: func() {},
		})
	})
	if ok {
		t.Fatalf("benchmark passed, reporting %v drops", r.Extra["drops"])
	}
}
