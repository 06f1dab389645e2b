// Command results regenerates bench/RESULTS.md: it records the machine
// (kernel, CPU, Go, DPDK), measures how often the receivers' CPU is taken
// from them (bench/cmd/jitter), runs the benchmarks of package bench (through
// benchstat when it can be fetched), runs bench/cmd/compare (afxdp side by
// side with DPDK's testpmd), profiles rxdrop with perf (installing
// linux-perf when missing), and writes the tables
// into the page's template (results.md.tmpl, next to this file) with the
// commands that reproduce them. It builds jitter, compare and the
// benchmarks' test binary first and runs the binaries itself, rather than
// through go run and go test, so that they end with it (see command). It
// builds them in a temporary directory named after its pid
// (afxresPID-RANDOM, in TMPDIR), which holds the go command's work
// directories too (GOTMPDIR); killed outright (SIGKILL), it cannot remove
// that, and the next results does.
//
// One results runs at a time, and no bench/cmd/compare beside it (but the
// one it runs, which it passes its lock to): two at once share the
// machine's CPUs and measure each other. A results started while another
// runs, or while a compare runs, refuses at once, naming it, before it
// makes or runs anything. The lock is flock(2) on /run/afxdp-bench.lock,
// which stays there between runs and which the kernel lets go of when
// its holder dies, however it dies, once the compare it runs, if any, has
// ended too (see bench/cmd/internal/onerun).
//
// It needs root, like the benchmarks. Run it from the module root on an
// otherwise idle machine:
//
//	go run ./bench/cmd/results
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/afxdp/afxdp/bench/cmd/internal/child"
	"github.com/afxdp/afxdp/bench/cmd/internal/onerun"
	"github.com/afxdp/afxdp/bench/cmd/internal/stale"
	"github.com/afxdp/afxdp/bench/internal/summary"
)

//go:embed results.md.tmpl
var page string

var (
	out       = flag.String("o", "bench/RESULTS.md", "file to write")
	count     = flag.Int("count", 6, "go test -count for the benchmarks (benchstat needs 6 for a confidence interval)")
	benchtime = flag.String("benchtime", "1s", "go test -benchtime")
	rounds    = flag.Int("rounds", 5, "compare: rounds")
	dur       = flag.Duration("d", 5*time.Second, "compare: measured time per trial")
	noPerf    = flag.Bool("no-perf", false, "skip the perf profiles")
)

// The ring sizes of compare's afxdp receivers, and of its row with rings
// deep enough to ride out the receiver's stalls; the page quotes them.
const (
	compareRing    = 4096
	compareBigRing = 16384
)

// Summary is one contender's line of bench/cmd/compare's -json output.
type Summary = summary.Summary

type data struct {
	Date, Kernel, CPU, Go, DPDK, Cores string
	BenchCmd, BenchstatCmd, Bench      string
	CompareCmd, Compare                string
	JitterCmd, Jitter                  string
	PerfCmd, PerfRx                    string
	S                                  map[string]Summary
	Generated                          string
}

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "results:", err)
		os.Exit(1)
	}
}

func sh(ctx context.Context, name string, args ...string) (string, error) {
	return shIn(ctx, "", name, args...)
}

// shIn runs a command in dir (empty: the current directory) and returns
// its standard output; its standard error goes to ours. When ctx is done
// (results was interrupted), the command is interrupted too.
func shIn(ctx context.Context, dir, name string, args ...string) (string, error) {
	return shWith(ctx, dir, nil, name, args...)
}

// shWith runs a command as shIn does; setup, if not nil, changes it
// before it starts.
func shWith(ctx context.Context, dir string, setup func(*exec.Cmd), name string, args ...string) (string, error) {
	fmt.Fprintf(os.Stderr, "+ %s %s\n", name, strings.Join(args, " "))
	cmd := command(ctx, name, args...)
	cmd.Dir = dir
	if setup != nil {
		setup(cmd)
	}
	var b bytes.Buffer
	cmd.Stdout = &b
	cmd.Stderr = os.Stderr
	err := child.Start(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%s: interrupted: %w", name, err)
	}
	return b.String(), err
}

// command makes a command that runs in a process group of its own and
// that is interrupted, the whole group with it, when ctx is done: `go
// run` ignores SIGINT and leaves it to the program it built, which a
// signal to go alone would leave running (bench/cmd/compare, with its
// namespace, veth pair and testpmd). A group that is still there a
// minute later loses its leader to SIGKILL.
//
// Started with child.Start, the command gets SIGTERM when results dies
// without the chance to interrupt it (SIGKILL): compare then ends its
// trial and removes what it made, as it does on an interrupt. Only the
// command itself gets that signal, not a program that `go run` or `go
// test` would start in a process of its own: run builds those programs
// and runs them itself.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return nil
	}
	cmd.WaitDelay = time.Minute
	return cmd
}

// goBuild builds the command pkg into dir and returns the binary's path.
func goBuild(ctx context.Context, dir, pkg string) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	if _, err := sh(ctx, "go", "build", "-o", bin, pkg); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	return bin, nil
}

