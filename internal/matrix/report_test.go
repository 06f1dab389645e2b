package matrix

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestWriteTextAligned renders a result with topologies the kernel lacks
// and a failed cell, and checks that in both terminal tables every cell
// starts where its column's heading does, below the unavailable rows as
// above them.
func TestWriteTextAligned(t *testing.T) {
	const why = "not available: kernel built without CONFIG_IPVLAN"
	res := &Result{
		Config: ResultConfig{Topologies: []string{"veth", "ipvlan-l2", "ipvlan-l3", "vxlan"}, Paths: []string{"udp", "afxdp"},
			Modes: []string{"rx", "rr"}, Sizes: []int{64}, Baseline: "veth", Runs: 1, Duration: "1s"},
		Topos: []TopologyInfo{{Name: "veth", Available: true}, {Name: "ipvlan-l2", Reason: why}, {Name: "ipvlan-l3", Reason: why}, {Name: "vxlan", Available: true}},
	}
	for _, tn := range res.Config.Topologies {
		for _, p := range res.Config.Paths {
			for _, m := range res.Config.Modes {
				c := &Cell{Topology: tn, Path: p, Mode: m, Size: 64}
				switch {
				case strings.HasPrefix(tn, "ipvlan"):
					c.Status, c.Reason = StatusUnavailable, why
				case tn == "vxlan" && p == "afxdp" && m == "rr":
					c.Errors = []string{"run 1: no afxdp reply from B within 3s"}
				default:
					c.Runs = []Sample{{PPS: 1234567, OfferedPPS: 2e6, Sent: 100, Received: 90, Lost: 10, AppNs: 300, P50: 20, P99: 40, P999: 80}}
				}
				res.Cells = append(res.Cells, c)
			}
		}
	}
	res.Summarize()
	var out bytes.Buffer
	if err := res.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	tables := 0
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "topology ") {
			continue
		}
		tables++
		cols := cellStarts(lines[i])
		last := cols[len(cols)-1]
		rows := 0
		for i++; i < len(lines) && lines[i] != ""; i++ {
			rows++
			for _, p := range cellStarts(lines[i]) {
				// Past the last heading is a row's trailing reason.
				if p <= last && !slices.Contains(cols, p) {
					t.Errorf("a cell at column %d, where no heading starts (headings at %v):\n%s\n%s", p, cols, lines[i], text)
				}
			}
		}
		if rows != len(res.Topos) && rows != len(res.Cells) {
			t.Errorf("table with %d rows, want %d or %d", rows, len(res.Topos), len(res.Cells))
		}
	}
	if tables != 2 {
		t.Fatalf("%d tables, want the summary and the cells:\n%s", tables, text)
	}
	for _, tn := range []string{"ipvlan-l2", "ipvlan-l3"} {
		if !strings.Contains(text, tn) || strings.Count(text, why) < 2 {
			t.Errorf("%s: the summary does not say why it is missing:\n%s", tn, text)
		}
	}
}

// cellStarts are the rune positions where the cells of a table line
// start: the first, and each one after two spaces or more (tabwriter's
// padding; cells hold single spaces at most).
func cellStarts(line string) []int {
	r := []rune(line)
	var out []int
	for p := range r {
		if r[p] != ' ' && (p == 0 || p >= 2 && r[p-1] == ' ' && r[p-2] == ' ') {
			out = append(out, p)
		}
	}
	return out
}

// TestPartlyFailedCell: a cell with one run failed and one measured is
// ok, from the one run; the tables and the Markdown page say that the
// other failed, so that a flaky cell is not read as a sound one.
func TestPartlyFailedCell(t *testing.T) {
	res := &Result{
		Config: ResultConfig{Topologies: []string{"veth"}, Paths: []string{"udp"},
			Modes: []string{"rx", "rr"}, Sizes: []int{64}, Baseline: "veth", Runs: 2, Duration: "1s"},
		Topos: []TopologyInfo{{Name: "veth", Available: true}},
	}
	for _, m := range res.Config.Modes {
		res.Cells = append(res.Cells, &Cell{Topology: "veth", Path: "udp", Mode: m, Size: 64,
			Runs:   []Sample{{PPS: 1234567, Sent: 100, Received: 100, P50: 20, P99: 40, P999: 80}},
			Errors: []string{"run 2: B counted 101 packets, more than the 100 sent"}})
	}
	res.Summarize()
	var text, md bytes.Buffer
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := res.WriteMarkdown(&md, "", ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Cells {
		if c.Status != StatusOK {
			t.Fatalf("%s/%s: status %s, want ok from its one measured run", c.Path, c.Mode, c.Status)
		}
	}
	const want = "(1 of 2 runs failed)"
	if n := strings.Count(text.String(), want); n != 4 {
		t.Errorf("terminal output says %q %d times, want 4 (two cells, two tables):\n%s", want, n, text.String())
	}
	if !strings.Contains(md.String(), want) {
		t.Errorf("Markdown does not say %q:\n%s", want, md.String())
	}
}

// TestUnavailableReasonNotBlamedOnKernel: a topology left out because its
// CNI plugin is not installed is not said to be missing from the kernel;
// the page says what is unavailable and why, as the result has it.
func TestUnavailableReasonNotBlamedOnKernel(t *testing.T) {
	const why = "not available: CNI plugin macvlan not installed (containernetworking-plugins)"
	res := &Result{
		Config: ResultConfig{Topologies: []string{"veth", "macvlan"}, Paths: []string{"udp"}, Modes: []string{"rx"},
			Sizes: []int{64}, Baseline: "veth", Runs: 1, Duration: "1s"},
		Topos: []TopologyInfo{{Name: "veth", Available: true}, {Name: "macvlan", Reason: why}},
		Cells: []*Cell{
			{Topology: "veth", Path: "udp", Mode: "rx", Size: 64, Runs: []Sample{{PPS: 1e5, OfferedPPS: 2e5, Sent: 100, Received: 50, Lost: 50}}},
			{Topology: "macvlan", Path: "udp", Mode: "rx", Size: 64, Status: StatusUnavailable, Reason: why},
		},
	}
	res.Summarize()
	var md bytes.Buffer
	if err := res.WriteMarkdown(&md, "", ""); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(md.String(), "\n") {
		if strings.Contains(l, "macvlan (") && strings.Contains(strings.ToLower(l), "kernel") {
			t.Errorf("blames the kernel for a missing plugin: %s", l)
		}
	}
	if !strings.Contains(md.String(), "macvlan ("+why+")") {
		t.Errorf("the page does not give the reason %q:\n%s", why, md.String())
	}
}
