package summary

import (
	"math"
	"strings"
	"testing"
)

func TestPaired(t *testing.T) {
	a := Summary{Name: "a", Rounds: []float64{3, 2, 4, 1}}
	b := Summary{Name: "b", Rounds: []float64{2, 2, 2, 2}}
	med, lo, hi, err := Paired(a, b)
	if err != nil {
		t.Fatal(err)
	}
	// Ratios 1.5, 1, 2, 0.5: median of the middle two.
	if med != 1.25 || lo != 0.5 || hi != 2 {
		t.Fatalf("Paired = %v, %v, %v; want 1.25, 0.5, 2", med, lo, hi)
	}
	// Round by round, not median by median: a's slow round is b's
	// slow round too.
	a = Summary{Name: "a", Rounds: []float64{1.1, 2.2, 3.3}}
	b = Summary{Name: "b", Rounds: []float64{1, 2, 3}}
	if med, lo, hi, _ = Paired(a, b); math.Abs(med-1.1) > 1e-9 || math.Abs(lo-1.1) > 1e-9 || math.Abs(hi-1.1) > 1e-9 {
		t.Fatalf("Paired = %v, %v, %v; want 1.1 throughout", med, lo, hi)
	}
}

func TestPairedErrors(t *testing.T) {
	for _, tc := range []struct {
		a, b Summary
		want string
	}{
		{Summary{Name: "x", Rounds: []float64{1, 2}}, Summary{Name: "y", Rounds: []float64{1}}, `"x" has 2 rounds and "y" 1`},
		{Summary{Name: "x"}, Summary{Name: "y"}, `"x" has 0 rounds`},
		{Summary{Name: "x", Rounds: []float64{1, 2}}, Summary{Name: "y", Rounds: []float64{1, 0}}, `"y" measured 0 Mpps in round 2`},
	} {
		if _, _, _, err := Paired(tc.a, tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Paired(%v, %v) = %v, want an error with %q", tc.a.Rounds, tc.b.Rounds, err, tc.want)
		}
	}
}