func first(s string, err error) string {
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(s)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// checkFlags refuses flag values that would fail only after the
// jitter, compare and benchmark runs (minutes to an hour), or in the
// middle of them.
func checkFlags() error {
	switch {
	case flag.NArg() > 0:
		return fmt.Errorf("argument %q: results takes flags only", flag.Arg(0))
	case *count < 1:
		return fmt.Errorf("-count %d: must be at least 1", *count)
	case *rounds < 1:
		return fmt.Errorf("-rounds %d: must be at least 1", *rounds)
	case *dur <= 0:
		return fmt.Errorf("-d %v: must be positive", *dur)
	}
	if err := checkBenchtime(*benchtime); err != nil {
		return fmt.Errorf("-benchtime %q: %w", *benchtime, err)
	}
	if fi, err := os.Stat(*out); err == nil && fi.IsDir() {
		return fmt.Errorf("-o %s: is a directory", *out)
	}
	dir := filepath.Dir(*out)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("-o %s: %w", *out, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("-o %s: %s is not a directory", *out, dir)
	}
	return nil
}

// checkBenchtime accepts what go test's -benchtime does: a positive
// duration, or a positive count followed by x.
func checkBenchtime(s string) error {
	if n, ok := strings.CutSuffix(s, "x"); ok {
		if v, err := strconv.Atoi(n); err != nil || v < 1 {
			return errors.New("must be a positive duration or a positive count followed by x")
		}
		return nil
	}
	if d, err := time.ParseDuration(s); err != nil || d <= 0 {
		return errors.New("must be a positive duration or a positive count followed by x")
	}
	return nil
}

func run(ctx context.Context) error {
	if err := checkFlags(); err != nil {
		return err
	}
	// Before anything is made, removed or run, and held to the end: the
	// benchmarks measure as compare does, and compare, which results
	// runs under this lock, removes what dead runs left.
	lock, err := onerun.Acquire("results")
	if err != nil {
		return err
	}
	defer lock.Close()
	removeStale(os.Stderr)
	tmp, err := os.MkdirTemp("", owner.Name()+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// go's own work directories too, which a go command ended by a
	// signal (results' death, see command) leaves behind.
	if err := os.Setenv("GOTMPDIR", tmp); err != nil {
		return err
	}
	d := data{
		Date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Kernel:    first(sh(ctx, "uname", "-r")),
		CPU:       cpuModel(),
		Cores:     first(sh(ctx, "nproc")),
		Go:        first(sh(ctx, "go", "version")),
		DPDK:      first(sh(ctx, "dpkg-query", "-W", "-f", "${Package} ${Version}", "dpdk-dev")),
		Generated: strings.Join(append([]string{"go run ./bench/cmd/results"}, os.Args[1:]...), " "),
	}

	// How often the receivers' CPU is taken away from them, measured
	// while the machine is otherwise idle.
	jitter, err := goBuild(ctx, tmp, "./bench/cmd/jitter")
	if err != nil {
		return err
	}
	jargs := []string{"-cpu", "1", "-d", "10s"}
	d.JitterCmd = "go run ./bench/cmd/jitter " + strings.Join(jargs, " ")
	if d.Jitter, err = sh(ctx, jitter, jargs...); err != nil {
		return fmt.Errorf("jitter: %w", err)
	}

	// The comparison: it installs dpdk-testpmd when missing.
	compare, err := goBuild(ctx, tmp, "./bench/cmd/compare")
	if err != nil {
		return err
	}
	js := filepath.Join(tmp, "compare.json")
	cargs := []string{"-rounds", fmt.Sprint(*rounds), "-d", dur.String(),
		"-ring", fmt.Sprint(compareRing), "-big-ring", fmt.Sprint(compareBigRing), "-v", "-json", js}
	d.CompareCmd = "go run ./bench/cmd/compare " + strings.Join(cargs[:len(cargs)-2], " ")
	// compare refuses to run while another holds the lock: it runs
	// under results'.
	if d.Compare, err = shWith(ctx, "", lock.Pass, compare, cargs...); err != nil {
		return fmt.Errorf("compare: %w", err)
	}
	b, err := os.ReadFile(js)
	if err != nil {
		return err
	}
	var sums []Summary
	if err := json.Unmarshal(b, &sums); err != nil {
		return err
	}
	d.S = map[string]Summary{}
	for _, s := range sums {
		d.S[s.Name] = s
	}
	if d.DPDK == "unknown" {
		d.DPDK = first(sh(ctx, "dpkg-query", "-W", "-f", "${Package} ${Version}", "dpdk-dev"))
	}

	bargs := []string{"-run", "^$", "-bench", ".", "-benchtime", *benchtime, "-count", fmt.Sprint(*count)}
	d.BenchCmd = "go test " + strings.Join(bargs, " ") + " ./bench/"
	// go test's way: in the package's directory, with its default
	// timeout, each flag prefixed with test.
	benchBin := filepath.Join(tmp, "bench.test")
	if _, err := sh(ctx, "go", "test", "-c", "-o", benchBin, "./bench/"); err != nil {
		return fmt.Errorf("build the benchmarks: %w", err)
	}
	targs := []string{"-test.timeout", "10m0s"}
	for i := 0; i < len(bargs); i += 2 {
		targs = append(targs, "-test."+bargs[i][1:], bargs[i+1])
	}
	raw, err := shIn(ctx, "bench", benchBin, targs...)
	if err != nil {
		return fmt.Errorf("benchmarks: %w\n%s", err, raw)
	}
	rawFile := filepath.Join(tmp, "bench.txt")
	if err := os.WriteFile(rawFile, []byte(raw), 0o644); err != nil {
		return err
	}
	// In the file's directory, so that its tables are headed by the
	// file's name alone.
	if st, err := shIn(ctx, tmp, "go", "run", "golang.org/x/perf/cmd/benchstat@latest", filepath.Base(rawFile)); err == nil {
		d.BenchstatCmd = "go run golang.org/x/perf/cmd/benchstat@latest bench.txt"
		d.Bench = st
	} else {
		d.BenchstatCmd = "(benchstat unavailable: raw go test output)"
		d.Bench = raw
	}

	if !*noPerf {
		if err := profile(ctx, tmp, &d); err != nil {
			fmt.Fprintln(os.Stderr, "results: perf profile skipped:", err)
			d.PerfRx = "(profile failed: " + err.Error() + ")"
		}
	}

	// benchstat and the profile fall back on something else when they
	// fail: an interrupted run must not write the page.
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	b, err = render(&d)
	if err != nil {
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

// owner names results' temporary directory after its process:
// afxresPID-RANDOM.
var owner = stale.New("results", "afxres")

// removeStale removes the temporary directories of results processes
// that are gone: one killed outright (SIGKILL) cannot remove its own, with
// the programs it built in it. It says on w what it removed, and what it
// failed to. run calls it only while it holds the lock (package onerun).
func removeStale(w io.Writer) {
	owner.RemoveStale(w, stale.Place{Dir: os.TempDir(), What: "temporary directory"})
}

// render fills the page's template with d.
func render(d *data) ([]byte, error) {
	t, err := template.New("page").Option("missingkey=error").Funcs(template.FuncMap{
		"ring":    func() int { return compareRing },
		"bigring": func() int { return compareBigRing },
		"ratio": func(a, b Summary) string {
			if b.Mpps == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2f×", a.Mpps/b.Mpps)
		},
		// paired fills two cells of a table: the median of a/b over
		// the rounds, and the range.
		"paired": func(a, b Summary) string {
			med, lo, hi, err := summary.Paired(a, b)
			if err != nil {
				return "n/a | n/a"
			}
			return fmt.Sprintf("%.2f× | %.2f–%.2f×", med, lo, hi)
		},
		// count quotes a drop count (a median over the rounds, which
		// is a half for an even number of them) in whole frames, as
		// compare's table does, never in exponent form.
		"count": func(v float64) string { return fmt.Sprintf("%.0f", v) },
		"pct": func(a, b Summary) string {
			if b.Mpps == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.0f%%", 100*a.Mpps/b.Mpps)
		},
	}).Parse(page)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// profile records a system-wide perf profile while rxdrop runs on its own
// veth topology, and keeps the top symbols of each CPU.
func profile(ctx context.Context, tmp string, d *data) error {
	if _, err := exec.LookPath("perf"); err != nil {
		// A fresh machine has no package lists yet.
		if _, err := sh(ctx, "apt-get", "update"); err != nil {
			return fmt.Errorf("install linux-perf: %w", err)
		}
		if _, err := sh(ctx, "apt-get", "install", "-y", "linux-perf"); err != nil {
			return fmt.Errorf("install linux-perf: %w", err)
		}
	}
	rxdrop, err := goBuild(ctx, tmp, "./examples/rxdrop")
	if err != nil {
		return err
	}
	data := filepath.Join(tmp, "perf.data")
	d.PerfCmd = "rxdrop -d 8s -cpu 1 -quiet & sleep 3; perf record -a -g -o perf.data -- sleep 3; " +
		"perf report -i perf.data --no-children --sort sym --cpu N --stdio"
	cmd := command(ctx, rxdrop, "-d", "8s", "-cpu", "1", "-quiet")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := child.Start(cmd); err != nil {
		return err
	}
	select {
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
	}
	_, perr := sh(ctx, "perf", "record", "-a", "-g", "-o", data, "--", "sleep", "3")
	werr := cmd.Wait()
	if err := errors.Join(perr, werr); err != nil {
		return err
	}
	top := func(cpu string) string {
		s, err := sh(ctx, "perf", "report", "-i", data, "--no-children", "--sort", "sym", "--cpu", cpu, "--stdio", "-g", "none", "--percent-limit", "1.5")
		if err != nil {
			return "(perf report failed)"
		}
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
				continue
			}
			keep = append(keep, l)
			if len(keep) == 18 {
				break
			}
		}
		return strings.Join(keep, "\n")
	}
	d.PerfRx = "CPU 0 (generator, and the veth peer's NAPI poll with the AF_XDP copy):\n" + top("0") +
		"\n\nCPU 1 (rxdrop's loop):\n" + top("1")
	return nil
}
