package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afxdp/afxdp/bench/cmd/internal/child"
	"github.com/afxdp/afxdp/bench/cmd/internal/onerun"
)

// TestMain runs results' main instead of the tests when startResults
// runs this binary as results.
// It runs as a fake compare when TestChildCompareRunsUnderLock's results
// runs it as compare.
//
// Its runs take a lock of their own (onerun.UseTestLock), not the one of
// real runs: compare's tests and results' run at the same time, and must
// neither refuse a real run nor be refused by one.
func TestMain(m *testing.M) {
	done, err := onerun.UseTestLock()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The fake compare first: it inherits results' environment.
	switch {
	case os.Getenv("AFXDP_RESULTS_FAKE_COMPARE") == "1":
		fakeCompare()
	case os.Getenv("AFXDP_RESULTS_MAIN") == "1":
		main()
		os.Exit(0)
	}
	code := m.Run()
	done()
	os.Exit(code)
}

// fakeCompare takes the lock as compare does and checks that it holds
// results' lock: another taker is refused, naming its parent, results. It
// says so, writes an empty summary to its -json and exits 0, or says why
// not and exits 1.
func fakeCompare() {
	fail := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "fake compare: "+f+"\n", a...)
		os.Exit(1)
	}
	l, err := onerun.Acquire("compare")
	if err != nil {
		fail("%v", err)
	}
	defer l.Close()
	_, err = onerun.Acquire("compare")
	var be *onerun.BusyError
	if !errors.As(err, &be) || be.PID != os.Getppid() || be.Command != "results" {
		fail("not under the lock of results (pid %d): another Acquire got %v", os.Getppid(), err)
	}
	js := ""
	for i, a := range os.Args[:len(os.Args)-1] {
		if a == "-json" {
			js = os.Args[i+1]
		}
	}
	if err := os.WriteFile(js, []byte("[]\n"), 0o644); err != nil {
		fail("%v", err)
	}
	fmt.Fprintf(os.Stderr, "fake compare: ran under the lock of results (pid %d)\n", be.PID)
	l.Close()
	os.Exit(0)
}

// contenders reads the contenders' names from bench/cmd/compare's source,
// the names its -json output carries.
func contenders(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../compare/main.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`\{name: "([^"]+)"`).FindAllSubmatch(src, -1) {
		names = append(names, string(m[1]))
	}
	if len(names) < 10 {
		t.Fatalf("found only %d contenders in compare's source: %q", len(names), names)
	}
	return names
}

