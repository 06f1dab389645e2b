package matrix

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/testenv"
)

// checkBucket checks that v falls in its bucket, that the bucket is no
// wider than 1/2048 of v (one nanosecond below 4096 ns), and that the
// buckets on either side end and begin where it does.
func checkBucket(t *testing.T, v uint64) {
	t.Helper()
	i := histIndex(v)
	if i < 0 || i >= histBuckets {
		t.Fatalf("histIndex(%d) = %d, outside 0..%d", v, i, histBuckets-1)
	}
	lo, hi := histBounds(i)
	if v < lo || v > hi {
		t.Fatalf("%d ns: bucket %d holds %d..%d", v, i, lo, hi)
	}
	if w := hi - lo + 1; v < 1<<histExact && w != 1 || v >= 1<<histExact && w<<(histExact-1) > v {
		t.Fatalf("%d ns: bucket %d is %d ns wide (%d..%d), more than 1/2048 of it", v, i, w, lo, hi)
	}
	if i > 0 {
		if _, prev := histBounds(i - 1); prev+1 != lo {
			t.Fatalf("bucket %d ends at %d, bucket %d begins at %d", i-1, prev, i, lo)
		}
	}
}

// TestRTTHistBuckets: every time up to the longest counted falls in a
// bucket that holds it, no wider than 1/2048 of it, the buckets tile
// the times without gap or overlap, and the last bucket ends at the
// longest time.
func TestRTTHistBuckets(t *testing.T) {
	for v := range uint64(1 << (histExact + 2)) {
		checkBucket(t, v)
	}
	for b := histExact; b <= histMax; b++ {
		for _, d := range []int64{-2, -1, 0, 1} {
			if v := int64(1)<<b + d; v < 1<<histMax {
				checkBucket(t, uint64(v))
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		checkBucket(t, r.Uint64N(1<<histMax))
	}
	if i := histIndex(1<<histMax - 1); i != histBuckets-1 {
		t.Errorf("the longest time is in bucket %d, want the last, %d", i, histBuckets-1)
	}
	for i := range histBuckets {
		lo, hi := histBounds(i)
		if histIndex(lo) != i || histIndex(hi) != i {
			t.Fatalf("bucket %d holds %d..%d, but they index %d and %d", i, lo, hi, histIndex(lo), histIndex(hi))
		}
	}
}

func FuzzRTTHistBucket(f *testing.F) {
	for _, v := range []uint64{0, 1, 4095, 4096, 8191, 8192, 1e6, 1<<histMax - 1} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v uint64) {
		checkBucket(t, v%(1<<histMax))
	})
}

// TestRTTHistPercentiles: the histogram's percentiles are those of the
// sorted samples by nearest rank: exact below 4096 ns, within 1/4096 of
// the sample above; times out of range count as the nearest in range.
func TestRTTHistPercentiles(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name string
		n    int
		gen  func() time.Duration
	}{
		{"exact range", 50000, func() time.Duration { return time.Duration(r.IntN(1 << histExact)) }},
		{"microseconds", 200000, func() time.Duration { return time.Duration(5000 + r.IntN(40000)) }},
		{"long tail", 200000, func() time.Duration {
			d := time.Duration(8000 + r.IntN(4000))
			if r.IntN(500) == 0 {
				d += time.Duration(r.Int64N(int64(20 * time.Millisecond)))
			}
			return d
		}},
		{"few", 7, func() time.Duration { return time.Duration(r.Int64N(int64(time.Second))) }},
	} {
		h := new(rttHist)
		samples := make([]time.Duration, tc.n)
		for i := range samples {
			samples[i] = tc.gen()
			h.add(samples[i])
		}
		slices.Sort(samples)
		for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
			want := samples[rank(q, uint64(len(samples)))-1]
			got := time.Duration(h.pct(q) * 1e3)
			tol := want >> histExact // half a bucket
			if d := got - want; d < -tol-1 || d > tol+1 {
				t.Errorf("%s: p%v = %v, want %v (±%v)", tc.name, 100*q, got, want, tol)
			}
		}
	}
	h := new(rttHist)
	h.add(-time.Microsecond)
	h.add(time.Duration(1) << 62)
	if got := h.pct(0); got != 0 {
		t.Errorf("a negative time counts as %v µs, want 0", got)
	}
	if lo, _ := histBounds(histBuckets - 1); h.pct(1) < float64(lo)/1e3 {
		t.Errorf("a time past the longest counts as %v µs, want the last bucket's", h.pct(1))
	}
	if got := new(rttHist).pct(0.5); got != 0 {
		t.Errorf("an empty histogram's p50 = %v, want 0", got)
	}
}

// TestRRMemoryDoesNotGrowWithRate: what an rr run allocates does not
// grow with its rate times its duration. rr used to make room for every
// round trip it might time before it sent the first: 8 bytes each, 4.8 GB
// at 1000000/s for 10 minutes. Here the run is at 1000000/s for 10 s (80
// MB of room, the old way), stopped as its window opens.
func TestRRMemoryDoesNotGrowWithRate(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := &measurer{cfg: Config{Warmup: 2 * time.Second, Duration: 10 * time.Second, Rate: 1_000_000}}
	m.read = func() (reading, error) {
		cancel() // stop the run where its window opens
		return readNow()
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := m.rr(ctx, tp, "udp", 64)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("rr stopped at the window's start: %v, want %v", err, context.Canceled)
	}
	const most = 8 << 20
	if got := after.TotalAlloc - before.TotalAlloc; got > most {
		t.Errorf("rr at %d/s for %v allocated %d bytes, more than %d", m.cfg.Rate, m.cfg.Duration, got, most)
	}
}
