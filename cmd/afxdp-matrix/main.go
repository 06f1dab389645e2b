// Command afxdp-matrix measures the penalty matrix: what a veth pair, CNI's
// ptp, a Linux bridge, macvlan, ipvlan (where the kernel has it) and a
// VXLAN overlay cost a container, with kernel UDP sockets, AF_PACKET and
// AF_XDP, for receive, transmit and request/response, on the kernel it
// runs on.
//
// Between two network namespaces standing for two containers it builds
// each topology the way orchestrators do (the CNI reference plugins where
// one exists), measures every cell several times in alternating order, and
// prints the medians, their spread, CPU per packet, round-trip
// percentiles, drops and where they happened, and the change against the
// same path on a baseline topology (default: veth, or the first topology
// of -topologies when veth is not among them). It can write the result as
// JSON, Markdown and an SVG chart, or all three as a docs page.
//
// It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF), Linux 5.18 or
// later (BPF_PROG_RUN live frames), and the CNI reference plugins in
// /usr/lib/cni (Debian: containernetworking-plugins) for ptp, bridge,
// macvlan and ipvlan. Everything lives in anonymous network namespaces,
// and the plugins' IPAM stores in TMPDIR are removed with their topology:
// nothing is left behind, also after Ctrl-C (however often pressed) or a
// failure. Only SIGKILL leaves the IPAM stores (afxdp-cni-ipam-*).
//
//	go run ./cmd/afxdp-matrix                # full run, a few minutes
//	go run ./cmd/afxdp-matrix -quick         # every cell once, seconds
//	go run ./cmd/afxdp-matrix -docs docs     # regenerate docs/penalty-matrix.*
//	go run ./cmd/afxdp-matrix -topologies macvlan,ipvlan-l2 -paths afxdp -modes rr
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/matrix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usageHead = `usage: afxdp-matrix [flags]

Measures what veth, ptp, bridge, macvlan, ipvlan (where the kernel has it)
and VXLAN cost a container, with kernel UDP sockets, AF_PACKET and AF_XDP.
Needs root.

Topologies: %s
Paths:      %s
Modes:      rx (B receives what a generator sends), tx (A sends, B counts),
            rr (A's client sends requests at -rate to an echo in B)

Flags:
`

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("afxdp-matrix", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usageHead, strings.Join(matrix.Topologies, ", "), strings.Join(matrix.Paths, ", "))
		fs.PrintDefaults()
	}
	def := matrix.DefaultConfig()
	var (
		quick    = fs.Bool("quick", false, "every cell once, 64-byte frames, 150ms (for CI); other flags given explicitly still apply")
		topos    = fs.String("topologies", "all", "comma-separated topologies, or all")
		paths    = fs.String("paths", "all", "comma-separated paths, or all")
		modes    = fs.String("modes", "all", "comma-separated modes (rx, tx, rr), or all")
		sizes    = fs.String("sizes", "64,1500", "comma-separated frame sizes in bytes, FCS included (RFC 2544), 64 to 1518, each once")
		duration = fs.Duration("duration", def.Duration, "length of one measurement")
		runs     = fs.Int("runs", def.Runs, "measurements per cell; runs alternate the order")
		rate     = fs.Int("rate", def.Rate, "rr request rate, packets per second")
		baseline = fs.String("baseline", def.Baseline, "the topology the penalty columns compare with, each cell against the same path on it (with -render: recompute against it)")
		jsonOut  = fs.String("json", "", "write the result as JSON to this file (- for stdout; the table then goes to stderr)")
		mdOut    = fs.String("md", "", "write the result as Markdown to this file")
		svgOut   = fs.String("svg", "", "write the chart as SVG to this file")
		docs     = fs.String("docs", "", "write DIR/penalty-matrix.md, .svg and .json")
		quiet    = fs.Bool("q", false, "no progress display")
		table    = fs.Bool("table", true, "print the table when done")
		cniDir   = fs.String("cni-dir", "", "directory of the CNI plugins (default /usr/lib/cni, where missing plugins make their topologies unavailable; a directory given here must hold them)")
		render   = fs.String("render", "", "measure nothing: read a result written by -json (or -docs) and write the table and files from it")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "afxdp-matrix: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fail := func(err error) int {
		fmt.Fprintf(stderr, "afxdp-matrix: %v\n", err)
		return 2
	}

	outs := outputs{json: *jsonOut, md: *mdOut, svg: *svgOut, docs: *docs}
	tableOut, err := outs.tableWriter(stdout, stderr)
	if err != nil {
		return fail(err)
	}
	if *render != "" {
		// Only what shapes the output applies to a saved result.
		for _, f := range measuringFlags {
			if set[f] {
				return fail(fmt.Errorf("-render: -%s is about measuring; it does not apply to a saved result", f))
			}
		}
		if err := outs.check(); err != nil {
			return fail(err)
		}
		b := ""
		if set["baseline"] {
			if *baseline == "" {
				return fail(errors.New(`-baseline "": name a topology, such as veth`))
			}
			b = *baseline
		}
		return output(stdout, tableOut, stderr, *render, b, *table, outs)
	}

	cfg := def
	if *quick {
		cfg = matrix.QuickConfig()
	}
	if cfg.Topologies, err = matrix.ParseList("topologies", *topos, matrix.Topologies); err != nil {
		return fail(err)
	}
	if cfg.Paths, err = matrix.ParseList("paths", *paths, matrix.Paths); err != nil {
		return fail(err)
	}
	if cfg.Modes, err = matrix.ParseList("modes", *modes, matrix.Modes); err != nil {
		return fail(err)
	}
	if !*quick || set["sizes"] {
		if cfg.Sizes, err = parseSizes(*sizes); err != nil {
			return fail(err)
		}
	}
	if !*quick || set["duration"] {
		cfg.Duration = *duration
	}
	if !*quick || set["runs"] {
		cfg.Runs = *runs
	}
	cfg.Rate = *rate
	cfg.Baseline = *baseline
	if set["baseline"] {
		if *baseline == "" {
			return fail(errors.New(`-baseline "": name a topology, such as veth`))
		}
		if err := matrix.CheckBaseline(*baseline, cfg.Topologies); err != nil {
			return fail(fmt.Errorf("-baseline %w", err))
		}
	} else if !contains(cfg.Topologies, def.Baseline) {
		// The default baseline follows what is measured when veth is
		// left out.
		cfg.Baseline = cfg.Topologies[0]
	}
	if set["cni-dir"] && *cniDir != "" {
		// A directory given by name must be right: a wrong one would
		// turn every CNI topology into "not installed" data.
		if err := matrix.CheckPluginDir(*cniDir, cfg.Topologies); err != nil {
			return fail(fmt.Errorf("-cni-dir %w", err))
		}
		cfg.PluginDir = *cniDir
	}
	// Named by the flags that set them: the user typed -duration, not
	// Duration. A duration -quick chose is said to be -quick's.
	if err := cfg.ValidateNamed(func(field string) string {
		if field == "Duration" && *quick && !set["duration"] {
			return "-quick's duration"
		}
		if f := flagOf[field]; f != "" {
			return "-" + f
		}
		return ""
	}); err != nil {
		return fail(err)
	}
	// Before measuring: a run of minutes must not end in an output path
	// it cannot write.
	if err := outs.check(); err != nil {
		return fail(err)
	}
	if os.Geteuid() != 0 {
		return fail(errors.New("needs root (network namespaces, XDP, BPF)"))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		// Every signal is caught until the end: what the run made on disk
		// (the CNI plugins' IPAM stores in TMPDIR) is removed only by the
		// process itself, so a second Ctrl-C does not kill it.
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-sigs:
			}
			if n == 1 {
				cancel()
				if !*quiet {
					fmt.Fprintln(stderr, "\nafxdp-matrix: interrupted; stopping the current measurement and removing everything it made")
				}
				continue
			}
			fmt.Fprintln(stderr, "afxdp-matrix: still removing what it made (a second or two); SIGKILL would leave the CNI IPAM stores in TMPDIR")
		}
	}()

	var prog func(matrix.Progress)
	if !*quiet {
		prog = newProgress(stderr).show
	}
	res, runErr := matrix.Run(ctx, cfg, prog)
	if res == nil {
		return fail(runErr)
	}
	res.Command = command(args)
	if *table {
		res.WriteText(tableOut)
	}
	if runErr != nil {
		// An interrupted run writes no files: half a matrix should not
		// replace a whole one.
		return stopped(res, runErr, stderr)
	}
	if err := outs.write(res, stdout); err != nil {
		fmt.Fprintf(stderr, "afxdp-matrix: write results: %v\n", err)
		return 1
	}
	return verdict(res, stderr)
}

