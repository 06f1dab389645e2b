package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/matrix"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestBadArguments: unknown names and impossible combinations fail before
// anything is built, naming what is wrong.
func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-topologies", "veth,geneve"}, `-topologies "geneve": unknown; choose from veth, ptp, bridge, macvlan, ipvlan-l2, ipvlan-l3, vxlan`},
		{[]string{"-paths", "dpdk"}, `-paths "dpdk": unknown`},
		{[]string{"-modes", "rx,stream"}, `-modes "stream": unknown`},
		{[]string{"-sizes", "64,9000"}, "-sizes 9000: a frame must be between 64 and 1518 bytes"},
		{[]string{"-sizes", "big"}, `-sizes "big": not a number`},
		{[]string{"-topologies", "macvlan", "-baseline", "veth"}, `-baseline "veth": not among the topologies measured (macvlan)`},
		{[]string{"-baseline", ""}, `-baseline "": name a topology, such as veth`},
		{[]string{"-baseline", "veth/afxdp"}, `-baseline "veth/afxdp": must be a topology, such as veth: each cell is compared with the same path on it`},
		{[]string{"-rate", "0"}, "-rate 0: must be between 1 and 1000000"},
		// Named by the flags typed, not by matrix.Config's fields.
		{[]string{"-duration", "0s"}, "-duration 0s: must be between 10ms and 10m"},
		{[]string{"-runs", "0"}, "-runs 0: must be between 1 and 100"},
		{[]string{"-rate", "10", "-duration", "100ms"}, "-rate 10 with -duration 100ms: fewer than 10 requests per run"},
		{[]string{"-quick", "-rate", "10"}, "-rate 10 with -quick's duration 150ms: fewer than 10 requests per run"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		// Each size once: a second 64 would be measured into the first's
		// cell and leave its own "interrupted".
		{[]string{"-sizes", "64,64"}, "-sizes 64,64: 64 given twice"},
		{[]string{"-sizes", "64, 1500,64"}, "64 given twice"},
		// -render measures nothing: flags about measuring are refused.
		{[]string{"-render", "x.json", "-duration", "2s"}, "-render: -duration is about measuring; it does not apply to a saved result"},
		{[]string{"-render", "x.json", "-quick"}, "-render: -quick is about measuring"},
		{[]string{"-render", "x.json", "-topologies", "veth"}, "-render: -topologies is about measuring"},
		{[]string{"-render", "x.json", "-cni-dir", "/usr/lib/cni"}, "-render: -cni-dir is about measuring"},
		// stdout holds one file or the table, not a mix.
		{[]string{"-json", "-", "-md", "-"}, "-json and -md: only one of them may write to stdout (-)"},
		{[]string{"-docs", "-"}, "-docs -: a directory, not stdout"},
		// Output paths are checked before anything is measured.
		{[]string{"-topologies", "veth", "-json", "/nonexistent-dir/x.json"}, "-json /nonexistent-dir/x.json: cannot write there"},
		{[]string{"-topologies", "veth", "-svg", "/"}, "-svg /: exists and is not a regular file"},
		// A CNI plugin directory given by name must hold the plugins.
		{[]string{"-cni-dir", "/nonexistent"}, `-cni-dir "/nonexistent": stat /nonexistent: no such file or directory`},
		{[]string{"-topologies", "veth,bridge", "-cni-dir", "/etc"}, `-cni-dir "/etc": no executable CNI plugin bridge, host-local in it`},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("afxdp-matrix %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, errb.String(), tc.want)
		}
		if m := configField.FindString(errb.String()); m != "" {
			t.Errorf("afxdp-matrix %s: stderr %q names matrix.Config's field %q, not a flag", strings.Join(tc.args, " "), errb.String(), m)
		}
	}
}

// configField matches a field of matrix.Config as Validate names it.
var configField = regexp.MustCompile(`\b(Topologies|Paths|Modes|Sizes|Duration|Runs|Rate|Warmup|Baseline|PluginDir)\b[ :]`)

