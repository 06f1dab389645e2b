// Command afxdp-matrix measures the penalty matrix: what a veth pair, a
// Linux bridge, macvlan, ipvlan and a VXLAN overlay cost a container, with
// kernel UDP sockets, AF_PACKET and AF_XDP, for receive, transmit and
// request/response, on the kernel it runs on.
//
// Between two network namespaces standing for two containers it builds
// each topology the way orchestrators do (the CNI reference plugins where
// one exists), measures every cell several times in alternating order, and
// prints the medians, their spread, CPU per packet, round-trip
// percentiles, drops and where they happened, and the change against a
// baseline cell (default: veth with AF_XDP). It can write the result as
// JSON, Markdown and an SVG chart, or all three as a docs page.
//
// It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF), Linux 5.18 or
// later (BPF_PROG_RUN live frames), and the CNI reference plugins in
// /usr/lib/cni (Debian: containernetworking-plugins) for ptp, bridge,
// macvlan and ipvlan. Everything lives in anonymous network namespaces:
// nothing is left behind, also after Ctrl-C or a failure.
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

Measures what veth, bridge, macvlan, ipvlan and VXLAN cost a container, with
kernel UDP sockets, AF_PACKET and AF_XDP. Needs root.

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
		sizes    = fs.String("sizes", "64,1500", "comma-separated frame sizes in bytes, FCS included (RFC 2544), 64 to 1518")
		duration = fs.Duration("duration", def.Duration, "length of one measurement")
		runs     = fs.Int("runs", def.Runs, "measurements per cell; runs alternate the order")
		rate     = fs.Int("rate", def.Rate, "rr request rate, packets per second")
		baseline = fs.String("baseline", def.Baseline, "the topology/path the penalty columns compare with")
		jsonOut  = fs.String("json", "", "write the result as JSON to this file (- for stdout)")
		mdOut    = fs.String("md", "", "write the result as Markdown to this file")
		svgOut   = fs.String("svg", "", "write the chart as SVG to this file")
		docs     = fs.String("docs", "", "write DIR/penalty-matrix.md, .svg and .json")
		quiet    = fs.Bool("q", false, "no progress display")
		table    = fs.Bool("table", true, "print the table when done")
		cniDir   = fs.String("cni-dir", "", "directory of the CNI plugins (default /usr/lib/cni)")
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

	cfg := def
	if *quick {
		cfg = matrix.QuickConfig()
	}
	var err error
	fail := func(err error) int {
		fmt.Fprintf(stderr, "afxdp-matrix: %v\n", err)
		return 2
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
	cfg.PluginDir = *cniDir
	if !set["baseline"] {
		// The default baseline follows what is measured when veth or
		// afxdp is left out.
		cfg.Baseline = cfg.Topologies[0] + "/" + cfg.Paths[len(cfg.Paths)-1]
		if contains(cfg.Topologies, "veth") && contains(cfg.Paths, "afxdp") {
			cfg.Baseline = def.Baseline
		}
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}

	if *render != "" {
		return output(stdout, stderr, *render, *table, *jsonOut, *mdOut, *svgOut, *docs)
	}
	if os.Geteuid() != 0 {
		return fail(errors.New("needs root (network namespaces, XDP, BPF)"))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once; the namespaces die with the process
		if !*quiet {
			fmt.Fprintln(stderr, "\nafxdp-matrix: interrupted; finishing the current measurement and removing everything")
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
		res.WriteText(stdout)
	}
	code := 0
	if runErr != nil {
		code = 130
		if errors.Is(runErr, context.Canceled) {
			fmt.Fprintln(stderr, "afxdp-matrix: interrupted; every namespace, link, XDP program and process it made is gone, nothing was left behind")
		} else {
			code = 1
			fmt.Fprintf(stderr, "afxdp-matrix: %v; nothing was left behind\n", runErr)
		}
		// An interrupted run writes no files: half a matrix should not
		// replace a whole one.
		return code
	}
	if err := writeFiles(res, stdout, *jsonOut, *mdOut, *svgOut, *docs); err != nil {
		fmt.Fprintf(stderr, "afxdp-matrix: write results: %v\n", err)
		return 1
	}
	for _, c := range res.Cells {
		if c.Status == matrix.StatusFailed {
			code = 1
		}
	}
	if code != 0 {
		fmt.Fprintln(stderr, "afxdp-matrix: some cells failed; see the table")
	}
	return code
}

// writeFiles writes the outputs that flags asked for.
func writeFiles(res *matrix.Result, stdout io.Writer, jsonOut, mdOut, svgOut, docs string) error {
	write := func(name string, f func(io.Writer) error) error {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			return err
		}
		if name == "-" {
			_, err := stdout.Write(b.Bytes())
			return err
		}
		return os.WriteFile(name, b.Bytes(), 0o644)
	}
	var errs []error
	if jsonOut != "" {
		errs = append(errs, write(jsonOut, res.WriteJSON))
	}
	if mdOut != "" {
		errs = append(errs, write(mdOut, func(w io.Writer) error { return res.WriteMarkdown(w, "penalty-matrix.svg") }))
	}
	if svgOut != "" {
		errs = append(errs, write(svgOut, res.WriteSVG))
	}
	if docs != "" {
		if err := os.MkdirAll(docs, 0o755); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs,
				write(filepath.Join(docs, "penalty-matrix.json"), res.WriteJSON),
				write(filepath.Join(docs, "penalty-matrix.svg"), res.WriteSVG),
				write(filepath.Join(docs, "penalty-matrix.md"), func(w io.Writer) error { return res.WriteMarkdown(w, "penalty-matrix.svg") }))
		}
	}
	return errors.Join(errs...)
}

// output renders a saved result.
func output(stdout, stderr io.Writer, from string, table bool, jsonOut, mdOut, svgOut, docs string) int {
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
	if len(res.Config.Sizes) == 0 || len(res.Cells) == 0 {
		fmt.Fprintf(stderr, "afxdp-matrix: -render %s: not a result of afxdp-matrix\n", from)
		return 2
	}
	res.Summarize()
	if table {
		res.WriteText(stdout)
	}
	if err := writeFiles(&res, stdout, jsonOut, mdOut, svgOut, docs); err != nil {
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
		if strings.ContainsAny(a, " \t'\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q = append(q, a)
	}
	return strings.Join(q, " ")
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
