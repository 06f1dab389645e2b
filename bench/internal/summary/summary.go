// Package summary is the JSON that bench/cmd/compare writes with -json and
// bench/cmd/results reads to fill RESULTS.md: one definition, so that the
// two cannot drift apart.
package summary

// Summary is one contender's medians over its trials.
type Summary struct {
	Name, Group                 string
	Mpps, Min, Max, OfferedMpps float64
	Drops, RxRingFull           float64
	CPUPerMpkt                  float64
	Trials                      int
}