// TestInterrupt runs the command, stops it with SIGINT in the middle of
// the matrix, and checks that it says so and leaves nothing behind: no
// CNI plugin process, no IPAM store, no link in the root namespace, no
// namespace held by anyone. Twice: a second SIGINT 50 ms after the first,
// as an impatient Ctrl-C sends, must not cut the cleanup short.
func TestInterrupt(t *testing.T) {
	testenv.RequirePrivileged(t)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skipf("CNI plugins missing: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "afxdp-matrix")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, signals := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d SIGINT", signals), func(t *testing.T) { interrupt(t, bin, signals) })
	}
}

func interrupt(t *testing.T, bin string, signals int) {
	tmp := t.TempDir()
	rootBefore := testenv.LinkNames(t)

	cmd := exec.Command(bin, "-quick", "-duration", "300ms", "-topologies", "bridge,macvlan,vxlan", "-table=false")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	var log bytes.Buffer
	sc := bufio.NewScanner(stderr)
	sent := false
	delivered := 0
	var stopAt time.Time
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		// The second finished cell: the first topology is built and
		// in use, with sockets and XDP programs on it.
		if !sent && strings.Count(log.String(), "64B: ") >= 2 {
			time.Sleep(100 * time.Millisecond)
			stopAt = time.Now()
			for i := range signals {
				if i > 0 {
					time.Sleep(50 * time.Millisecond)
				}
				err := cmd.Process.Signal(syscall.SIGINT)
				if errors.Is(err, os.ErrProcessDone) {
					t.Logf("the run ended before SIGINT %d", i+1)
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				delivered++
			}
			sent = true
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("afxdp-matrix did not stop within 30s of SIGINT:\n%s", log.String())
	}
	if !sent {
		t.Fatalf("afxdp-matrix ended before it could be interrupted (%v):\n%s", err, log.String())
	}
	t.Logf("stopped %v after the first SIGINT", time.Since(stopAt).Round(time.Millisecond))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit: %v, want status 130", err)
	}
	if s := log.String(); !strings.Contains(s, "interrupted") || !strings.Contains(s, "nothing was left behind") {
		t.Errorf("stderr does not report the interruption:\n%s", s)
	}
	if s := log.String(); delivered > 1 && !strings.Contains(s, "still removing what it made") {
		// It may have been on its way out already: what counts is
		// that nothing is left.
		t.Logf("the second SIGINT got no answer (the process was ending)")
	}
	t.Logf("stderr:\n%s", log.String())

	// What the process made is gone with it, unless something else holds
	// it: look for the holders.
	testenv.Settle(t, 3*time.Second, func() []string {
		var problems []string
		if ents, _ := filepath.Glob(filepath.Join(tmp, "*")); len(ents) > 0 {
			problems = append(problems, "left in TMPDIR: "+strings.Join(ents, ", "))
		}
		if p := cniProcesses(pid); len(p) > 0 {
			problems = append(problems, "CNI plugin processes of the run: "+strings.Join(p, ", "))
		}
		for _, name := range testenv.LinksAdded(t, rootBefore, "mx") {
			problems = append(problems, "link left in the root namespace: "+name)
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			problems = append(problems, "process still exists")
		}
		return problems
	})
}

// cniProcesses lists processes whose environment names a namespace of
// process pid (CNI_NETNS=/proc/PID/fd/N), that is, plugins it started.
func cniProcesses(pid int) []string {
	needle := []byte("CNI_NETNS=/proc/" + strconv.Itoa(pid) + "/")
	var out []string
	envs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, e := range envs {
		if b, err := os.ReadFile(e); err == nil && bytes.Contains(b, needle) {
			out = append(out, e)
		}
	}
	return out
}

