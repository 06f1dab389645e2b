package matrix

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

var pathColor = map[string]string{"udp": "#8c8c8c", "afpacket": "#e6a23c", "afxdp": "#2f7ed8"}

// WriteSVG draws the matrix at the first frame size: a panel per mode, a
// group of bars per topology, a bar per path with a whisker from the
// slowest to the fastest run. It uses nothing but Go's standard library.
func (r *Result) WriteSVG(w io.Writer) error {
	size := r.Config.Sizes[0]
	const (
		width  = 960
		left   = 110
		right  = 150
		barH   = 13
		gap    = 10
		top    = 70
		panelG = 50
	)
	plotW := float64(width - left - right)
	groupH := len(r.Config.Paths)*barH + gap
	panelH := len(r.Topos)*groupH + 30
	height := top + len(r.Config.Modes)*(panelH+panelG) + 20

	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="24" font-size="17" font-weight="bold">What the topology costs a container: %d-byte frames</text>`+"\n", left, size)
	p(`<text x="%d" y="44" fill="#555">Linux %s, %d CPUs; median of %d runs of %s, whiskers from slowest to fastest run; pale: limited on the sending side</text>`+"\n",
		left, esc(r.Kernel), r.CPUs, r.Config.Runs, esc(r.Config.Duration))
	// Legend.
	for i, pa := range r.Config.Paths {
		x := width - right + 20
		y := top + i*18
		p(`<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", x, y, pathColor[pa], x+18, y+10, esc(pa))
	}
	y0 := top
	for _, m := range r.Config.Modes {
		title := map[string]string{
			"rx": "receive: packets per second B takes in",
			"tx": "transmit: packets per second A gets across",
			"rr": fmt.Sprintf("request/response at %d/s: p99 round trip, µs (shorter is better)", r.Config.Rate),
		}[m]
		p(`<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", left, y0+14, esc(title))
		// Scale.
		maxV := 0.0
		for _, c := range r.Cells {
			if c.Mode == m && c.Size == size && c.Status == StatusOK {
				maxV = math.Max(maxV, barMax(c))
			}
		}
		if maxV == 0 {
			maxV = 1
		}
		maxV = niceCeil(maxV)
		py := y0 + 24
		for i := 0; i <= 4; i++ {
			v := maxV * float64(i) / 4
			x := float64(left) + plotW*float64(i)/4
			p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e5e5e5"/>`+"\n", x, py, x, py+len(r.Topos)*groupH)
			p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#777">%s</text>`+"\n", x, py+len(r.Topos)*groupH+14, axisLabel(m, v))
		}
		for ti, t := range r.Topos {
			gy := py + ti*groupH
			p(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, gy+len(r.Config.Paths)*barH/2+4, esc(t.Name))
			if !t.Available {
				p(`<text x="%d" y="%d" fill="#b00">%s</text>`+"\n", left+6, gy+len(r.Config.Paths)*barH/2+4, esc(t.Reason))
				continue
			}
			for pi, pa := range r.Config.Paths {
				c := r.Cell(t.Name, pa, m, size)
				by := gy + pi*barH
				if c == nil {
					continue
				}
				if c.Status != StatusOK {
					p(`<text x="%d" y="%d" fill="#b00" font-size="10">%s: %s</text>`+"\n", left+6, by+10, esc(pa), esc(c.value()))
					continue
				}
				v, lo, hi := c.PPS, c.PPSMin, c.PPSMax
				label := fmtRate(c.PPS)
				opacity := 1.0
				if c.SenderBound {
					// Pale: B was not the limit.
					label, opacity = label+"*", 0.35
				}
				if m == "rr" {
					v, lo, hi = c.P99, c.P99Min, c.P99Max
					label = fmt.Sprintf("%.0f µs", c.P99)
				}
				bw := plotW * v / maxV
				p(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="%.2f"><title>%s</title></rect>`+"\n",
					left, by+1, bw, barH-2, pathColor[pa], opacity, esc(fmt.Sprintf("%s %s %s: %s", t.Name, pa, m, c.value())))
				if hi > lo {
					x1, x2 := float64(left)+plotW*lo/maxV, float64(left)+plotW*hi/maxV
					cy := by + barH/2
					p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`+"\n", x1, cy, x2, cy)
					p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/><line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222"/>`+"\n",
						x1, by+3, x1, by+barH-3, x2, by+3, x2, by+barH-3)
				}
				tx := float64(left) + math.Max(bw, plotW*hi/maxV) + 4
				p(`<text x="%.1f" y="%d" font-size="10" fill="#333">%s</text>`+"\n", tx, by+10, esc(label))
			}
		}
		y0 += panelH + panelG
	}
	p("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func barMax(c *Cell) float64 {
	if c.Mode == "rr" {
		return math.Max(c.P99, c.P99Max)
	}
	return math.Max(c.PPS, c.PPSMax)
}

func axisLabel(mode string, v float64) string {
	if mode == "rr" {
		return fmt.Sprintf("%.0f µs", v)
	}
	return fmtRate(v)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 4, 5, 10} {
		if v <= m*e {
			return m * e
		}
	}
	return 10 * e
}

func esc(s string) string { return html.EscapeString(s) }
