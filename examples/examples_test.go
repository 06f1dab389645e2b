// Package examples_test runs the rxdrop, txonly and l2fwd commands as a
// user would, as processes, and checks what they promise in their header
// comments: a rate line every second (with bits per second for frames
// above 64 bytes), the socket statistics at the end, a clean exit at the
// end of -d or on Ctrl-C, and a clear error on bad flags; and that every
// example offers only flags that do something there. Their loops are
// tested in internal/app; this is the command line around them.
package examples_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// build compiles the commands, once for all tests, and returns the
// directory that holds them.
func build(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "afxdp-examples"); binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "./rxdrop", "./txonly", "./l2fwd",
			"./echo", "./xconnect", "./quickstart", "./sender").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// rateLine is a per-second line: "   1.0s  rx 2.95 Mpps ...".
var rateLine = regexp.MustCompile(`^\s*\d+\.\ds  `)

// rateLines returns the per-second lines.
func rateLines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if rateLine.MatchString(l) {
			ls = append(ls, l)
		}
	}
	return ls
}

// stat returns the value of one line of the closing socket statistics.
func stat(t *testing.T, out, name string) uint64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + `\s+(\d+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in the socket statistics:\n%s", name, out)
	}
	v, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRxDropDuration runs rxdrop on its own generator-fed veth pair with
// frames above 64 bytes until -d ends.
func TestRxDropDuration(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := build(t)
	out, err := exec.Command(filepath.Join(bin, "rxdrop"), "-d", "3500ms", "-size", "256", "-cpu", "1").CombinedOutput()
	if err != nil {
		t.Fatalf("rxdrop: %v\n%s", err, out)
	}
	s := string(out)
	t.Logf("rxdrop:\n%s", s)
	lines := rateLines(s)
	if len(lines) < 2 {
		t.Fatalf("%d rate lines in a 3.5 s run; want one a second", len(lines))
	}
	for _, l := range lines {
		if !regexp.MustCompile(`rx [\d.]+ [kM]?pps [\d.]+ [kMG]?b/s`).MatchString(l) {
			t.Errorf("rate line without packets and bits per second for 256-byte frames: %q", l)
		}
	}
	if !strings.Contains(s, "every frame accounted for") {
		t.Error("no closing account")
	}
	rx := stat(t, s, "rx packets")
	if rx == 0 {
		t.Fatal("received nothing")
	}
	if b := stat(t, s, "rx bytes"); b != 256*rx {
		t.Errorf("rx bytes %d for %d frames of 256 bytes", b, rx)
	}
}

// TestL2FwdInterrupt stops l2fwd with SIGINT, as Ctrl-C would, and
// expects a normal exit with the closing statistics and account.
func TestL2FwdInterrupt(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := build(t)
	cmd := exec.Command(filepath.Join(bin, "l2fwd"), "-cpu", "1")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(rateLines(out.String())) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("l2fwd still running 20 s after SIGINT:\n%s", out.String())
	}
	s := out.String()
	t.Logf("l2fwd:\n%s", s)
	if err != nil {
		t.Fatalf("l2fwd after SIGINT: %v", err)
	}
	if n := len(rateLines(s)); n < 2 {
		t.Fatalf("%d rate lines before SIGINT", n)
	}
	if !strings.Contains(s, "every frame accounted for") {
		t.Error("no closing account")
	}
	rx, tx := stat(t, s, "rx packets"), stat(t, s, "tx packets")
	if rx == 0 || tx != rx {
		t.Errorf("l2fwd received %d and queued %d for transmit; want the same, above 0", rx, tx)
	}
}

// TestTxOnlyInterface runs txonly on an interface of the test's own
// namespace (-i) and counts its frames where they arrive: every frame
// the socket sent reached the other end. While it runs, the interface
// still receives for the kernel: txonly attaches no XDP program, and a
// kernel UDP socket there gets every datagram sent to it. No XDP program
// is left on the interface once the process has exited.
func TestTxOnlyInterface(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := build(t)
	v, err := netenv.NewVeth(&netenv.VethOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := v.Close(); err != nil {
			t.Error(err)
		}
	}()
	// The peer's sink drops what arrives there, ARP replies included:
	// static neighbours let the peer send to the host end.
	if err := pktgen.AddNeighbors(v); err != nil {
		t.Fatal(err)
	}
	sink, err := pktgen.AttachSink(v.Peer, pktgen.Drop)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ln, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.Host.IP(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	before, err := pktgen.ReadCounters(v.Peer)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "txonly"), "-i", v.Host.Name, "-d", "3s", "-size", "128")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "txonly on ") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "txonly on ") {
		cmd.Process.Kill()
		<-done
		t.Fatalf("txonly did not start:\n%s", out.String())
	}

	// While it sends: no program on the interface, and the kernel's
	// UDP socket there receives what the peer sends it.
	info, err := bpf.QueryXDP(v.Host.Index)
	if err != nil {
		t.Fatal(err)
	}
	if info.Attached() {
		t.Errorf("txonly attached an XDP program to %s: %+v", v.Host.Name, info)
	}
	const datagrams = 20
	err = v.Peer.Do(func() error {
		conn, err := net.DialUDP("udp4", nil, ln.LocalAddr().(*net.UDPAddr))
		if err != nil {
			return err
		}
		defer conn.Close()
		for i := range datagrams {
			if _, err := fmt.Fprintf(conn, "datagram %d", i); err != nil {
				return err
			}
			time.Sleep(time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	buf := make([]byte, 100)
	for got < datagrams {
		ln.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := ln.Read(buf); err != nil {
			break
		}
		got++
	}
	if got != datagrams {
		t.Errorf("during txonly -i %s, a kernel UDP socket on it received %d of %d datagrams", v.Host.Name, got, datagrams)
	}

	var werr error
	select {
	case werr = <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		werr = <-done
		t.Errorf("txonly still running 20 s into a 3 s run")
	}
	s := out.String()
	t.Logf("txonly:\n%s", s)
	if werr != nil {
		t.Fatalf("txonly: %v", werr)
	}
	after, err := pktgen.ReadCounters(v.Peer)
	if err != nil {
		t.Fatal(err)
	}
	rx := after.Sub(before)
	sent, completed := stat(t, s, "tx packets"), stat(t, s, "tx completed")
	if sent == 0 || completed != sent {
		t.Fatalf("txonly sent %d frames and had %d completed; want the same, above 0", sent, completed)
	}
	if rx.RxPackets+rx.RxDropped != sent {
		t.Errorf("txonly sent %d frames; the other end received %d and dropped %d", sent, rx.RxPackets, rx.RxDropped)
	}
	if b := stat(t, s, "tx bytes"); b != 128*sent {
		t.Errorf("tx bytes %d for %d frames of 128 bytes", b, sent)
	}
	for _, l := range rateLines(s) {
		if !regexp.MustCompile(`[\d.]+ [kMG]?b/s`).MatchString(l) {
			t.Errorf("rate line without bits per second for 128-byte frames: %q", l)
		}
	}
	info, err = bpf.QueryXDP(v.Host.Index)
	if err != nil {
		t.Fatal(err)
	}
	if info.Attached() {
		t.Errorf("XDP program left on %s after txonly exited: %+v", v.Host.Name, info)
	}
}

// TestBadFlags expects a failing exit status and an error that names
// what was wrong, before anything is built: the command's own refusals
// start with the flag as typed, dash and all ("rxdrop: -batch 0: ...").
func TestBadFlags(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := build(t)
	for _, tc := range []struct {
		cmd  string
		args []string
		want string
	}{
		{"rxdrop", []string{"-ring", "1000"}, "-ring 1000: must be a power of two"},
		{"rxdrop", []string{"-batch", "0"}, "-batch 0"},
		{"txonly", []string{"-size", "9000"}, "-size 9000"},
		{"txonly", []string{"-size", "1600"}, "-size 1600: longer than the MTU 1500"},
		{"rxdrop", []string{"-size", "2000"}, "-size 2000: longer than the MTU 1500"},
		{"rxdrop", []string{"-cpu", "-5", "-isolate"}, "-cpu -5"},
		{"rxdrop", []string{"-isolate"}, "-isolate: needs -cpu"},
		{"rxdrop", []string{"-gen-batch", "0"}, "-gen-batch 0"},
		{"rxdrop", []string{"-cpu", "4096"}, "-cpu 4096: not one of the CPUs"},
		{"l2fwd", []string{"-gen-cpu", "4096"}, "-gen-cpu 4096: not one of the CPUs"},
		{"txonly", []string{"-i", "afxdp-nosuch0"}, "-i afxdp-nosuch0: no such network interface"},
		{"l2fwd", []string{"-wait", "sometimes"}, "sometimes"},
		{"rxdrop", []string{"-frame", "0"}, "-frame 0: must be 2048 or 4096"},
		{"rxdrop", []string{"-frames", "-1"}, "-frames -1"},
		{"l2fwd", []string{"-q", "-1"}, "-q -1"},
		{"rxdrop", []string{"-busy-poll", "-1s"}, "-busy-poll -1s"},
		{"rxdrop", []string{"-busy-budget", "5"}, "-busy-budget 5: needs -busy-poll"},
		{"txonly", []string{"-tx-budget", "5"}, "-tx-budget 5"},
		{"txonly", []string{"-src-ip", "::1"}, "-src-ip ::1: must be an IPv4 address"},
		{"txonly", []string{"-dst-mac", "01:02:03:04:05:06:07:08"}, "-dst-mac 01:02:03:04:05:06:07:08"},
		// Flags that would do nothing there are not offered.
		{"l2fwd", []string{"-d", "1s", "-dst-mac", "02:00:00:00:00:01"}, "flag provided but not defined: -dst-mac"},
		{"txonly", []string{"-gen-pps", "1000"}, "flag provided but not defined: -gen-pps"},
		{"rxdrop", []string{"-tx-budget", "64"}, "flag provided but not defined: -tx-budget"},
		{"echo", []string{"-quiet"}, "flag provided but not defined: -quiet"},
		// The built-in pairs have one queue: refused before they are
		// built, not by Open once they are.
		{"rxdrop", []string{"-q", "1"}, "-q 1: the built-in veth pair has one queue"},
		{"echo", []string{"-q", "1"}, "-q 1: the built-in veth pair has one queue"},
		{"xconnect", []string{"-q", "1"}, "-q 1: the built-in veth pairs have one queue each"},
		// The run loop and the generator (-gen-cpu 0 by default) on
		// one CPU.
		{"rxdrop", []string{"-cpu", "0"}, "-cpu 0: -gen-cpu is 0 too"},
		{"xconnect", []string{"-cpu", "0"}, "-cpu 0: -gen-cpu is 0 too"},
		{"txonly", []string{"-src-port", "70000"}, "-src-port 70000: must be at most 65535"},
		{"echo", []string{"-i", "afxdp-nosuch0"}, "-i afxdp-nosuch0: no such network interface"},
		{"l2fwd", []string{"-i", "afxdp-nosuch0"}, "-i afxdp-nosuch0: no such network interface"},
		{"xconnect", []string{"-a", "afxdp-nosuch0", "-b", "afxdp-nosuch1"}, "-a afxdp-nosuch0: no such network interface"},
		{"quickstart", []string{"-n", "0"}, "-n 0: must be at least 1"},
		// -d named as typed.
		{"rxdrop", []string{"-d", "-1s"}, "-d -1s: must not be negative"},
		{"xconnect", []string{"-d", "-1s"}, "-d -1s: must not be negative"},
		{"xconnect", []string{"-a", "afxdp-nosuch0"}, "-a afxdp-nosuch0: needs -b"},
		// A flag given that does nothing there is refused, naming it,
		// before the interface is looked at: with -i (-a, -b) there is
		// no built-in generator or client; -spin is -wait hybrid's,
		// -nap -wait nap's.
		{"rxdrop", []string{"-i", "afxdp-nosuch0", "-gen-pps", "1000"}, "-gen-pps 1000: applies only to the built-in topology's generator (without -i)"},
		{"rxdrop", []string{"-i", "afxdp-nosuch0", "-size", "128"}, "-size 128: applies only to the built-in topology's generator (without -i)"},
		{"l2fwd", []string{"-i", "afxdp-nosuch0", "-gen-cpu", "1"}, "-gen-cpu 1: applies only"},
		{"l2fwd", []string{"-i", "afxdp-nosuch0", "-gen-batch", "32"}, "-gen-batch 32: applies only"},
		{"rxdrop", []string{"-i", "afxdp-nosuch0", "-spin", "1ms"}, "-spin 1ms: applies only to -wait hybrid (the wait is spin)"},
		{"echo", []string{"-i", "afxdp-nosuch0", "-nap", "50us"}, "-nap 50µs: applies only to -wait nap"},
		{"echo", []string{"-i", "afxdp-nosuch0", "-n", "5"}, "-n 5: applies only to the built-in topology's client (without -i)"},
		{"xconnect", []string{"-a", "afxdp-nosuch0", "-b", "afxdp-nosuch1", "-gen-pps", "1000"}, "-gen-pps 1000: applies only to the built-in topology's generator (without -a and -b)"},
		{"xconnect", []string{"-a", "afxdp-nosuch0", "-b", "afxdp-nosuch1", "-gen-cpu", "1"}, "-gen-cpu 1: applies only"},
		{"xconnect", []string{"-a", "afxdp-nosuch0", "-b", "afxdp-nosuch1", "-size", "128"}, "-size 128: applies only"},
		// Where they do something, they pass that check: txonly's
		// -size is its frames', -spin with -wait hybrid.
		{"txonly", []string{"-i", "afxdp-nosuch0", "-size", "128"}, "-i afxdp-nosuch0: no such network interface"},
		{"l2fwd", []string{"-i", "afxdp-nosuch0", "-wait", "hybrid", "-spin", "1ms"}, "-i afxdp-nosuch0: no such network interface"},
	} {
		// A flag wrongly accepted would run until interrupted: bound it.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, filepath.Join(bin, tc.cmd), tc.args...).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("%s %v: %v, want a failing exit\n%s", tc.cmd, tc.args, err, out)
			continue
		}
		// The command's own refusals start with the flag as typed,
		// right after the command's name; the flag package's are
		// worded its way.
		want := tc.want
		if strings.HasPrefix(want, "-") {
			want = tc.cmd + ": " + want
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("%s %v: error does not name %q:\n%s", tc.cmd, tc.args, want, out)
		}
		// "built veth pair(s) A <-> B", quickstart's "veth pair A <-> B".
		if strings.Contains(string(out), " <-> ") {
			t.Errorf("%s %v built its topology before checking its flags:\n%s", tc.cmd, tc.args, out)
		}
		if strings.Contains(string(out), "panic") {
			t.Errorf("%s %v panicked:\n%s", tc.cmd, tc.args, out)
		}
	}
}

// TestFlagsOffered checks every flag of every example against the list of
// those that do something there, from the usage each command prints for
// -h: a flag offered and not listed fails, so that none is offered where it
// would do nothing (rxdrop's -tx-budget, echo's -quiet were). Each list
// says why its flags matter there; internal/app's TestFlagSets checks the
// shared ones the same way.
func TestFlagsOffered(t *testing.T) {
	bin := build(t)
	// The socket's and the loop's knobs, and where to run.
	common := "i q batch ring frame frames mode wakeup busy-poll busy-budget wait spin nap d cpu isolate"
	for cmd, flags := range map[string][]string{
		// -quiet: the per-second report; -size and -gen-*: the
		// built-in topology's generator.
		"rxdrop": {common, "quiet size gen-cpu gen-batch gen-pps"},
		// As rxdrop, and -tx-budget: it transmits what it received.
		"l2fwd": {common, "quiet size gen-cpu gen-batch gen-pps tx-budget"},
		// No generator: the frame it builds and sends.
		"txonly": {common, "quiet tx-budget size src-mac dst-mac src-ip dst-ip src-port dst-port"},
		// Transmits its answers; no per-second report, no generator,
		// the datagrams come from its client (-n without -i).
		"echo": {common, "tx-budget port addr n"},
		// Its own knobs: two interfaces and one loop, without -a/-b
		// a generator (-gen-cpu, -gen-pps, -size).
		"xconnect":   {"a b q batch ring frames d cpu gen-cpu gen-pps size"},
		"quickstart": {"n size"},
		"sender":     {"agent pod dev queue dst dst-mac dst-port src-port rate size count frames wait registration"},
	} {
		want := map[string]bool{}
		for _, l := range flags {
			for _, f := range strings.Fields(l) {
				want[f] = true
			}
		}
		out, _ := exec.Command(filepath.Join(bin, cmd), "-h").CombinedOutput()
		got := regexp.MustCompile(`(?m)^  -(\S+)`).FindAllStringSubmatch(string(out), -1)
		if len(got) == 0 {
			t.Errorf("%s -h: no flags in the usage:\n%s", cmd, out)
			continue
		}
		for _, m := range got {
			if !want[m[1]] {
				t.Errorf("%s offers -%s, which is not listed as doing something there", cmd, m[1])
			}
			delete(want, m[1])
		}
		for f := range want {
			t.Errorf("%s: -%s not offered", cmd, f)
		}
	}
}