// TestRender renders a saved result into the docs files without measuring.
func TestRender(t *testing.T) {
	dir := t.TempDir()
	res := matrix.Result{
		Kernel: "6.18 x86_64", CPUs: 2, Command: "afxdp-matrix -quick",
		Config: matrix.ResultConfig{Topologies: []string{"veth", "ipvlan-l2"}, Paths: []string{"afxdp"}, Modes: []string{"rx", "rr"},
			Sizes: []int{64}, Duration: "1s", Runs: 1, Rate: 10000, Baseline: "veth/afxdp"},
		Topos: []matrix.TopologyInfo{{Name: "veth", Available: true},
			{Name: "ipvlan-l2", Reason: "not available: kernel built without CONFIG_IPVLAN"}},
		Cells: []*matrix.Cell{
			{Topology: "veth", Path: "afxdp", Mode: "rx", Size: 64, Status: matrix.StatusOK, PPS: 1e6, PPSMin: 9e5, PPSMax: 1.1e6, Runs: []matrix.Sample{{PPS: 1e6}}},
			{Topology: "veth", Path: "afxdp", Mode: "rr", Size: 64, Status: matrix.StatusOK, P50: 20, P99: 40, P999: 80, Runs: []matrix.Sample{{P99: 40}}},
			{Topology: "ipvlan-l2", Path: "afxdp", Mode: "rx", Size: 64, Status: matrix.StatusUnavailable, Reason: "not available: kernel built without CONFIG_IPVLAN"},
			{Topology: "ipvlan-l2", Path: "afxdp", Mode: "rr", Size: 64, Status: matrix.StatusUnavailable, Reason: "not available: kernel built without CONFIG_IPVLAN"},
		},
	}
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "in.json")
	if err := os.WriteFile(in, js.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"-render", in, "-docs", filepath.Join(dir, "docs")}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !regexp.MustCompile(`(?m)^ipvlan-l2 +n/a +n/a +— not available: kernel built without CONFIG_IPVLAN$`).MatchString(out.String()) {
		t.Errorf("table does not say why ipvlan is missing:\n%s", out.String())
	}
	md, _ := os.ReadFile(filepath.Join(dir, "docs", "penalty-matrix.md"))
	svg, _ := os.ReadFile(filepath.Join(dir, "docs", "penalty-matrix.svg"))
	if !strings.Contains(string(md), "Command: `afxdp-matrix -quick`") || !strings.Contains(string(md), "![The penalty matrix](penalty-matrix.svg)") {
		t.Errorf("markdown lacks the command or the chart:\n%s", md)
	}
	if !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "kernel built without CONFIG_IPVLAN") {
		t.Errorf("svg:\n%s", svg)
	}
}

