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
func (idleFeeder) Rate() float64                { return 0 }

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