// flagOf is the flag that sets each field of matrix.Config, for its
// errors.
var flagOf = map[string]string{
	"Topologies": "topologies", "Paths": "paths", "Modes": "modes", "Sizes": "sizes",
	"Duration": "duration", "Runs": "runs", "Rate": "rate", "Baseline": "baseline", "PluginDir": "cni-dir",
}

// measuringFlags are the flags that say what to measure, which -render
// refuses.
var measuringFlags = []string{"quick", "topologies", "paths", "modes", "sizes", "duration", "runs", "rate", "cni-dir", "q"}

// stopped reports a run that ended early, truthfully about what it left.
func stopped(res *matrix.Result, runErr error, stderr io.Writer) int {
	left := "every namespace, link, XDP program, process and IPAM store it made is gone, nothing was left behind"
	if len(res.TeardownErrors) > 0 {
		left = "tearing down failed, something may be left behind: " + strings.Join(res.TeardownErrors, "; ")
	}
	if errors.Is(runErr, context.Canceled) {
		fmt.Fprintf(stderr, "afxdp-matrix: interrupted; %s\n", left)
		return 130
	}
	fmt.Fprintf(stderr, "afxdp-matrix: %v; %s\n", runErr, left)
	return 1
}

// verdict is the exit code of a finished run: 1 when a cell failed or a
// topology could not be torn down.
func verdict(res *matrix.Result, stderr io.Writer) int {
	code := 0
	if len(res.TeardownErrors) > 0 {
		code = 1
		fmt.Fprintf(stderr, "afxdp-matrix: tearing down failed, something may be left behind: %s\n", strings.Join(res.TeardownErrors, "; "))
	}
	if slices.ContainsFunc(res.Cells, func(c *matrix.Cell) bool { return c.Status == matrix.StatusFailed }) {
		code = 1
		fmt.Fprintln(stderr, "afxdp-matrix: some cells failed; see the table")
	}
	return code
}

