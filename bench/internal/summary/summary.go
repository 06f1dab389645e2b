// Package summary is the JSON that bench/cmd/compare writes with -json and
// bench/cmd/results reads to fill RESULTS.md: one definition, so that the
// two cannot drift apart.
package summary

import (
	"fmt"
	"slices"
)

// Summary is one contender's medians over its trials.
type Summary struct {
	Name, Group                 string
	Mpps, Min, Max, OfferedMpps float64
	Drops, RxRingFull           float64
	CPUPerMpkt                  float64
	Trials                      int
	// Rounds is the rate of each round's trial, in Mpps, in round order.
	Rounds []float64 `json:",omitempty"`
}

// Paired compares a and b round by round: contenders alternate within a
// round, so a round's two trials ran minutes apart at most, and the ratio
// of the two is free of the machine's slower drift from round to round.
// It returns the median, smallest and largest of the per-round ratios
// a/b, and an error when the two do not have the same rounds or b
// measured nothing in one of them.
func Paired(a, b Summary) (med, lo, hi float64, err error) {
	if len(a.Rounds) == 0 || len(a.Rounds) != len(b.Rounds) {
		return 0, 0, 0, fmt.Errorf("%q has %d rounds and %q %d: need the same number, above 0",
			a.Name, len(a.Rounds), b.Name, len(b.Rounds))
	}
	r := make([]float64, len(a.Rounds))
	for i := range r {
		if b.Rounds[i] <= 0 {
			return 0, 0, 0, fmt.Errorf("%q measured %v Mpps in round %d", b.Name, b.Rounds[i], i+1)
		}
		r[i] = a.Rounds[i] / b.Rounds[i]
	}
	slices.Sort(r)
	med = r[len(r)/2]
	if len(r)%2 == 0 {
		med = (r[len(r)/2-1] + r[len(r)/2]) / 2
	}
	return med, r[0], r[len(r)-1], nil
}
