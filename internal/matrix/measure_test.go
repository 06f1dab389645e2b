package matrix

import (
	"testing"
)

// TestRankNearest: the q-quantile of N sorted samples is the sample of
// rank ceil(q*N), counting from 1, as the nearest-rank method defines it;
// a product that floating point puts a hair above a whole number
// (0.99*100 and the like) is that whole number.
func TestRankNearest(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		q    float64
		rank uint64
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
		{3, 0, 1},           // the smallest
		{3, 1, 3},           // the largest
	} {
		if got := rank(tc.q, tc.n); got != tc.rank {
			t.Errorf("rank(q=%v, N=%d) = %d, want %d", tc.q, tc.n, got, tc.rank)
		}
	}
	// Against the definition for every N up to 5000, with q as a whole
	// number of thousandths so that q*N is exact in integers.
	for _, milli := range []uint64{500, 990, 999} {
		q := float64(milli) / 1000
		for n := uint64(1); n <= 5000; n++ {
			want := (milli*n + 999) / 1000 // ceil(milli*n/1000)
			if got := rank(q, n); got != want {
				t.Fatalf("rank(q=%v, N=%d) = %d, want %d", q, n, got, want)
			}
		}
	}
}
