// Command jitter measures how often, and for how long, a CPU is taken
// away from a thread that never gives it up: the thing that decides how
// deep a receiver's rings must be to drop nothing. It pins a thread to
// -cpu, reads the monotonic clock in a loop for -d, and prints how many
// gaps between two reads fell in each range above 50 µs, how much time
// they add up to, the longest, and the steal time that the hypervisor
// reported for that CPU meanwhile (/proc/stat). The process's other
// threads (the Go runtime's sysmon, GC workers and spare threads, and
// those it makes later, which inherit their affinity) are kept off -cpu
// for the measurement, as the run loops' -isolate does, so that the gaps
// are not jitter's own; on a machine where -cpu is the process's only CPU
// they cannot be, and the report says so. Run it on an otherwise idle
// machine: what it sees, no receiver on that CPU can avoid.
//
//	go run ./bench/cmd/jitter -cpu 1 -d 10s
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/sys"
)

var (
	cpu = flag.Int("cpu", 1, "CPU to measure")
	dur = flag.Duration("d", 10*time.Second, "how long to measure")
)

func main() {
	flag.Parse()
	err := fmt.Errorf("argument %q: jitter takes flags only", flag.Arg(0))
	if flag.NArg() == 0 {
		err = run(os.Stdout, *cpu, *dur)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "jitter:", err)
		os.Exit(1)
	}
}

// bounds are the upper ends of the histogram's ranges; gaps of at least
// the last go in a final range.
var bounds = []time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond,
}

// minGap is the shortest gap counted.
const minGap = 50 * time.Microsecond

// gaps is what one measurement saw.
type gaps struct {
	counts []int // per range: len(bounds)+1
	total  time.Duration
	max    time.Duration
}

func (g *gaps) add(d time.Duration) {
	if d < minGap {
		return
	}
	i := 0
	for i < len(bounds) && d >= bounds[i] {
		i++
	}
	g.counts[i]++
	g.total += d
	g.max = max(g.max, d)
}

// over returns how many gaps were at least b, which must be one of bounds.
func (g *gaps) over(b time.Duration) int {
	n := 0
	for i := len(bounds); i > 0 && bounds[i-1] >= b; i-- {
		n += g.counts[i]
	}
	return n
}

func run(w io.Writer, cpu int, d time.Duration) (err error) {
	if d <= 0 {
		return fmt.Errorf("-d %v: must be positive", d)
	}
	if cpu < 0 {
		return fmt.Errorf("-cpu %d: must not be negative", cpu)
	}
	undo, isolated, err := isolate(cpu)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, undo()) }()
	steal0, err := stealTime(cpu)
	if err != nil {
		return err
	}
	g := measure(d)
	steal1, err := stealTime(cpu)
	if err != nil {
		return err
	}
	fmt.Fprint(w, report(cpu, d, g, steal1-steal0))
	if isolated {
		fmt.Fprintf(w, "the process's other threads were kept off CPU %d\n", cpu)
	} else {
		fmt.Fprintf(w, "CPU %d is the process's only CPU: its other threads (Go's runtime) shared it, and some gaps may be theirs\n", cpu)
	}
	return nil
}

// isolate pins the calling goroutine's thread to cpu and moves every other
// thread of the process off it (app.KeepOffCPU). isolated is false when
// cpu is the process's only CPU, where the other threads stay. undo gives
// the threads their affinity back and unlocks the goroutine.
func isolate(cpu int) (undo func() error, isolated bool, err error) {
	unpin, err := app.PinThread(cpu)
	if err != nil {
		return nil, false, err
	}
	allowed, err := sys.AllowedCPUSet()
	if err != nil {
		unpin()
		return nil, false, err
	}
	restore, err := app.KeepOffCPU(cpu)
	if err != nil {
		unpin()
		return nil, false, err
	}
	return func() error {
		err := restore()
		unpin()
		return err
	}, allowed.Count() > 1, nil
}

// measure spins reading the clock for d.
func measure(d time.Duration) *gaps {
	g := &gaps{counts: make([]int, len(bounds)+1)}
	start := time.Now()
	prev := start
	for {
		now := time.Now()
		g.add(now.Sub(prev))
		prev = now
		if now.Sub(start) >= d {
			return g
		}
	}
}

func report(cpu int, d time.Duration, g *gaps, steal time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU %d, %v: gaps of", cpu, d)
	lo := minGap
	for i, hi := range bounds {
		fmt.Fprintf(&b, " %v–%v: %d,", lo, hi, g.counts[i])
		lo = hi
	}
	fmt.Fprintf(&b, " %v and more: %d\n", lo, g.counts[len(bounds)])
	fmt.Fprintf(&b, "%d gaps of 1ms or more; all gaps over %v add up to %v (%.2f%%), the longest %v; steal time %v\n",
		g.over(time.Millisecond), minGap, g.total.Round(time.Microsecond),
		100*float64(g.total)/float64(d), g.max.Round(time.Microsecond), steal)
	return b.String()
}

// stealTime reads the steal time of cpu from /proc/stat.
func stealTime(cpu int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseSteal(string(b), cpu)
}

// parseSteal finds cpu's line in the text of /proc/stat and returns its
// eighth field, the steal time in USER_HZ ticks, as a duration.
func parseSteal(stat string, cpu int) (time.Duration, error) {
	name := "cpu" + strconv.Itoa(cpu)
	for _, l := range strings.Split(stat, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != name {
			continue
		}
		if len(f) < 9 {
			return 0, fmt.Errorf("/proc/stat: line %q has no steal field", name)
		}
		ticks, err := strconv.ParseUint(f[8], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %s steal %q: %w", name, f[8], err)
		}
		const hz = 100 // USER_HZ on Linux
		return time.Duration(ticks) * time.Second / hz, nil
	}
	return 0, errors.New("/proc/stat: no line for " + name)
}
