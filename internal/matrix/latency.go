package matrix

import (
	"math"
	"math/bits"
	"time"
)

// rttHist counts round-trip times in the same memory however many it
// counts (a run at 1000000/s for 10 minutes has 600 million): times below
// 4096 ns exactly, longer ones in buckets 1/2048 of their time wide (2048
// to an octave), up to 2^40 ns (18 minutes, longer than any run; longer
// times count as that). A percentile is the bucket that holds the sample
// of its nearest rank among all those counted, reported at the bucket's
// middle: within 1/4096 of that sample. It is not safe for concurrent use.
type rttHist struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	// histExact is how many significant bits a bucket keeps: times below
	// 1<<histExact ns each have their own.
	histExact = 12
	// histMax is the bit length of the longest time counted.
	histMax = 40
	// histBuckets: the exact ones, then 1<<(histExact-1) for each bit
	// length from histExact+1 to histMax.
	histBuckets = (histMax - histExact + 2) << (histExact - 1)
)

// histIndex is the bucket of v nanoseconds, 0 <= v < 1<<histMax.
func histIndex(v uint64) int {
	if v < 1<<histExact {
		return int(v)
	}
	shift := bits.Len64(v) - histExact // at least 1
	return shift<<(histExact-1) + int(v>>shift)
}

// histBounds are the least and the greatest time in bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < 1<<histExact {
		return uint64(i), uint64(i)
	}
	shift := i>>(histExact-1) - 1
	m := uint64(i - shift<<(histExact-1))
	return m << shift, (m+1)<<shift - 1
}

// add counts one round trip of d.
func (h *rttHist) add(d time.Duration) {
	v := uint64(max(d, 0))
	v = min(v, 1<<histMax-1)
	h.counts[histIndex(v)]++
	h.n++
}

// pct is the q-quantile in microseconds, by nearest rank (see rank); 0
// when nothing was counted.
func (h *rttHist) pct(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	r := rank(q, h.n)
	var seen uint64
	i := 0
	for ; i < len(h.counts)-1; i++ {
		if seen += h.counts[i]; seen >= r {
			break
		}
	}
	lo, hi := histBounds(i)
	return (float64(lo) + float64(hi-lo)/2) / 1e3
}

// rank is the nearest rank of the q-quantile of n samples: ceil(q*n),
// counting from 1, kept within 1..n. q*n that floating point puts a hair
// off a whole number (0.99*100, 0.999*3000) counts as that number, not as
// the next rank up.
func rank(q float64, n uint64) uint64 {
	x := q * float64(n)
	r := math.Round(x)
	if math.Abs(x-r) > 1e-9*max(1, x) {
		r = math.Ceil(x)
	}
	return uint64(max(1, min(r, float64(n))))
}