// TestPageNamesContenders checks that every row the page quotes is one
// compare makes: a name that matches none would render as zeros.
func TestPageNamesContenders(t *testing.T) {
	known := map[string]bool{}
	for _, n := range contenders(t) {
		known[n] = true
	}
	quoted := regexp.MustCompile(`index \.S "([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(quoted) == 0 {
		t.Fatal("the page quotes no contender")
	}
	for _, q := range quoted {
		if !known[q[1]] {
			t.Errorf("the page quotes %q, which compare does not make", q[1])
		}
	}
}

// TestRender fills the page with made-up figures, every contender at a
// different rate, and checks that the figures and ratios land in it.
func TestRender(t *testing.T) {
	d := data{Date: "today", Kernel: "k", CPU: "c", Cores: "2", Go: "go", DPDK: "dpdk",
		Compare: "COMPARE-TABLE", Bench: "BENCH-TABLE", JitterCmd: "JITTER-CMD", Jitter: "JITTER-OUT\n",
		S: map[string]Summary{}}
	for i, n := range contenders(t) {
		d.S[n] = Summary{Name: n, Mpps: float64(i + 1), Drops: float64(1000 + i), Rounds: []float64{1, 2, 3}}
	}
	// Its rounds go the other way from testpmd's: 0.5×, 1×, 2×.
	d.S["afxdp txonly"] = Summary{Name: "afxdp txonly", Mpps: 2, Rounds: []float64{1, 2, 4}}
	d.S["testpmd txonly"] = Summary{Name: "testpmd txonly", Mpps: 2, Rounds: []float64{2, 2, 2}}
	d.S["testpmd rxonly"] = Summary{Name: "testpmd rxonly", Mpps: 2, Rounds: []float64{1, 2, 3}}
	d.S["afxdp rxdrop spin, big rings"] = Summary{Name: "afxdp rxdrop spin, big rings", Mpps: 3, Drops: 0}
	d.S["afxdp l2fwd"] = Summary{Name: "afxdp l2fwd", Mpps: 0.5, OfferedMpps: 3, CPUPerMpkt: 2, Rounds: []float64{0.5, 0.5, 0.6}}
	d.S["testpmd macswap"] = Summary{Name: "testpmd macswap", Mpps: 0.4, OfferedMpps: 3.1, CPUPerMpkt: 2.5, Rounds: []float64{0.4, 0.5, 0.4}}
	b, err := render(&d)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"COMPARE-TABLE", "BENCH-TABLE", "`JITTER-CMD`", "```\nJITTER-OUT\n```",
		"with 16384-entry rings", "dropped 0 frames per trial", "at 1.50× testpmd's rate",
		"with 4096-entry rings", "l2fwd vs testpmd macswap: 1.25×\n  (0.50 against 0.40 Mpps forwarded, of\n  3.00 and 3.10 Mpps offered; 2.000 against\n  2.500 CPU-s/Mpkt)"} {
		if !strings.Contains(page, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if strings.Contains(page, "n/a") || strings.Contains(page, "<no value>") {
		t.Error("rendered page has a figure missing (n/a or <no value>)")
	}
}

// TestCheckFlags: values that would fail only after the long runs (or in
// the middle of them) are refused before anything runs, naming the flag.
func TestCheckFlags(t *testing.T) {
	o := *out
	*out = os.DevNull
	defer func() { *out = o }()
	if err := checkFlags(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		set  func()
		want string
	}{
		{func() { *count = 0 }, "-count 0"},
		{func() { *rounds = 0 }, "-rounds 0"},
		{func() { *dur = 0 }, "-d 0s"},
		{func() { *benchtime = "fast" }, `-benchtime "fast"`},
		{func() { *benchtime = "0x" }, `-benchtime "0x"`},
		{func() { *benchtime = "-1s" }, `-benchtime "-1s"`},
		{func() { *out = "/nonexistent-afxdp/RESULTS.md" }, "-o /nonexistent-afxdp/RESULTS.md: stat /nonexistent-afxdp"},
		{func() { *out = os.TempDir() }, "-o " + os.TempDir() + ": is a directory"},
		{func() { flag.CommandLine.Parse([]string{"5s"}) }, `argument "5s": results takes flags only`},
	} {
		c, r, d, b, o, args := *count, *rounds, *dur, *benchtime, *out, flag.Args()
		tc.set()
		err := checkFlags()
		*count, *rounds, *dur, *benchtime, *out = c, r, d, b, o
		flag.CommandLine.Parse(args)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("checkFlags() = %v; want an error starting %q", err, tc.want)
		}
	}
	for _, bt := range []string{"1s", "100x", "500ms"} {
		*benchtime = bt
		if err := checkFlags(); err != nil {
			t.Errorf("-benchtime %s: %v", bt, err)
		}
	}
	*benchtime = "1s"
}

// TestRenderDropCounts checks how the page quotes drop counts: as whole
// frames, the way compare's table prints them, even when a count reaches
// millions (text/template's plain float64 is 1.773984e+06 there) or is
// the median of an even number of rounds (2436.5 frames).
func TestRenderDropCounts(t *testing.T) {
	d := data{S: map[string]Summary{}}
	for _, n := range contenders(t) {
		d.S[n] = Summary{Name: n, Mpps: 1}
	}
	d.S["afxdp rxdrop spin"] = Summary{Name: "afxdp rxdrop spin", Mpps: 1, Drops: 1773984, RxRingFull: 1200000}
	d.S["afxdp rxdrop nap"] = Summary{Name: "afxdp rxdrop nap", Mpps: 1, Drops: 2436.5, RxRingFull: 0.5}
	d.S["afxdp rxdrop spin, big rings"] = Summary{Name: "afxdp rxdrop spin, big rings", Mpps: 1, Drops: 3e6, RxRingFull: 7.5}
	b, err := render(&d)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{
		"spin\n  1773984 (RX ring full 1200000)", "nap\n  2436 (RX ring full 0).",
		"the socket dropped 3000000 frames per trial (RX ring full\n8)", "against 1773984 at",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`\d\.\d+e\+\d\d|\d+\.5\b`).FindString(page); m != "" {
		t.Errorf("rendered page quotes a count as %q", m)
	}
}

// resultsRun is results running in a process of its own, with a fake
// `go` whose first program (jitter) takes for ever.
type resultsRun struct {
	cmd   *exec.Cmd
	done  chan error // cmd.Wait's result, put back once received
	child int        // the fake jitter's pid
	tmp   string     // results' TMPDIR
	page  string     // its -o
	said  func() string
}

// startResults runs results with a `go` whose builds make a program
// that writes its pid and sleeps for a minute, and returns once results
// runs the first (jitter). results' TMPDIR is tmp, or a new directory if
// tmp is empty. The test kills results and the child when it ends.
func startResults(t *testing.T, tmp string) *resultsRun {
	r, pidFile := launchResults(t, tmp)
	for deadline := time.Now().Add(20 * time.Second); r.child == 0; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(pidFile); err == nil && bytes.HasSuffix(b, []byte("\n")) {
			if r.child, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				t.Fatal(err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("results never ran jitter:\n%s", r.said())
		}
	}
	// What the old results left running.
	t.Cleanup(func() { syscall.Kill(r.child, syscall.SIGKILL) })
	return r
}

// launchResults starts results as startResults does, and returns at once
// with the file its programs write their pids to.
func launchResults(t *testing.T, tmp string) (*resultsRun, string) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	mk := []string{bin}
	if tmp == "" {
		tmp = filepath.Join(dir, "tmp")
		mk = append(mk, tmp)
	}
	for _, d := range mk {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pidFile := filepath.Join(dir, "child.pid")
	// go build -o PATH PKG writes a program to PATH. It leaves its work
	// directory, in GOTMPDIR or else TMPDIR, as a go build ended by a
	// signal does.
	fake := "#!/bin/sh\ncase \"$1\" in\n" +
		"build) mkdir \"${GOTMPDIR:-$TMPDIR}/go-build$$\"; " +
		"printf '#!/bin/sh\\necho $$ > " + pidFile + "; exec sleep 60\\n' > \"$3\"; chmod +x \"$3\";;\n" +
		"*) echo fake go;;\nesac\n"
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &resultsRun{tmp: tmp, page: filepath.Join(dir, "RESULTS.md"), done: make(chan error, 1)}
	r.cmd = exec.Command(os.Args[0], "-o", r.page)
	r.cmd.Env = append(os.Environ(), "AFXDP_RESULTS_MAIN=1", "PATH="+bin+":"+os.Getenv("PATH"), "TMPDIR="+tmp)
	// A file, not a pipe that the child would hold open: Wait returns
	// when results has exited.
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	r.cmd.Stderr = stderr
	r.said = func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		r.done <- <-r.done
	})
	return r, pidFile
}

// wait waits up to d for results to exit.
func (r *resultsRun) wait(t *testing.T, d time.Duration) {
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(d):
		t.Fatalf("results still running %v after its signal:\n%s", d, r.said())
	}
}

// TestInterruptEndsChildrenAndCleansUp runs results with a `go` whose
// first program takes for ever, sends results SIGTERM then, and checks
// that results ended that child (which stands for compare, in the process
// group results made for it), removed its temporary directory and wrote
// no page. results used to die at once, leaving both behind.
func TestInterruptEndsChildrenAndCleansUp(t *testing.T) {
	r := startResults(t, "")
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 30*time.Second)
	if err := syscall.Kill(r.child, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("results' child %d still there after results ended (kill 0: %v)", r.child, err)
	}
	if left, err := os.ReadDir(r.tmp); err != nil || len(left) != 0 {
		t.Errorf("results left in its temporary directory: %v %v", left, err)
	}
	if _, err := os.Stat(r.page); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an interrupted results wrote %s (%v)", r.page, err)
	}
	t.Logf("results said:\n%s", r.said())
}

// TestKilledEndsChildren runs results as TestInterruptEndsChildrenAndCleansUp
// does, kills it with SIGKILL, which it cannot catch, and checks that its
// child (which stands for compare, now run directly rather than under
// `go run`) ends all the same. The child used to go on, re-parented: a
// signal to `go run` would not have reached the compare it ran. The
// killed results cannot remove its temporary directory: the test checks
// that the next results, with the same TMPDIR, does, and leaves its own.
func TestKilledEndsChildren(t *testing.T) {
	r := startResults(t, "")
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); child.Running(r.child); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("results' child %d still running 10s after results was killed:\n%s", r.child, r.said())
		}
	}
	// entries lists r's TMPDIR.
	entries := func(r *resultsRun) []string {
		t.Helper()
		ents, err := os.ReadDir(r.tmp)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	own := func(r *resultsRun) string { return "afxres" + strconv.Itoa(r.cmd.Process.Pid) + "-" }
	names := entries(r)
	if len(names) != 1 {
		t.Fatalf("the killed results left %q in its TMPDIR %s; want its temporary directory", names, r.tmp)
	}
	if !strings.HasPrefix(names[0], own(r)) {
		t.Errorf("the killed results' temporary directory %s: want it named %s*, after results' pid", names[0], own(r))
	}
	left := filepath.Join(r.tmp, names[0])
	next := startResults(t, r.tmp)
	if _, err := os.Stat(left); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s, the killed results' temporary directory, once the next results runs: %v; want it removed", left, err)
	}
	if names := entries(next); len(names) != 1 || !strings.HasPrefix(names[0], own(next)) {
		t.Errorf("the next results' TMPDIR %s holds %q; want its own temporary directory alone, %s*", next.tmp, names, own(next))
	}
	if !strings.Contains(next.said(), "results: removed temporary directory "+left+", left by a results that is gone\n") {
		t.Errorf("the next results did not say it removed %s:\n%s", left, next.said())
	}
}

// TestRenderShowsEveryField fills every text field of the page's data
// with a marker of its own and checks that each lands on the page: a
// field that run fills and the page never shows is a measurement or a
// command the page claims and does not publish.
func TestRenderShowsEveryField(t *testing.T) {
	d := data{S: map[string]Summary{}}
	for _, n := range contenders(t) {
		d.S[n] = Summary{Name: n, Mpps: 1}
	}
	v := reflect.ValueOf(&d).Elem()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String {
			f.SetString("MARK-" + v.Type().Field(i).Name + "-")
		}
	}
	b, err := render(&d)
	if err != nil {
		t.Fatal(err)
	}
	for i := range v.NumField() {
		if v.Field(i).Kind() == reflect.String {
			if mark := "MARK-" + v.Type().Field(i).Name + "-"; !bytes.Contains(b, []byte(mark)) {
				t.Errorf("the page does not show data.%s", v.Type().Field(i).Name)
			}
		}
	}
}

// TestOneAtATime starts a results while another runs: the second must
// refuse at once, naming the first, before it makes anything (its
// temporary directory) or runs anything, and before it removes what dead
// results left. It used to run alongside the first. The first then is
// killed outright (SIGKILL), with no chance to let go of the lock: the
// next results runs.
func TestOneAtATime(t *testing.T) {
	first := startResults(t, "")
	// What a results that is gone left: removeStale would remove it.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	stale := filepath.Join(tmp, "afxres"+strconv.Itoa(gone.Process.Pid)+"-123")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, pidFile := launchResults(t, tmp)
	second.wait(t, 10*time.Second)
	want := fmt.Sprintf("results: another results (pid %d) is running: two at once would measure each other; wait for it or stop it\n", first.cmd.Process.Pid)
	err := <-second.done
	second.done <- err
	if err == nil || second.said() != want {
		t.Errorf("results started while results %d ran: %v, said:\n%s\nwant it to fail, saying only:\n%s", first.cmd.Process.Pid, err, second.said(), want)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("results refused to run %v after it started; want at once", took)
	}
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 1 || ents[0].Name() != filepath.Base(stale) {
		t.Errorf("the refused results' TMPDIR holds %v (%v); want only %s, as it was", ents, err, filepath.Base(stale))
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused results ran a program (%v)", err)
	}

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 10*time.Second)
	startResults(t, "")
}

// TestChildCompareRunsUnderLock runs results with a `go` whose jitter
// exits at once and whose compare is this binary as a fake compare
// (fakeCompare), which takes the lock as compare does: it must get it,
// as results' own, which results holds while it runs (another taker is
// refused, naming results).
func TestChildCompareRunsUnderLock(t *testing.T) {
	dir := t.TempDir()
	bin, tmp := filepath.Join(dir, "bin"), filepath.Join(dir, "tmp")
	for _, d := range []string{bin, tmp} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// go build -o PATH PKG writes a program to PATH; a go test -c
	// writes none, and results fails when it runs the benchmarks.
	fake := "#!/bin/sh\ncase \"$1 $4\" in\n" +
		"'build ./bench/cmd/compare') printf '#!/bin/sh\\nAFXDP_RESULTS_FAKE_COMPARE=1 exec " + os.Args[0] + " \"$@\"\\n' > \"$3\"; chmod +x \"$3\";;\n" +
		"build*) printf '#!/bin/sh\\necho fake\\n' > \"$3\"; chmod +x \"$3\";;\n" +
		"*) echo fake go;;\nesac\n"
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-o", filepath.Join(dir, "RESULTS.md"), "-no-perf")
	cmd.Env = append(os.Environ(), "AFXDP_RESULTS_MAIN=1", "PATH="+bin+":"+os.Getenv("PATH"), "TMPDIR="+tmp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	t.Logf("results (%v) said:\n%s", err, stderr.String())
	if want := fmt.Sprintf("fake compare: ran under the lock of results (pid %d)\n", cmd.Process.Pid); !strings.Contains(stderr.String(), want) {
		t.Errorf("results' compare did not say %q", want)
	}
	if !strings.Contains(stderr.String(), "results: benchmarks: ") {
		t.Errorf("results did not go on to the benchmarks after its compare")
	}
}
