package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

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
		{[]string{"-sizes", "64,9000"}, "Sizes 9000: a frame must be between 64 and 1518 bytes"},
		{[]string{"-sizes", "big"}, `-sizes "big": not a number`},
		{[]string{"-topologies", "macvlan", "-baseline", "veth/afxdp"}, `Baseline "veth/afxdp": topology "veth" is not among those measured`},
		{[]string{"-baseline", "veth"}, "must be topology/path"},
		{[]string{"-rate", "0"}, "Rate 0"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("afxdp-matrix %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, errb.String(), tc.want)
		}
	}
}

// TestInterrupt runs the command, stops it with SIGINT in the middle of
// the matrix, and checks that it says so and leaves nothing behind: no
// CNI plugin process, no IPAM store, no link in the root namespace, no
// namespace held by anyone.
func TestInterrupt(t *testing.T) {
	testenv.RequirePrivileged(t)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skipf("CNI plugins missing: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "afxdp-matrix")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	rootBefore := rootLinks(t)

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
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		// The second finished cell: the first topology is built and
		// in use, with sockets and XDP programs on it.
		if !sent && strings.Count(log.String(), "64B: ") >= 2 {
			time.Sleep(100 * time.Millisecond)
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
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
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit: %v, want status 130", err)
	}
	if s := log.String(); !strings.Contains(s, "interrupted") || !strings.Contains(s, "nothing was left behind") {
		t.Errorf("stderr does not report the interruption:\n%s", s)
	}
	t.Logf("stderr:\n%s", log.String())

	// What the process made is gone with it, unless something else holds
	// it: look for the holders.
	deadline := time.Now().Add(3 * time.Second)
	for {
		var problems []string
		if ents, _ := filepath.Glob(filepath.Join(tmp, "*")); len(ents) > 0 {
			problems = append(problems, "left in TMPDIR: "+strings.Join(ents, ", "))
		}
		if p := cniProcesses(pid); len(p) > 0 {
			problems = append(problems, "CNI plugin processes of the run: "+strings.Join(p, ", "))
		}
		for name := range rootLinks(t) {
			if !rootBefore[name] && strings.HasPrefix(name, "mx") {
				problems = append(problems, "link left in the root namespace: "+name)
			}
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			problems = append(problems, "process still exists")
		}
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range problems {
				t.Error(p)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func rootLinks(t *testing.T) map[string]bool {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, l := range links {
		m[l.Attrs().Name] = true
	}
	return m
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
	if !strings.Contains(out.String(), "ipvlan-l2 — not available: kernel built without CONFIG_IPVLAN") {
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
