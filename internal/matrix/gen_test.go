package matrix

import (
	"context"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/testenv"
)

// TestRxOfferedInWindow measures rx cells whose window is shorter than
// one of pktgen's calls of 4096 frames, and checks that each run's offered
// rate is one the generator can have had: above zero, since it sent all
// along, and no more than all it sent in the window's time. The offered
// rate used to be the generator's count read at the window's two ends,
// which moves a whole call at a time: 0 when no call ended inside the
// window (beside a received rate of 200000/s), and a whole call over the
// window when one did.
func TestRxOfferedInWindow(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	m := &measurer{cfg: Config{Warmup: 2 * time.Second, Duration: 10 * time.Millisecond}}
	for run := range 6 {
		s, _, err := m.rx(context.Background(), tp, "afpacket", 64)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("run %d: received %.0f/s, offered %.0f/s, lost %d of %d", run, s.PPS, s.OfferedPPS, s.Lost, s.Sent)
		if most := float64(s.Sent) / s.Seconds; !(s.OfferedPPS > 0 && s.OfferedPPS <= most) {
			t.Errorf("run %d: offered %.0f/s while the generator sent all along, %d frames in all (at most %.0f/s over the %v window)",
				run, s.OfferedPPS, s.Sent, most, time.Duration(s.Seconds*float64(time.Second)))
		}
	}
}

// TestGeneratorRate: the offered rate comes from the marks that enclose
// the window, where the count is exact, not from counts read inside it.
func TestGeneratorRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	g := &generator{}
	// 4096 frames every 40 ms: 102400 frames a second.
	for i := range 6 {
		g.marks = append(g.marks, genMark{at(40 * i), uint64(4096 * i)})
	}
	for _, tc := range []struct {
		from, to int
		want     float64
	}{
		{50, 60, 102400},  // inside one call: marks 40 and 80
		{40, 120, 102400}, // on marks
		{0, 500, 102400},  // past the last mark: up to it
		{-10, 5, 102400},  // before the first
	} {
		if got := g.rate(at(tc.from), at(tc.to)); got < tc.want*0.999 || got > tc.want*1.001 {
			t.Errorf("rate(%d ms, %d ms) = %.0f, want %.0f", tc.from, tc.to, got, tc.want)
		}
	}
	if got := (&generator{marks: g.marks[:1]}).rate(at(0), at(10)); got != 0 {
		t.Errorf("rate with one mark = %v, want 0", got)
	}
}
