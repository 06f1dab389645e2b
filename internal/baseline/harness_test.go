package baseline_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

// offeredClock is a Receiver that takes every frame asked for at once and
// whose drop counter is the generator's count of frames offered: the drops
// BenchRecv reports are then the frames offered between its two readings
// of Stats.
type offeredClock struct {
	g      *pktgen.Generator
	calls  int
	warmUp func() // run in the first Receive, once the generator runs
	// watch makes Stats wait (up to 5 s) for the generator's count to
	// move on, and record in lastRunning whether it did: whether the
	// generator still ran when Stats was last called.
	watch       bool
	lastTotal   atomic.Uint64
	lastRunning atomic.Bool
}

func (o *offeredClock) Receive(n uint64, deadline time.Time) (baseline.Counts, error) {
	if o.calls++; o.calls == 1 {
		// As a real receiver's first frame would, wait until the
		// generator runs.
		for o.g.Total() == 0 {
			if time.Now().After(deadline) {
				return baseline.Counts{}, nil
			}
			time.Sleep(time.Millisecond)
		}
		if o.warmUp != nil {
			o.warmUp()
		}
	}
	return baseline.Counts{Packets: n, Bytes: n * 64}, nil
}

func (o *offeredClock) Stats() (baseline.Stats, error) {
	t := o.g.Total()
	o.lastTotal.Store(t)
	if o.watch {
		// A running generator's count moves after each BPF_PROG_RUN
		// call, some milliseconds; a stopped one's never does.
		running := false
		for deadline := time.Now().Add(5 * time.Second); !running && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			running = o.g.Total() > t
		}
		o.lastRunning.Store(running)
	}
	return baseline.Stats{Drops: t}, nil
}

func (o *offeredClock) Close() error { return nil }

// TestBenchRecvCountsOverTheLoop checks that BenchRecv reads the
// receiver's drops while the generator still runs, at the end of the timed
// loop: the generator's last call runs to its end after the loop, and what
// it sends then, with nobody receiving, is no drop of the receiver under
// test. And that offered-pps is a rate the generator had, not its frames
// divided by the loop's time (microseconds here).
func TestBenchRecvCountsOverTheLoop(t *testing.T) {
	v, g := genSetup(t, pktgen.Drop)
	r := &offeredClock{g: g, watch: true}
	res, ok := testenv.BenchOnce(t, func(b *testing.B) { baseline.BenchRecv(b, v, g, r) })
	if !ok {
		t.Fatal("BenchRecv failed")
	}
	// Not the last count against the generator's final one: the
	// generator may have just ended a call when BenchRecv stops it,
	// and then start no other.
	if !r.lastRunning.Load() {
		t.Errorf("drops read when the generator had offered %d frames, and it offered none after (all: %d): it had stopped", r.lastTotal.Load(), g.Total())
	}
	// One CPU's BPF_PROG_RUN with XDP_DROP at the peer makes some Mpps;
	// a hundred is far beyond any.
	if o := res.Extra["offered-pps"]; o <= 0 || o > 100e6 {
		t.Errorf("offered-pps %v: not a rate the generator could have had", o)
	}
}

// TestBenchRecvFailsWhenTheGeneratorFails deletes the veth pair under the
// generator: BenchRecv must fail, not report what it measured as if the
// generator had run to the end.
func TestBenchRecvFailsWhenTheGeneratorFails(t *testing.T) {
	v, g := genSetup(t, pktgen.Drop)
	r := &offeredClock{g: g, warmUp: func() {
		if err := v.Close(); err != nil {
			t.Error(err)
		}
		// Returns once BenchRecv's generator has given up the
		// generator, which it does only on failing: its target is gone.
		if _, err := g.Send(1); err == nil {
			t.Error("generator still sends after its target was deleted")
		}
	}}
	if _, ok := testenv.BenchOnce(t, func(b *testing.B) { baseline.BenchRecv(b, v, g, r) }); ok {
		t.Error("BenchRecv passed with a generator that failed")
	}
}
