package matrix

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the result as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func fmtRate(pps float64) string {
	switch {
	case pps >= 1e6:
		return fmt.Sprintf("%.2fM", pps/1e6)
	case pps >= 1e3:
		return fmt.Sprintf("%.0fk", pps/1e3)
	}
	return fmt.Sprintf("%.0f", pps)
}

// fmtSpread is half the range of the runs over the median: of the rate,
// or for rr of the p99.
func fmtSpread(c *Cell) string {
	if len(c.Runs) < 2 {
		return ""
	}
	if c.Mode == "rr" {
		if c.P99 == 0 {
			return ""
		}
		return fmt.Sprintf("±%.0f%%", 50*(c.P99Max-c.P99Min)/c.P99)
	}
	if c.PPS == 0 {
		return ""
	}
	return fmt.Sprintf("±%.0f%%", 50*(c.PPSMax-c.PPSMin)/c.PPS)
}

func fmtPct(v float64) string {
	if v > -0.5 && v < 0.5 {
		return "0%"
	}
	return fmt.Sprintf("%+.0f%%", v)
}

// value is the cell's headline: rate for rx/tx, p99 for rr.
func (c *Cell) value() string {
	switch c.Status {
	case StatusUnavailable:
		return "n/a"
	case StatusFailed:
		return "failed"
	}
	if c.Mode == "rr" {
		return fmt.Sprintf("%.0f/%.0f/%.0fµs", c.P50, c.P99, c.P999) + c.failedRuns()
	}
	if c.SenderBound {
		return fmtRate(c.PPS) + "pps*" + c.failedRuns()
	}
	return fmtRate(c.PPS) + "pps" + c.failedRuns()
}

// failedRuns says how many of a measured cell's runs failed, if any did:
// its median and spread come from the others only.
func (c *Cell) failedRuns() string {
	if len(c.Errors) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d of %d runs failed)", len(c.Errors), len(c.Errors)+len(c.Runs))
}

// penaltyText is the cell against the same path on the baseline topology.
func (c *Cell) penaltyText() string {
	if c.Status != StatusOK {
		return ""
	}
	if c.Penalty == nil {
		if c.NoPenalty != "" {
			return "(" + c.NoPenalty + ")"
		}
		return "(no baseline)"
	}
	if c.Mode == "rr" {
		return fmt.Sprintf("p50 %+.0fµs p99 %+.0fµs", c.Penalty.P50Us, c.Penalty.P99Us)
	}
	return fmt.Sprintf("%s rate, %s app cpu", fmtPct(c.Penalty.PPSPct), fmtPct(c.Penalty.CPUPct))
}

// dropText is the loss and the drop counters that moved. One drop may move
// several counters; those are shown together, as the same drops: an
// AF_XDP socket's rx_dropped counts each frame it had no room for, its
// fill_ring_empty how often that was for want of a fill-ring entry, and
// with native XDP on B's veth, the veth counts the failed redirect of the
// same frame as its rx_dropped. That rx_dropped also counts the frames the
// veth's 256-frame XDP ring had no room for (its NAPI poll fell behind the
// sender), which the sending end counts as its tx_dropped: those are shown
// on their own, and the rx_dropped with the drops it repeats.
func (c *Cell) dropText() string {
	if c.Status != StatusOK {
		return ""
	}
	s := fmt.Sprintf("%.2f%%", c.LossPct)
	rest := maps.Clone(c.Drops)
	var parts []string
	// B's socket (rx, rr's echo), then A's (rr's client).
	for _, side := range []string{"B", "A"} {
		k := xskKeysOf(side)
		xsk := rest[k.dropped] + rest[k.ringFull]
		// What the other side's devices could not hand over: on a veth
		// pair, the frames the socket's end had no ring room for.
		other := map[string]string{"A": "B", "B": "A"}[side]
		var overflow uint64
		var overflowKeys []string
		for _, key := range slices.Sorted(maps.Keys(rest)) {
			if strings.HasPrefix(key, other+"'s ") && strings.HasSuffix(key, " tx_dropped") &&
				!strings.Contains(key, "socket") && !strings.Contains(key, "underlay") {
				overflow += rest[key]
				overflowKeys = append(overflowKeys, key)
			}
		}
		if xsk == 0 && overflow == 0 {
			continue
		}
		var main, same []string
		for _, key := range []string{k.dropped, k.ringFull} {
			if v, ok := rest[key]; ok {
				main = append(main, fmt.Sprintf("%s %d", key, v))
				delete(rest, key)
			}
		}
		if v, ok := rest[k.fillEmpty]; ok && v <= xsk {
			same = append(same, fmt.Sprintf("%s %d", k.fillEmpty, v))
			delete(rest, k.fillEmpty)
		}
		// The socket's own device, when XDP runs there natively; it
		// counts the other end's overflow too.
		usedOverflow := false
		for _, key := range slices.Sorted(maps.Keys(rest)) {
			if strings.HasPrefix(key, side+"'s ") && strings.HasSuffix(key, " rx_dropped") && !strings.Contains(key, "socket") &&
				!strings.Contains(key, "underlay") && rest[key] <= xsk+overflow {
				same = append(same, fmt.Sprintf("%s %d", key, rest[key]))
				usedOverflow = usedOverflow || rest[key] > xsk
				delete(rest, key)
			}
		}
		if usedOverflow || xsk == 0 && len(same) > 0 {
			for _, key := range overflowKeys {
				main = append(main, fmt.Sprintf("%s %d", key, rest[key]))
				delete(rest, key)
			}
		}
		if len(main) == 0 {
			// Only the other end's overflow, not repeated here: listed
			// with the rest.
			continue
		}
		p := strings.Join(main, ", ")
		if len(same) > 0 {
			p += " [the same drops, counted again: " + strings.Join(same, ", ") + "]"
		}
		parts = append(parts, p)
	}
	for _, k := range slices.Sorted(maps.Keys(rest)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, rest[k]))
	}
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, "; ") + ")"
	}
	return s
}

