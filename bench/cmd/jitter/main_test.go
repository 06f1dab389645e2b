package main

import (
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

const stat = `cpu  1056199 102 1442176 2134689 6216 0 694632 12584 0 0
cpu0 271444 0 808416 1049079 1538 0 549924 6111 0 0
cpu1 784755 102 633760 1085609 4677 0 144707 6472 0 0
intr 1 2 3
`

func TestParseSteal(t *testing.T) {
	for _, tt := range []struct {
		cpu  int
		want time.Duration
	}{{0, 61110 * time.Millisecond}, {1, 64720 * time.Millisecond}} {
		got, err := parseSteal(stat, tt.cpu)
		if err != nil || got != tt.want {
			t.Errorf("cpu %d: %v, %v; want %v", tt.cpu, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		stat string
		cpu  int
		want string
	}{
		{stat, 2, "no line for cpu2"},
		{"cpu3 1 2 3\n", 3, "no steal field"},
		{"cpu3 1 2 3 4 5 6 7 x 9\n", 3, `cpu3 steal "x"`},
	} {
		if _, err := parseSteal(tt.stat, tt.cpu); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("cpu %d of %q: %v, want an error with %q", tt.cpu, tt.stat, err, tt.want)
		}
	}
}

func TestGaps(t *testing.T) {
	g := &gaps{counts: make([]int, len(bounds)+1)}
	for _, d := range []time.Duration{
		10 * time.Microsecond, // too short to count
		50 * time.Microsecond, 99 * time.Microsecond,
		time.Millisecond, 1500 * time.Microsecond,
		3 * time.Millisecond, 9 * time.Millisecond,
	} {
		g.add(d)
	}
	if want := []int{2, 0, 0, 0, 2, 1, 1}; !slices.Equal(g.counts, want) {
		t.Fatalf("counts %v, want %v", g.counts, want)
	}
	if n := g.over(time.Millisecond); n != 4 {
		t.Errorf("%d gaps of 1ms or more, want 4", n)
	}
	if n := g.over(4 * time.Millisecond); n != 1 {
		t.Errorf("%d gaps of 4ms or more, want 1", n)
	}
	if g.max != 9*time.Millisecond || g.total != 14649*time.Microsecond {
		t.Errorf("max %v, total %v", g.max, g.total)
	}
	r := report(1, time.Second, g, 20*time.Millisecond)
	for _, want := range []string{"CPU 1, 1s:", "50µs–100µs: 2,", "1ms–2ms: 2,", "4ms and more: 1",
		"4 gaps of 1ms or more", "add up to 14.649ms (1.46%), the longest 9ms; steal time 20ms"} {
		if !strings.Contains(r, want) {
			t.Errorf("report lacks %q:\n%s", want, r)
		}
	}
}

func TestMeasure(t *testing.T) {
	start := time.Now()
	g := measure(20 * time.Millisecond)
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Fatalf("measured for %v, want at least 20ms", el)
	}
	if g.total > time.Since(start) {
		t.Fatalf("gaps add up to %v, more than the %v measured", g.total, time.Since(start))
	}
}

func TestRunBadInput(t *testing.T) {
	if err := run(io.Discard, 1, 0); err == nil || !strings.Contains(err.Error(), "-d 0s: must be positive") {
		t.Errorf("-d 0: %v", err)
	}
	if err := run(io.Discard, 4095, time.Millisecond); err == nil || !strings.Contains(err.Error(), "pin to cpu 4095") {
		t.Errorf("-cpu 4095: %v", err)
	}
	if err := run(io.Discard, -1, time.Millisecond); err == nil || !strings.Contains(err.Error(), "-cpu -1: must not be negative") {
		t.Errorf("-cpu -1: %v", err)
	}
}

// affinities reads the affinity mask of every thread of the process.
func affinities(t *testing.T) map[int]unix.CPUSet {
	t.Helper()
	tids, err := sys.ThreadIDs()
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]unix.CPUSet{}
	for _, tid := range tids {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			if err == unix.ESRCH {
				continue
			}
			t.Fatal(err)
		}
		m[tid] = set
	}
	return m
}

// TestIsolateKeepsOtherThreadsOff checks the measurement's setup: the
// calling thread runs on the measured CPU alone, and every other thread of
// the process, the Go runtime's and those made after the setup, is kept
// off it; undo gives them their affinity back.
func TestIsolateKeepsOtherThreadsOff(t *testing.T) {
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) < 2 {
		t.Skipf("needs two CPUs to keep threads off one; this process may use %s", cpus)
	}
	cpu := cpus[len(cpus)-1]
	// Threads that may run anywhere, blocked for the test's length.
	stop := make(chan struct{})
	defer close(stop)
	for range 3 {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-stop
		}()
	}
	before := affinities(t)

	undo, isolated, err := isolate(cpu)
	if err != nil {
		t.Fatal(err)
	}
	self := unix.Gettid()
	check := func(when string) {
		t.Helper()
		for tid, set := range affinities(t) {
			switch {
			case tid == self && (set.Count() != 1 || !set.IsSet(cpu)):
				t.Errorf("%s: measuring thread %d may run on %d CPUs (cpu %d: %v); want cpu %d alone", when, tid, set.Count(), cpu, set.IsSet(cpu), cpu)
			case tid != self && set.IsSet(cpu):
				t.Errorf("%s: thread %d may run on the measured cpu %d", when, tid, cpu)
			}
		}
	}
	check("after isolate")
	// A thread made now inherits a moved thread's affinity.
	made := make(chan unix.CPUSet)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		unix.SchedGetaffinity(0, &set)
		made <- set
		<-stop
	}()
	if set := <-made; set.IsSet(cpu) {
		t.Errorf("a thread locked after isolate may run on cpu %d", cpu)
	}
	check("after a new locked thread")
	if !isolated {
		t.Error("isolate says it could not keep the threads off, with other CPUs allowed")
	}

	if err := undo(); err != nil {
		t.Fatal(err)
	}
	for tid, set := range affinities(t) {
		if old, ok := before[tid]; ok && set != old {
			t.Errorf("after undo: thread %d may run on %d CPUs, had %d before", tid, set.Count(), old.Count())
		}
	}
}

// TestRunSaysWhatItKeptOff checks that the report says the other threads
// were kept off the CPU.
func TestRunSaysWhatItKeptOff(t *testing.T) {
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := run(&b, cpus[0], time.Millisecond); err != nil {
		t.Fatal(err)
	}
	want := "the process's other threads were kept off CPU"
	if len(cpus) == 1 {
		want = "is the process's only CPU"
	}
	if !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, b.String())
	}
}