// savedResult writes a small result as -json writes it and returns its
// path: veth and bridge, udp and afxdp rx at 64 bytes, all saturated.
func savedResult(t *testing.T) string {
	t.Helper()
	res := matrix.Result{
		Kernel: "6.18 x86_64", CPUs: 2, Command: "afxdp-matrix -quick", CPUsAllowed: []int{0, 1},
		Config: matrix.ResultConfig{Topologies: []string{"veth", "bridge"}, Paths: []string{"udp", "afxdp"}, Modes: []string{"rx"},
			Sizes: []int{64}, Duration: "1s", Runs: 1, Rate: 10000, Baseline: "veth"},
		Topos: []matrix.TopologyInfo{{Name: "veth", Available: true}, {Name: "bridge", Available: true}},
	}
	for _, c := range []struct {
		topo, path string
		pps        float64
	}{{"veth", "udp", 500e3}, {"veth", "afxdp", 3e6}, {"bridge", "udp", 250e3}, {"bridge", "afxdp", 1e6}} {
		res.Cells = append(res.Cells, &matrix.Cell{Topology: c.topo, Path: c.path, Mode: "rx", Size: 64,
			Runs: []matrix.Sample{{PPS: c.pps, OfferedPPS: 2 * c.pps, Sent: 1000, Received: 500, Lost: 500, AppNs: 100}}})
	}
	res.Summarize()
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(t.TempDir(), "in.json")
	if err := os.WriteFile(in, js.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return in
}

// TestJSONToStdout: with -json -, stdout is the JSON alone; the table
// goes to stderr.
func TestJSONToStdout(t *testing.T) {
	in := savedResult(t)
	var out, errb bytes.Buffer
	if code := run([]string{"-render", in, "-json", "-"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res matrix.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
	}
	if len(res.Cells) != 4 || !strings.Contains(errb.String(), "topology") {
		t.Errorf("%d cells; stderr (the table):\n%s", len(res.Cells), errb.String())
	}
}

// TestRenderBaseline: -render -baseline recomputes the penalties against
// the same path on the topology given; a topology the result lacks is
// refused, naming the flag.
func TestRenderBaseline(t *testing.T) {
	in := savedResult(t)
	var out, errb bytes.Buffer
	if code := run([]string{"-render", in, "-baseline", "bridge", "-json", "-"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res matrix.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if p := res.Cell("veth", "udp", "rx", 64).Penalty; res.Config.Baseline != "bridge" || p == nil || p.Against != "bridge/udp" || p.PPSPct != 100 {
		t.Errorf("baseline %q; veth/udp penalty %+v, want +100%% against bridge/udp", res.Config.Baseline, p)
	}
	errb.Reset()
	if code := run([]string{"-render", in, "-baseline", ""}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `-baseline "": name a topology`) {
		t.Errorf("-render with an empty -baseline: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"-render", in, "-baseline", "macvlan"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `-baseline "macvlan": not among the topologies measured (veth,bridge)`) {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

// TestRenderBadInput: a result that is not one is refused, naming what is
// wrong, rather than crashing the renderer.
func TestRenderBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ in, want string }{
		{`{"config":{"sizes":[64]},"cells":[null]}`, "cells[0]: null"},
		{`{"config":{"topologies":["veth"],"paths":["udp"],"modes":["rx"],"sizes":[64]},"cells":[{"topology":"veth","path":"udp","mode":"rx","size":1500}]}`,
			"cells[0] veth/udp/rx/1500: not a cell of config"},
		{`{}`, "config.topologies: empty"},
		{`[1]`, "cannot unmarshal"},
	} {
		in := filepath.Join(dir, "in.json")
		if err := os.WriteFile(in, []byte(tc.in), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		if code := run([]string{"-render", in}, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("-render %s: exit %d, stderr %q; want exit 2 and %q", tc.in, code, errb.String(), tc.want)
		}
	}
}

// TestRenderWritesWholeFiles: an output file is replaced whole, and
// nothing else is left in its directory.
func TestRenderWritesWholeFiles(t *testing.T) {
	in := savedResult(t)
	dir := t.TempDir()
	md := filepath.Join(dir, "m.md")
	if err := os.WriteFile(md, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"-render", in, "-md", md, "-table=false"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, _ := os.ReadFile(md)
	ents, _ := os.ReadDir(dir)
	if !strings.HasPrefix(string(b), "# The penalty matrix: what veth and bridge cost a container") || len(ents) != 1 || out.Len() != 0 {
		t.Errorf("%d entries in the directory, stdout %q, file:\n%.200s", len(ents), out.String(), b)
	}
}

// TestTeardownFailureExit: a run whose topology could not be torn down
// exits 1 and says so; it never claims nothing was left behind.
func TestTeardownFailureExit(t *testing.T) {
	res := &matrix.Result{
		Cells:          []*matrix.Cell{{Topology: "veth", Path: "udp", Mode: "rx", Size: 64, Status: matrix.StatusOK}},
		TeardownErrors: []string{"run 1: tear down bridge: cni bridge DEL: exit status 1"},
	}
	var errb bytes.Buffer
	if code := verdict(res, &errb); code != 1 || !strings.Contains(errb.String(), "tearing down failed, something may be left behind: run 1: tear down bridge") {
		t.Errorf("finished run: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := stopped(res, context.Canceled, &errb); code != 130 || strings.Contains(errb.String(), "nothing was left behind") || !strings.Contains(errb.String(), "something may be left behind") {
		t.Errorf("interrupted run: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	res.TeardownErrors = nil
	if code := verdict(res, &errb); code != 0 || errb.Len() != 0 {
		t.Errorf("clean run: exit %d, stderr %q", code, errb.String())
	}
	if code := stopped(res, context.Canceled, &errb); code != 130 || !strings.Contains(errb.String(), "nothing was left behind") {
		t.Errorf("clean interrupted run: exit %d, stderr %q", code, errb.String())
	}
}

// TestMarkdownLinks: the page written by -md links the chart and the
// JSON that this run writes, where it writes them, and none it does not
// write.
func TestMarkdownLinks(t *testing.T) {
	in := savedResult(t)
	dir := t.TempDir()
	md := filepath.Join(dir, "page.md")
	var out, errb bytes.Buffer
	if code := run([]string{"-render", in, "-md", md, "-table=false"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, _ := os.ReadFile(md)
	if strings.Contains(string(b), "](penalty-matrix.svg)") || strings.Contains(string(b), "](penalty-matrix.json)") {
		t.Errorf("-md alone links files nobody wrote:\n%s", b)
	}
	if code := run([]string{"-render", in, "-md", md, "-svg", filepath.Join(dir, "img", "chart.svg"), "-json", filepath.Join(dir, "r.json"), "-table=false"}, &out, &errb); code != 2 {
		// img does not exist: refused before anything is written.
		t.Fatalf("-svg into a missing directory: exit %d", code)
	}
	if err := os.Mkdir(filepath.Join(dir, "img"), 0o755); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := run([]string{"-render", in, "-md", md, "-svg", filepath.Join(dir, "img", "chart.svg"), "-json", filepath.Join(dir, "r.json"), "-table=false"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, _ = os.ReadFile(md)
	if !strings.Contains(string(b), "![The penalty matrix](img/chart.svg)") || !strings.Contains(string(b), "[r.json](r.json)") {
		t.Errorf("the page does not link img/chart.svg and r.json:\n%s", b)
	}
}

// TestOutputsCollide: two outputs naming one file would leave only the
// last written; refused before anything is measured or written.
func TestOutputsCollide(t *testing.T) {
	in := savedResult(t)
	dir := t.TempDir()
	x := filepath.Join(dir, "x")
	for _, args := range [][]string{
		{"-json", x, "-md", x},
		{"-svg", x, "-json", filepath.Join(dir, ".", "x")},
		{"-docs", dir, "-md", filepath.Join(dir, "penalty-matrix.json")},
	} {
		var out, errb bytes.Buffer
		code := run(append([]string{"-render", in, "-table=false"}, args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), "write the same file") {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 naming the clash", args, code, errb.String())
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%q: wrote %d files", args, len(ents))
		}
	}
}

// TestCommandRetypes: the command a result records, typed into a shell,
// gives the program the same arguments. An empty argument used to be
// recorded as nothing, so that the flag before it took the next flag as
// its value, and characters such as ; & ( ` were left bare, for the shell
// to act on.
func TestCommandRetypes(t *testing.T) {
	for _, args := range [][]string{
		{"-quick", "-topologies", "veth,bridge", "-json", "out/r.json"},
		{"-cni-dir", "", "-quick"},
		{"-md", "results#1.md", "-q"},
		{"-json", "a;b&c|d.json", "-svg", "chart (new).svg"},
		{"-md", "it's $HOME/*.md", "-json", "`x`~{y}!\\z"},
	} {
		cmd := command(args)
		out, err := exec.Command("sh", "-c", `eval "set -- $1"; shift; printf '%s\0' "$@"`, "sh", cmd).Output()
		if err != nil {
			t.Errorf("sh cannot read %s: %v", cmd, err)
			continue
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		if !slices.Equal(got, args) {
			t.Errorf("command(%q) = %s; a shell reads it as %q", args, cmd, got)
		}
	}
}