// outputs are the files the flags asked for.
type outputs struct {
	json, md, svg, docs string
}

// tableWriter is where the table goes: stdout, unless a file is written
// to stdout ("-"); then stderr, so that stdout holds that file alone.
func (o outputs) tableWriter(stdout, stderr io.Writer) (io.Writer, error) {
	var dash []string
	for _, f := range []struct{ flag, v string }{{"json", o.json}, {"md", o.md}, {"svg", o.svg}} {
		if f.v == "-" {
			dash = append(dash, "-"+f.flag)
		}
	}
	if o.docs == "-" {
		return nil, errors.New("-docs -: a directory, not stdout")
	}
	switch len(dash) {
	case 0:
		return stdout, nil
	case 1:
		return stderr, nil
	}
	return nil, fmt.Errorf("%s: only one of them may write to stdout (-)", strings.Join(dash, " and "))
}

// files are the files the outputs write, by flag, in the order written.
func (o outputs) files() []struct{ flag, name string } {
	var fs []struct{ flag, name string }
	for _, f := range []struct{ flag, v string }{{"json", o.json}, {"md", o.md}, {"svg", o.svg}} {
		if f.v != "" && f.v != "-" {
			fs = append(fs, struct{ flag, name string }{"-" + f.flag, f.v})
		}
	}
	if o.docs != "" {
		for _, n := range docsFiles {
			fs = append(fs, struct{ flag, name string }{"-docs", filepath.Join(o.docs, n)})
		}
	}
	return fs
}