func (c *Cell) xdpText() string {
	switch {
	case c.XDP != "" && c.Bind != "":
		return c.XDP + "/" + c.Bind
	case c.Bind != "":
		return "no prog/" + c.Bind
	}
	return ""
}

// WriteText writes the summary and the full table for a terminal.
func (r *Result) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "kernel %s, %d CPUs %s; %s runs of %s; baseline %s (each cell against the same path on it)\n\n",
		r.Kernel, r.CPUs, r.CPUModel, fmt.Sprint(r.Config.Runs), r.Config.Duration, baselineTopology(r.Config.Baseline))
	if err := r.writeSummary(w, false); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "topology\tpath\tmode\tsize\tresult\tspread\tGbit/s\tapp ns/pkt\tsoftirq ns/pkt\tkernel ns/pkt\tvs "+baselineTopology(r.Config.Baseline)+", same path\tloss (drops)\txdp\tgenerator")
	for _, c := range r.Cells {
		if c.Status != StatusOK {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t\t\t\t\t\t\t\t\t%s\n", c.Topology, c.Path, c.Mode, c.Size, c.value(), oneLine(c.Reason))
			continue
		}
		gb := ""
		if c.Mode != "rr" {
			gb = fmt.Sprintf("%.2f", c.Gbps)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%s\n",
			c.Topology, c.Path, c.Mode, c.Size, c.value(), fmtSpread(c), gb, c.AppNs, c.SoftirqNs, c.KernelNs,
			c.penaltyText(), c.dropText(), c.xdpText(), c.Generator)
	}
	return tw.Flush()
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// writeSummary writes one line per topology: for each path the headline of
// each mode at the first size, with the penalty against the baseline.
func (r *Result) writeSummary(w io.Writer, md bool) error {
	size := r.Config.Sizes[0]
	head := []string{"topology"}
	for _, p := range r.Config.Paths {
		for _, m := range r.Config.Modes {
			head = append(head, fmt.Sprintf("%s %s", p, modeTitle(m)))
		}
	}
	var rows [][]string
	// na is the reason of each row's topology not being available, ""
	// for one that is.
	var na []string
	for _, t := range r.Topos {
		row := []string{t.Name}
		if !t.Available {
			for range head[1:] {
				row = append(row, "n/a")
			}
			rows = append(rows, row)
			na = append(na, cmp.Or(t.Reason, "not available"))
			continue
		}
		na = append(na, "")
		for _, p := range r.Config.Paths {
			for _, m := range r.Config.Modes {
				c := r.Cell(t.Name, p, m, size)
				row = append(row, summaryCell(c))
			}
		}
		rows = append(rows, row)
	}
	if md {
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
		for i, row := range rows {
			if na[i] != "" {
				fmt.Fprintf(w, "| %s — %s |%s\n", row[0], na[i], strings.Repeat(" |", len(head)-1))
				continue
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		return nil
	}
	fmt.Fprintf(w, "%d-byte frames; rx/tx in packets per second, rr as p99 round trip; in brackets the change against the same path on %s; *: limit on the sending side, B took all it was offered:\n", size, baselineTopology(r.Config.Baseline))
	// An unavailable topology's row has a cell in every column, as the
	// others do: tabwriter aligns a column only over consecutive lines
	// that have a cell in it, so a row without them would set the rows
	// below it apart from those above. Its reason follows the last
	// column.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for i, row := range rows {
		line := strings.Join(row, "\t")
		if na[i] != "" {
			line += "\t— " + oneLine(na[i])
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

func modeTitle(m string) string {
	switch m {
	case "rx":
		return "rx"
	case "tx":
		return "tx"
	}
	return "rr p99"
}

func summaryCell(c *Cell) string {
	if c == nil {
		return ""
	}
	switch c.Status {
	case StatusUnavailable:
		return "n/a"
	case StatusFailed:
		return "failed"
	}
	if c.Mode == "rr" {
		s := fmt.Sprintf("%.0fµs", c.P99)
		if c.Penalty != nil {
			s += fmt.Sprintf(" (%+.0f)", c.Penalty.P99Us)
		}
		return s + c.failedRuns()
	}
	s := fmtRate(c.PPS)
	if c.SenderBound {
		s += "*"
	}
	if c.Penalty != nil {
		s += " (" + fmtPct(c.Penalty.PPSPct) + ")"
	}
	return s + c.failedRuns()
}
