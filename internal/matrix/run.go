package matrix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Cell statuses.
const (
	StatusOK          = "ok"
	StatusUnavailable = "unavailable"
	StatusFailed      = "failed"
)

// Cell is one topology × path × mode × size, with its runs and their
// summary.
type Cell struct {
	Topology string `json:"topology"`
	Path     string `json:"path"`
	Mode     string `json:"mode"`
	Size     int    `json:"size"`
	// Status is ok (at least one run measured), unavailable (the
	// machine cannot have it; Reason says why) or failed (Reason holds
	// the errors).
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Generator says what produced the traffic.
	Generator string `json:"generator,omitempty"`
	// XDP is the XDP attach mode of the AF_XDP socket's program
	// ("native", "generic"), Bind its bind mode ("copy", "zero-copy").
	XDP  string `json:"xdp,omitempty"`
	Bind string `json:"bind,omitempty"`
	// CounterXDP is the attach mode of tx's counting program on B.
	CounterXDP string `json:"counter_xdp,omitempty"`

	Runs   []Sample `json:"runs,omitempty"`
	Errors []string `json:"errors,omitempty"`

	// Summary over the runs: medians, and the spread of PPS.
	PPS       float64 `json:"pps"`
	PPSMin    float64 `json:"pps_min"`
	PPSMax    float64 `json:"pps_max"`
	Gbps      float64 `json:"gbps"`
	AppNs     float64 `json:"app_ns_per_pkt"`
	SoftirqNs float64 `json:"softirq_ns_per_pkt"`
	KernelNs  float64 `json:"kernel_ns_per_pkt"`
	P50       float64 `json:"p50_us,omitempty"`
	P99       float64 `json:"p99_us,omitempty"`
	P999      float64 `json:"p999_us,omitempty"`
	P99Min    float64 `json:"p99_us_min,omitempty"`
	P99Max    float64 `json:"p99_us_max,omitempty"`
	// LossPct is lost packets over sent, over all runs, in percent.
	LossPct float64 `json:"loss_pct"`
	// Drops sums the drop counters over the runs.
	Drops map[string]uint64 `json:"drops,omitempty"`

	// SenderBound is set on an rx cell whose limit was on the sending
	// side: every run lost nothing and took in what was offered. On veth
	// (pktgen) and ptp that side also does the kernel's receive or
	// forwarding work for the topology, so the rate is still what the
	// topology let through, and the cell is compared like any other; only
	// the comparisons across paths, which are about receivers, leave it
	// out. Its CPU per packet is that of a receiver not kept busy.
	SenderBound bool `json:"sender_bound,omitempty"`
	// SenderBoundRuns is how many of its runs were sender-bound.
	SenderBoundRuns int `json:"sender_bound_runs,omitempty"`

	// Penalty against the cell of the same path, mode and size on the
	// baseline topology; nil when there is none to compare with
	// (NoPenalty says why).
	Penalty   *Penalty `json:"penalty,omitempty"`
	NoPenalty string   `json:"no_penalty,omitempty"`
}

// Penalty compares a cell with the same path on the baseline topology.
type Penalty struct {
	// Against is the cell compared with, as topology/path.
	Against string `json:"against"`
	// PPSPct is the change in packet rate, in percent (negative: slower).
	PPSPct float64 `json:"pps_pct"`
	// CPUPct is the change in the measured thread's CPU per packet (app),
	// in percent.
	CPUPct float64 `json:"cpu_pct"`
	// P50Us and P99Us are the added round-trip time in microseconds (rr).
	P50Us float64 `json:"p50_us,omitempty"`
	P99Us float64 `json:"p99_us,omitempty"`
}