// check makes sure every output can be written, before anything is
// measured: no two write the same file, its directory exists (-docs is
// made) and takes a new file, and an existing file is a file.
func (o outputs) check() error {
	var errs []error
	seen := map[string]string{}
	for _, f := range o.files() {
		abs, err := filepath.Abs(f.name)
		if err != nil {
			return fmt.Errorf("%s %s: %w", f.flag, f.name, err)
		}
		if prev, ok := seen[abs]; ok {
			errs = append(errs, fmt.Errorf("%s and %s write the same file, %s: only the last would be left", prev, f.flag, f.name))
			continue
		}
		seen[abs] = f.flag
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, f := range []struct{ flag, v string }{{"json", o.json}, {"md", o.md}, {"svg", o.svg}} {
		if f.v == "" || f.v == "-" {
			continue
		}
		if err := checkWritable(f.v); err != nil {
			errs = append(errs, fmt.Errorf("-%s %w", f.flag, err))
		}
	}
	if o.docs != "" {
		err := os.MkdirAll(o.docs, 0o755)
		for _, n := range docsFiles {
			if err != nil {
				break
			}
			err = checkWritable(filepath.Join(o.docs, n))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("-docs %w", err))
		}
	}
	return errors.Join(errs...)
}

var docsFiles = []string{"penalty-matrix.json", "penalty-matrix.svg", "penalty-matrix.md"}

// checkWritable checks that name can be written as write writes it: a new
// file in its directory, renamed over name. It leaves nothing behind.
func checkWritable(name string) error {
	if fi, err := os.Stat(name); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: exists and is not a regular file", name)
	}
	f, err := os.CreateTemp(filepath.Dir(name), ".afxdp-matrix-*")
	if err != nil {
		return fmt.Errorf("%s: cannot write there: %w", name, err)
	}
	return errors.Join(f.Close(), os.Remove(f.Name()))
}

// write writes the outputs that flags asked for; each file is written
// whole or not at all (a new file renamed over the old).
func (o outputs) write(res *matrix.Result, stdout io.Writer) error {
	write := func(name string, f func(io.Writer) error) error {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			return err
		}
		if name == "-" {
			_, err := stdout.Write(b.Bytes())
			return err
		}
		return writeFile(name, b.Bytes())
	}
	// The page written by -md links the chart and the JSON where this
	// run writes them (-svg and -json, else -docs), and none it does not.
	link := func(from, name, docsName string) string {
		if name == "" || name == "-" {
			if o.docs == "" {
				return ""
			}
			name = filepath.Join(o.docs, docsName)
		}
		if rel, err := relPath(filepath.Dir(from), name); err == nil {
			return rel
		}
		return ""
	}
	md := func(w io.Writer) error {
		return res.WriteMarkdown(w, link(o.md, o.svg, "penalty-matrix.svg"), link(o.md, o.json, "penalty-matrix.json"))
	}
	docsMD := func(w io.Writer) error { return res.WriteMarkdown(w, "penalty-matrix.svg", "penalty-matrix.json") }
	var errs []error
	if o.json != "" {
		errs = append(errs, write(o.json, res.WriteJSON))
	}
	if o.md != "" {
		errs = append(errs, write(o.md, md))
	}
	if o.svg != "" {
		errs = append(errs, write(o.svg, res.WriteSVG))
	}
	if o.docs != "" {
		if err := os.MkdirAll(o.docs, 0o755); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs,
				write(filepath.Join(o.docs, "penalty-matrix.json"), res.WriteJSON),
				write(filepath.Join(o.docs, "penalty-matrix.svg"), res.WriteSVG),
				write(filepath.Join(o.docs, "penalty-matrix.md"), docsMD))
		}
	}
	return errors.Join(errs...)
}

// relPath is target relative to directory dir, with forward slashes, as
// a Markdown link wants it.
func relPath(dir, target string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	t, err := filepath.Abs(target)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(d, t)
	if err != nil {
		return "", err
	}
	return filepath.ToSlash(rel), nil
}

