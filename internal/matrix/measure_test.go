package matrix

import (
	"math"
	"testing"
	"time"
)

// TestPctNearestRank: the q-quantile of N sorted samples is the sample of
// rank ceil(q*N), counting from 1, as the nearest-rank method defines it;
// a product that floating point puts a hair above a whole number
// (0.99*100 and the like) is that whole number.
func TestPctNearestRank(t *testing.T) {
	us := func(n int) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i+1) * time.Microsecond // rank i+1 is i+1 µs
		}
		return s
	}
	for _, tc := range []struct {
		n    int
		q    float64
		rank int
	}{
		{1, 0.5, 1}, {1, 0.99, 1}, {1, 0.999, 1},
		{2, 0.5, 1}, {2, 0.99, 2},
		{3, 0.5, 2}, {4, 0.5, 2}, {5, 0.5, 3},
		{10, 0.5, 5}, {10, 0.99, 10},
		{100, 0.5, 50}, {100, 0.99, 99}, {100, 0.999, 100},
		{160, 0.99, 159}, // 158.4: rounding gives 158
		{1000, 0.99, 990}, {1000, 0.999, 999},
		{1001, 0.5, 501},
		{1010, 0.99, 1000}, // 999.9
		{2000, 0.999, 1998},
		{3000, 0.999, 2997},
		{10000, 0.99, 9900}, {10000, 0.999, 9990},
		{1200, 0.999, 1199}, // 1198.8
		{1250, 0.999, 1249}, // 1248.75
		{1400, 0.999, 1399}, // 1398.6
		{100, 0.07, 7},      // 0.07*100 is 7.000000000000001
	} {
		want := float64(tc.rank)
		if got := pct(us(tc.n), tc.q); got != want {
			t.Errorf("pct(N=%d, q=%v) = sample of rank %v, want rank %v", tc.n, tc.q, got, want)
		}
	}
	// Against the definition for every N up to 5000, with q as a whole
	// number of thousandths so that q*N is exact in integers.
	for _, milli := range []int{500, 990, 999} {
		q := float64(milli) / 1000
		for n := 1; n <= 5000; n++ {
			rank := (milli*n + 999) / 1000 // ceil(milli*n/1000)
			if got := pct(us(n), q); got != float64(rank) {
				t.Fatalf("pct(N=%d, q=%v) = rank %v, want %d", n, q, got, rank)
			}
		}
	}
	if got := pct(us(3), 0); got != 1 || math.IsNaN(got) {
		t.Errorf("pct(q=0) = %v, want the smallest", got)
	}
}