// TopologyInfo says how a topology was built and whether it could be.
type TopologyInfo struct {
	Name      string `json:"name"`
	How       string `json:"how"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// Result is a whole matrix run.
type Result struct {
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Kernel   string         `json:"kernel"`
	CPUs     int            `json:"cpus"`
	CPUModel string         `json:"cpu_model,omitempty"`
	Command  string         `json:"command"`
	Config   ResultConfig   `json:"config"`
	Topos    []TopologyInfo `json:"topologies"`
	Cells    []*Cell        `json:"cells"`
	// CPUsAllowed are the CPUs the run could use; with two or more, the
	// generator and sending threads run on the first and the receiving
	// ones on the second (see WriteMarkdown).
	CPUsAllowed []int `json:"cpus_allowed,omitempty"`
	// Interrupted is set when the run was stopped before the end.
	Interrupted bool `json:"interrupted,omitempty"`
	// TeardownErrors are the failures to remove what a topology was built
	// of: something may be left behind.
	TeardownErrors []string `json:"teardown_errors,omitempty"`
}

// ResultConfig is the configuration as recorded.
type ResultConfig struct {
	Topologies []string `json:"topologies"`
	Paths      []string `json:"paths"`
	Modes      []string `json:"modes"`
	Sizes      []int    `json:"sizes"`
	Duration   string   `json:"duration"`
	Runs       int      `json:"runs"`
	Rate       int      `json:"rate"`
	// Baseline is the baseline topology. Results written before it was
	// a topology have "topology/path" here; the path is ignored.
	Baseline string `json:"baseline"`
}

// Cell returns the cell, or nil.
func (r *Result) Cell(topology, path, mode string, size int) *Cell {
	for _, c := range r.Cells {
		if c.Topology == topology && c.Path == path && c.Mode == mode && c.Size == size {
			return c
		}
	}
	return nil
}

// Progress is reported before and after each measurement.
type Progress struct {
	Done, Total int
	Run, Runs   int
	Topology    string
	Path, Mode  string
	Size        int
	// Phase is "build", "measure", "done" or "skip".
	Phase string
	// Last is the sample just taken (Phase "done"), Err its error.
	Last *Sample
	Err  error
}

// Run measures the matrix c describes. It returns the result so far (with
// Interrupted set) together with ctx's error when ctx ends early; a cell
// that fails is recorded in the result, not returned as an error. Every
// namespace, link, XDP program and socket it makes is gone when it
// returns.
func Run(ctx context.Context, c Config, progress func(Progress)) (*Result, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	res := &Result{
		Started:  time.Now(),
		Kernel:   kernelRelease(),
		CPUs:     runtime.NumCPU(),
		CPUModel: cpuModel(),
		// The same list pinThread and the generator pin by.
		CPUsAllowed: allowedCPUs(),
		Config: ResultConfig{
			Topologies: c.Topologies, Paths: c.Paths, Modes: c.Modes, Sizes: c.Sizes,
			Duration: c.Duration.String(), Runs: c.Runs, Rate: c.Rate, Baseline: c.Baseline,
		},
	}
	for _, t := range c.Topologies {
		res.Topos = append(res.Topos, TopologyInfo{Name: t, How: topologyDoc[t], Available: true})
		for _, p := range c.Paths {
			for _, m := range c.Modes {
				for _, s := range c.Sizes {
					res.Cells = append(res.Cells, &Cell{Topology: t, Path: p, Mode: m, Size: s})
				}
			}
		}
	}
	m := &measurer{cfg: c}
	perTopo := len(c.Paths) * len(c.Modes) * len(c.Sizes)
	total := len(c.Topologies) * perTopo * c.Runs
	done := 0
	var runErr error
outer:
	for run := 0; run < c.Runs; run++ {
		// Alternate the order, so that drift (a warming machine, a
		// neighbour's load) does not always favour the same cells.
		topos, paths := slices.Clone(c.Topologies), slices.Clone(c.Paths)
		if run%2 == 1 {
			slices.Reverse(topos)
			slices.Reverse(paths)
		}
		for _, tn := range topos {
			if err := ctx.Err(); err != nil {
				runErr = err
				break outer
			}
			info := &res.Topos[slices.IndexFunc(res.Topos, func(i TopologyInfo) bool { return i.Name == tn })]
			if !info.Available {
				done += perTopo
				progress(Progress{Done: done, Total: total, Run: run + 1, Runs: c.Runs, Topology: tn, Phase: "skip"})
				continue
			}
			progress(Progress{Done: done, Total: total, Run: run + 1, Runs: c.Runs, Topology: tn, Phase: "build"})
			t, err := build(ctx, tn, c.PluginDir)
			if err == nil && testHookBuilt != nil {
				testHookBuilt(t)
			}
			var te *teardownError
			if errors.As(err, &te) {
				res.teardownFailed(run, tn, te.err)
			}
			if err != nil {
				var ue *UnavailableError
				if errors.As(err, &ue) {
					info.Available, info.Reason = false, ue.Reason
					for _, cell := range res.Cells {
						if cell.Topology == tn {
							cell.Status, cell.Reason = StatusUnavailable, ue.Reason
						}
					}
				} else {
					if ctx.Err() != nil {
						runErr = ctx.Err()
						break outer
					}
					for _, cell := range res.Cells {
						if cell.Topology == tn {
							cell.Errors = append(cell.Errors, fmt.Sprintf("run %d: %v", run+1, err))
						}
					}
				}
				done += perTopo
				progress(Progress{Done: done, Total: total, Run: run + 1, Runs: c.Runs, Topology: tn, Phase: "skip", Err: err})
				continue
			}
			for _, p := range paths {
				for _, mode := range c.Modes {
					for _, size := range c.Sizes {
						if err := ctx.Err(); err != nil {
							runErr = err
							break
						}
						cell := res.Cell(tn, p, mode, size)
						progress(Progress{Done: done, Total: total, Run: run + 1, Runs: c.Runs, Topology: tn, Path: p, Mode: mode, Size: size, Phase: "measure"})
						s, ci, err := m.measure(ctx, t, p, mode, size)
						done++
						if ci.Generator != "" {
							cell.Generator, cell.XDP, cell.Bind, cell.CounterXDP = ci.Generator, ci.XDP, ci.Bind, ci.Counter
						}
						if err != nil {
							if ctx.Err() != nil {
								runErr = ctx.Err()
								break
							}
							cell.Errors = append(cell.Errors, fmt.Sprintf("run %d: %v", run+1, err))
							progress(Progress{Done: done, Total: total, Run: run + 1, Runs: c.Runs, Topology: tn, Path: p, Mode: mode, Size: size, Phase: "done", Err: err})
							continue
						}
						cell.Runs = append(cell.Runs, s)
						progress(Progress{Done: done, Total: total, Run: run + 1, Runs: c.Runs, Topology: tn, Path: p, Mode: mode, Size: size, Phase: "done", Last: &s})
					}
					if runErr != nil {
						break
					}
				}
				if runErr != nil {
					break
				}
			}
			res.closeTopo(run, tn, t)
			if runErr != nil {
				break outer
			}
		}
	}
	res.Finished = time.Now()
	res.Interrupted = runErr != nil
	summarize(res, c)
	return res, runErr
}

// testHookBuilt, when set by a test, sees every topology once it is built.
var testHookBuilt func(*topo)

// closeTopo removes t, built for run, recording a failure to.
func (r *Result) closeTopo(run int, tn string, t *topo) {
	if err := t.Close(); err != nil {
		r.teardownFailed(run, tn, err)
	}
}

// teardownFailed records that removing topology tn after run failed: the
// run as a whole has failed, since something may be left behind.
func (r *Result) teardownFailed(run int, tn string, err error) {
	r.TeardownErrors = append(r.TeardownErrors, fmt.Sprintf("run %d: tear down %s: %v", run+1, tn, err))
}

// Failed reports whether the run failed: a cell failed, or tearing a
// topology down did.
func (r *Result) Failed() bool {
	if len(r.TeardownErrors) > 0 {
		return true
	}
	for _, c := range r.Cells {
		if c.Status == StatusFailed {
			return true
		}
	}
	return false
}

// Summarize recomputes each cell's summary and penalty from its runs, as
// Run does at the end: for a result read back from JSON, after a change
// of Config.Baseline, say. Call Check first on a result read back.
func (r *Result) Summarize() { summarize(r, Config{Baseline: r.Config.Baseline}) }

// Check checks a result read back from JSON before it is summarized or
// written, naming what is wrong: a result that Run did not write, or that
// was edited, must not make the writers panic.
func (r *Result) Check() error {
	var errs []error
	list := func(field string, got, known []string) {
		if len(got) == 0 {
			errs = append(errs, fmt.Errorf("config.%s: empty", field))
		}
		for _, g := range got {
			if !slices.Contains(known, g) {
				errs = append(errs, fmt.Errorf("config.%s %q: unknown", field, g))
			}
		}
	}
	list("topologies", r.Config.Topologies, Topologies)
	list("paths", r.Config.Paths, Paths)
	list("modes", r.Config.Modes, Modes)
	if len(r.Config.Sizes) == 0 {
		errs = append(errs, errors.New("config.sizes: empty"))
	}
	for _, s := range r.Config.Sizes {
		if s < MinSize || s > MaxSize {
			errs = append(errs, fmt.Errorf("config.sizes %d: not a frame size", s))
		}
	}
	if err := CheckBaseline(baselineTopology(r.Config.Baseline), r.Config.Topologies); err != nil {
		errs = append(errs, fmt.Errorf("config.baseline %w", err))
	}
	for i, t := range r.Topos {
		if !slices.Contains(r.Config.Topologies, t.Name) {
			errs = append(errs, fmt.Errorf("topologies[%d] %q: not among config.topologies", i, t.Name))
		}
	}
	if len(r.Cells) == 0 {
		errs = append(errs, errors.New("cells: none"))
	}
	seen := map[string]bool{}
	for i, c := range r.Cells {
		if c == nil {
			errs = append(errs, fmt.Errorf("cells[%d]: null", i))
			continue
		}
		key := fmt.Sprintf("%s/%s/%s/%d", c.Topology, c.Path, c.Mode, c.Size)
		switch {
		case !slices.Contains(r.Config.Topologies, c.Topology), !slices.Contains(r.Config.Paths, c.Path),
			!slices.Contains(r.Config.Modes, c.Mode), !slices.Contains(r.Config.Sizes, c.Size):
			errs = append(errs, fmt.Errorf("cells[%d] %s: not a cell of config", i, key))
		case seen[key]:
			errs = append(errs, fmt.Errorf("cells[%d] %s: given twice", i, key))
		}
		seen[key] = true
		switch c.Status {
		case StatusOK, StatusFailed, StatusUnavailable, "":
		default:
			errs = append(errs, fmt.Errorf("cells[%d] %s: status %q unknown", i, key, c.Status))
		}
	}
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("and %d more", len(errs)-10))
	}
	return errors.Join(errs...)
}

// baselineTopology is the topology of a baseline as recorded: results
// written before the baseline became a topology have "topology/path".
func baselineTopology(b string) string {
	t, _, _ := strings.Cut(b, "/")
	return t
}

// senderBound reports whether run s of an rx cell left its receiver idle
// part of the time: it lost nothing and took in what was offered. A run
// that lost even a few frames found its receiver behind at times; a cell
// is sender-bound only if all its runs are.
func senderBound(s Sample) bool {
	return s.Sent > 0 && s.Lost == 0 && s.PPS >= 0.97*s.OfferedPPS
}

// summarize fills each cell's status, medians and penalty.
func summarize(res *Result, c Config) {
	for _, cell := range res.Cells {
		cell.Penalty, cell.SenderBound, cell.SenderBoundRuns = nil, false, 0
		if cell.Status == StatusUnavailable {
			continue
		}
		cell.Drops = nil
		if len(cell.Runs) == 0 {
			cell.Status = StatusFailed
			cell.Reason = strings.Join(cell.Errors, "; ")
			if cell.Reason == "" {
				cell.Reason = "not measured (interrupted)"
			}
			continue
		}
		cell.Status = StatusOK
		if cell.Mode == "rx" {
			n := 0
			for _, s := range cell.Runs {
				if senderBound(s) {
					n++
				}
			}
			cell.SenderBound, cell.SenderBoundRuns = n == len(cell.Runs), n
		}
		col := func(f func(Sample) float64) []float64 {
			v := make([]float64, len(cell.Runs))
			for i, s := range cell.Runs {
				v[i] = f(s)
			}
			return v
		}
		pps := col(func(s Sample) float64 { return s.PPS })
		cell.PPS, cell.PPSMin, cell.PPSMax = median(pps), slices.Min(pps), slices.Max(pps)
		cell.Gbps = cell.PPS * float64(cell.Size) * 8 / 1e9
		cell.AppNs = median(col(func(s Sample) float64 { return s.AppNs }))
		cell.SoftirqNs = median(col(func(s Sample) float64 { return s.SoftirqNs }))
		cell.KernelNs = median(col(func(s Sample) float64 { return s.KernelNs }))
		if cell.Mode == "rr" {
			cell.P50 = median(col(func(s Sample) float64 { return s.P50 }))
			p99 := col(func(s Sample) float64 { return s.P99 })
			cell.P99, cell.P99Min, cell.P99Max = median(p99), slices.Min(p99), slices.Max(p99)
			cell.P999 = median(col(func(s Sample) float64 { return s.P999 }))
		}
		var sent, lost uint64
		for _, s := range cell.Runs {
			sent += s.Sent
			lost += s.Lost
			for k, v := range s.Drops {
				if cell.Drops == nil {
					cell.Drops = map[string]uint64{}
				}
				cell.Drops[k] += v
			}
		}
		cell.LossPct = 0
		if sent > 0 {
			cell.LossPct = 100 * float64(lost) / float64(sent)
		}
	}
	// Each cell against the same path on the baseline topology: what the
	// topology costs that path. Comparing paths is another question (see
	// the findings), not a topology's penalty.
	bt := baselineTopology(c.Baseline)
	for _, cell := range res.Cells {
		cell.NoPenalty = ""
		if cell.Status != StatusOK {
			continue
		}
		against := bt + "/" + cell.Path
		base := res.Cell(bt, cell.Path, cell.Mode, cell.Size)
		switch {
		case bt == "":
			cell.NoPenalty = "no baseline"
			continue
		case base == nil || base.Status != StatusOK:
			cell.NoPenalty = against + " not measured"
			continue
		case cell.Mode != "rr" && base.PPS <= 0:
			// A change against nothing is no number: "0%" would say
			// the cell matched it.
			cell.NoPenalty = against + " got nothing through"
			continue
		}
		p := &Penalty{Against: against}
		if base.PPS > 0 {
			p.PPSPct = 100 * (cell.PPS/base.PPS - 1)
		}
		// The measured thread's CPU only: /proc/stat's machine-wide
		// ticks are too coarse (and too shared) to divide by.
		if base.AppNs > 0 {
			p.CPUPct = 100 * (cell.AppNs/base.AppNs - 1)
		}
		if cell.Mode == "rr" {
			p.P50Us = cell.P50 - base.P50
			p.P99Us = cell.P99 - base.P99
		}
		cell.Penalty = p
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