func writeFile(name string, b []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), ".afxdp-matrix-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// output renders a saved result; baseline, unless "", replaces its
// baseline topology.
func output(stdout, tableOut, stderr io.Writer, from, baseline string, table bool, outs outputs) int {
	b, err := os.ReadFile(from)
	if err != nil {
		fmt.Fprintf(stderr, "afxdp-matrix: -render: %v\n", err)
		return 2
	}
	var res matrix.Result
	if err := json.Unmarshal(b, &res); err != nil {
		fmt.Fprintf(stderr, "afxdp-matrix: -render %s: %v\n", from, err)
		return 2
	}
	if err := res.Check(); err != nil {
		fmt.Fprintf(stderr, "afxdp-matrix: -render %s: not a result of afxdp-matrix: %s\n", from, strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	if baseline != "" {
		if err := matrix.CheckBaseline(baseline, res.Config.Topologies); err != nil {
			fmt.Fprintf(stderr, "afxdp-matrix: -baseline %v (in %s)\n", err, from)
			return 2
		}
		res.Config.Baseline = baseline
	}
	res.Summarize()
	if table {
		res.WriteText(tableOut)
	}
	if err := outs.write(&res, stdout); err != nil {
		fmt.Fprintf(stderr, "afxdp-matrix: write results: %v\n", err)
		return 1
	}
	return 0
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func parseSizes(v string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("-sizes %q: not a number", s)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("-sizes %s: %d given twice; each size is measured once", v, n)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("-sizes: empty")
	}
	return out, nil
}

// command is the command line as someone would type it to get the same
// run.
func command(args []string) string {
	q := make([]string, 0, len(args)+1)
	q = append(q, "afxdp-matrix")
	for _, a := range args {
		if !shellSafe(a) {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q = append(q, a)
	}
	return strings.Join(q, " ")
}

// shellSafe reports whether a shell reads a as the one word a, unquoted:
// not empty (an empty word vanishes, and the next one takes its place),
// and of characters no shell gives a meaning (not # ; & | < > ( ) * ?
// [ ] ~ { } ! \ ` and the like).
func shellSafe(a string) bool {
	if a == "" {
		return false
	}
	for _, r := range a {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-_./,:=+@%", r):
		default:
			return false
		}
	}
	return true
}

// progress shows the run as it goes: one line rewritten in place on a
// terminal, a line per finished cell elsewhere.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) show(e matrix.Progress) {
	pct := 0
	if e.Total > 0 {
		pct = 100 * e.Done / e.Total
	}
	el := time.Since(p.start).Truncate(time.Second)
	head := fmt.Sprintf("[%3d%% %d/%d run %d/%d %v]", pct, e.Done, e.Total, e.Run, e.Runs, el)
	var msg string
	switch e.Phase {
	case "build":
		msg = fmt.Sprintf("%s building %s", head, e.Topology)
	case "skip":
		msg = fmt.Sprintf("%s %s: %v", head, e.Topology, e.Err)
	case "measure":
		msg = fmt.Sprintf("%s %s %s %s %dB ...", head, e.Topology, e.Path, e.Mode, e.Size)
	case "done":
		msg = fmt.Sprintf("%s %s %s %s %dB: ", head, e.Topology, e.Path, e.Mode, e.Size)
		switch {
		case e.Err != nil:
			msg += "FAILED: " + e.Err.Error()
		case e.Mode == "rr":
			msg += fmt.Sprintf("p50 %.0fµs p99 %.0fµs p99.9 %.0fµs, %d/%d answered", e.Last.P50, e.Last.P99, e.Last.P999, e.Last.Received, e.Last.Sent)
		default:
			msg += fmt.Sprintf("%.3f Mpps, %.0f ns/pkt app, %.0f ns/pkt softirq, lost %d of %d",
				e.Last.PPS/1e6, e.Last.AppNs, e.Last.SoftirqNs, e.Last.Lost, e.Last.Sent)
		}
	}
	if p.tty {
		if e.Phase == "done" && e.Err == nil || e.Phase == "build" || e.Phase == "measure" {
			fmt.Fprintf(p.w, "\r\033[K%s", trim(msg, 160))
			return
		}
		fmt.Fprintf(p.w, "\r\033[K%s\n", msg)
		return
	}
	if e.Phase == "done" || e.Phase == "skip" {
		fmt.Fprintln(p.w, msg)
	}
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
