// Command compare puts afxdp's rxdrop, l2fwd and txonly side by side with
// DPDK's testpmd (AF_XDP driver, busy_budget=0; rxonly, macswap and
// txonly) on the same veth pair, fed by the same generator
// (internal/pktgen, BPF_PROG_RUN live frames, on CPU 0; the code under
// test on CPU 1), alternating them for several rounds, and prints a
// Markdown table of medians and ratios. The kernel's own XDP_DROP
// rate (the ceiling for any receiver), a C receiver on libxdp's xsk API
// (bench/cref/rxdrop.c, the reference that afxdp's Go has to match) and
// kernel UDP recvmmsg run in the same rounds.
//
// It needs root, dpdk-testpmd, and gcc with libxdp's and libbpf's headers
// for the C reference; it installs what is missing with apt-get (packages
// dpdk-dev, gcc, libxdp-dev, libbpf-dev). It makes a named network
// namespace (testpmd and the C reference run there through `ip netns
// exec`) and a veth pair, and removes them, and kills both, when it ends.
// An interrupt (Ctrl-C, SIGTERM) ends the running trial at once: compare
// stops the generator, ends what the trial started and removes what it
// made before it exits. Killed outright (SIGKILL), it takes testpmd, the C
// reference and gcc with it (they get SIGKILL when it dies; apt-get is left
// to finish), and its veth pair goes with it, but its namespace, testpmd's
// runtime directory and the C reference's build directory stay, named
// after its pid, until the next compare removes them, with
// /var/run/dpdk if its testpmd made that and nothing else is in it.
//
// One compare runs at a time, and none while bench/cmd/results runs
// (except the compare that results runs itself): two at once share the
// machine's CPUs and measure each other. A compare started while another
// runs refuses at once, naming it, before it installs, makes or removes
// anything. The lock is flock(2) on /run/afxdp-bench.lock, which stays
// there between runs and which the kernel lets go of when its holder
// dies, however it dies (see bench/cmd/internal/onerun).
//
//	go run ./bench/cmd/compare -rounds 5 -d 5s
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/afxdp/afxdp/bench/cmd/internal/child"
	"github.com/afxdp/afxdp/bench/cmd/internal/onerun"
	"github.com/afxdp/afxdp/bench/cmd/internal/stale"
	"github.com/afxdp/afxdp/bench/internal/summary"
	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/xsk"
	"github.com/vishvananda/netns"
)

const (
	genCPU  = 0
	loopCPU = 1
)

var (
	rounds   = flag.Int("rounds", 5, "rounds; every contender runs once per round, in alternating order")
	dur      = flag.Duration("d", 5*time.Second, "measured time per trial")
	warmup   = flag.Duration("warmup", time.Second, "time before each trial's measurement starts")
	size     = flag.Int("size", 64, "frame length in bytes without FCS")
	batch    = flag.Int("batch", 64, "batch size of afxdp rxdrop and l2fwd and of the C reference")
	ring     = flag.Int("ring", 4096, "ring sizes of afxdp and of the C reference")
	bigRing  = flag.Int("big-ring", 16384, "ring sizes of the row that shows what rings deep enough to ride out the receiver's stalls cost (0: no such row)")
	txBatch  = flag.Int("tx-batch", 256, "afxdp txonly batch size")
	txBudget = flag.Int("tx-budget", 256, "XDP_MAX_TX_SKB_BUDGET of afxdp txonly and l2fwd (0: the kernel's 32)")
	nap      = flag.Duration("nap", app.DefaultNap, "afxdp rxdrop nap: how long the receiver sleeps when its RX ring is empty")
	pmdArgs  = flag.String("testpmd-args", "", "more testpmd application options, space-separated, after compare's own (for example \"--rxd=4096 --burst=64\")")
	only     = flag.String("only", "", "run only the contenders whose names match this regular expression")
	verbose  = flag.Bool("v", false, "log every trial")
	jsonOut  = flag.String("json", "", "also write the medians to this JSON file")
)

// trial is one measurement.
type trial struct {
	pps     float64 // packets received (rx) or arriving at the peer (tx) per second
	offered float64 // generator's rate (rx)
	drops   float64 // socket drops: RX ring full plus no frame in the fill ring (afxdp, C, testpmd rxonly and macswap), receive buffer full (UDP)
	full    float64 // of which RX ring full (afxdp)
	cpu     float64 // CPU-s per million packets of the code under test
}

type contender struct {
	name  string
	group string // "rx" or "tx"
	run   func(*env) (trial, error)
	off   bool // left out by a flag
	res   []trial
}

type env struct {
	// ctx ends when compare is interrupted: the trial's waits end with
	// it, so that the trial returns at once and undoes what it set up.
	// nil: never.
	ctx  context.Context
	ns   *netenv.Netns
	topo *app.Topology
	cref string // the C reference receiver's binary
	// napi, when set, is the end whose threaded-NAPI threads window pins
	// to napiCPU once the code under test has started and made them.
	napi    *netenv.Endpoint
	napiCPU int
}

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

// ensureCRef builds the C reference receiver (bench/cref/rxdrop.c) with
// gcc against libxdp into dir, installing gcc, libxdp-dev and libbpf-dev
// with apt-get when one is missing, and returns the binary's path.
func ensureCRef(dir string) (string, error) {
	src, err := crefSource()
	if err != nil {
		return "", err
	}
	if err := aptInstall([]string{"gcc", "libxdp-dev", "libbpf-dev"}, "/usr/bin/gcc", "/usr/include/xdp/xsk.h", "/usr/include/bpf/libbpf.h"); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "rxdrop")
	var out bytes.Buffer
	cc := exec.Command("gcc", "-O2", "-Wall", "-o", bin, src, "-lxdp", "-lbpf")
	cc.Stdout, cc.Stderr = &out, &out
	if err = child.Start(cc); err == nil {
		err = cc.Wait()
	}
	if err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", src, err, out.Bytes())
	}
	return bin, nil
}

// crefSource finds bench/cref/rxdrop.c: beside this source file when it
// was built from a checkout (go run), else under the working directory.
func crefSource() (string, error) {
	var tries []string
	if _, file, _, ok := runtime.Caller(0); ok {
		tries = append(tries, filepath.Join(filepath.Dir(file), "..", "..", "cref", "rxdrop.c"))
	}
	tries = append(tries, filepath.Join("bench", "cref", "rxdrop.c"))
	for _, p := range tries {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("C reference source not found (tried %s); run from the repository's root", strings.Join(tries, ", "))
}

// aptInstall installs pkgs with apt-get unless need names files that all
// exist.
func aptInstall(pkgs []string, need ...string) error {
	missing := len(need) == 0
	for _, f := range need {
		if _, err := os.Stat(f); err != nil {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	install := func() error {
		cmd := exec.Command("apt-get", append([]string{"install", "-y"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
	if err := install(); err != nil {
		up := exec.Command("apt-get", "update")
		up.Stdout, up.Stderr = os.Stderr, os.Stderr
		if err := up.Run(); err != nil {
			return fmt.Errorf("apt-get update: %w", err)
		}
		if err := install(); err != nil {
			return fmt.Errorf("install %s: %w", strings.Join(pkgs, " "), err)
		}
	}
	return nil
}

func ensureTestpmd() error {
	if _, err := exec.LookPath("dpdk-testpmd"); err == nil {
		return nil
	}
	if err := aptInstall([]string{"dpdk-dev"}); err != nil {
		return err
	}
	_, err := exec.LookPath("dpdk-testpmd")
	return err
}

// checkRings refuses ring sizes the sockets would refuse only in the
// middle of a run.
func checkRings(ring, bigRing, batch int) error {
	for _, f := range []struct {
		name string
		v    int
	}{{"-ring", ring}, {"-big-ring", bigRing}} {
		if f.name == "-big-ring" && f.v == 0 {
			continue
		}
		if f.v < batch || f.v > ringMax || f.v&(f.v-1) != 0 {
			return fmt.Errorf("%s %d: must be a power of two between the batch size %d and %d", f.name, f.v, batch, ringMax)
		}
	}
	return nil
}

// checkOutput refuses an output file (""; none) that could not be
// written at the end of the run, after all its rounds: one in a directory
// that is not there, or one that is a directory itself.
func checkOutput(path string) error {
	if path == "" {
		return nil
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// ringMax is the largest ring checkRings lets through: 1<<16-entry rings
// make a 512 MiB UMEM of 2 KiB frames.
const ringMax = 1 << 16

// checkFlags refuses flag values that would fail only once the topology
// is built, or in the middle of a run, or (-rounds 0) leave nothing to
// report.
func checkFlags() error {
	switch {
	case flag.NArg() > 0:
		return fmt.Errorf("argument %q: compare takes flags only", flag.Arg(0))
	case *rounds < 1:
		return fmt.Errorf("-rounds %d: must be at least 1", *rounds)
	case *dur <= 0:
		return fmt.Errorf("-d %v: must be positive", *dur)
	case *warmup < 0:
		return fmt.Errorf("-warmup %v: must not be negative", *warmup)
	case *size < packet.MinFrame || *size > app.TopologyMTU+packet.EthLen:
		return fmt.Errorf("-size %d: must be between %d and %d (the veth pair's MTU %d plus the Ethernet header)",
			*size, packet.MinFrame, app.TopologyMTU+packet.EthLen, app.TopologyMTU)
	case *batch < 1 || *batch > 4096:
		return fmt.Errorf("-batch %d: must be between 1 and 4096", *batch)
	case *txBatch < 1 || *txBatch > *ring:
		return fmt.Errorf("-tx-batch %d: must be between 1 and the ring size %d", *txBatch, *ring)
	case *txBudget != 0 && (*txBudget < 32 || *txBudget > *ring):
		return fmt.Errorf("-tx-budget %d: must be 0 or between 32 and the ring size %d", *txBudget, *ring)
	case *nap <= 0 || *nap > time.Second:
		return fmt.Errorf("-nap %v: must be above 0 and at most 1s", *nap)
	}
	for _, a := range strings.Fields(*pmdArgs) {
		if !strings.HasPrefix(a, "--") {
			return fmt.Errorf("-testpmd-args: %q is not a testpmd option (they start with --; give values as --name=value)", a)
		}
	}
	if err := checkRings(*ring, *bigRing, *batch); err != nil {
		return err
	}
	if err := checkOutput(*jsonOut); err != nil {
		return fmt.Errorf("-json %s: %w", *jsonOut, err)
	}
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		return err
	}
	for _, cpu := range []int{genCPU, loopCPU} {
		if !cpus.Contains(cpu) {
			return fmt.Errorf("needs CPUs %d (generator) and %d (code under test); this process may run on %s", genCPU, loopCPU, cpus)
		}
	}
	return nil
}

func run(ctx context.Context) (err error) {
	if err := checkFlags(); err != nil {
		return err
	}
	all := []*contender{
		{name: "kernel XDP_DROP (ceiling)", group: "rx", run: xdpDrop},
		{name: "testpmd rxonly", group: "rx", run: func(e *env) (trial, error) { return testpmd(ctx, e, "rxonly") }},
		{name: "C libxdp rxdrop", group: "rx", run: func(e *env) (trial, error) { return cRxDrop(ctx, e) }},
		{name: "afxdp rxdrop spin", group: "rx", run: func(e *env) (trial, error) { return afxdpRx(e, app.WaitSpin) }},
		{name: "afxdp rxdrop hybrid", group: "rx", run: func(e *env) (trial, error) { return afxdpRx(e, app.WaitHybrid) }},
		{name: "afxdp rxdrop poll", group: "rx", run: func(e *env) (trial, error) { return afxdpRx(e, app.WaitPoll) }},
		{name: "afxdp rxdrop nap", group: "rx", run: func(e *env) (trial, error) { return afxdpRx(e, app.WaitNap) }},
		{name: "afxdp rxdrop spin, big rings", group: "rx", run: func(e *env) (trial, error) { return afxdpRxRing(e, app.WaitSpin, *bigRing) }, off: *bigRing == 0},
		{name: "kernel UDP recvmmsg", group: "rx", run: udpRecv},
		{name: "kernel XDP_DROP (ceiling), threaded NAPI", group: "rxt", run: threadedRx(xdpDrop)},
		{name: "testpmd rxonly, threaded NAPI", group: "rxt", run: threadedRx(func(e *env) (trial, error) { return testpmd(ctx, e, "rxonly") })},
		{name: "C libxdp rxdrop, threaded NAPI", group: "rxt", run: threadedRx(func(e *env) (trial, error) { return cRxDrop(ctx, e) })},
		{name: "afxdp rxdrop spin, threaded NAPI", group: "rxt", run: threadedRx(func(e *env) (trial, error) { return afxdpRx(e, app.WaitSpin) })},
		{name: "afxdp rxdrop hybrid, threaded NAPI", group: "rxt", run: threadedRx(func(e *env) (trial, error) { return afxdpRx(e, app.WaitHybrid) })},
		{name: "afxdp rxdrop poll, threaded NAPI", group: "rxt", run: threadedRx(func(e *env) (trial, error) { return afxdpRx(e, app.WaitPoll) })},
		{name: "afxdp rxdrop nap, threaded NAPI", group: "rxt", run: threadedRx(func(e *env) (trial, error) { return afxdpRx(e, app.WaitNap) })},
		{name: "kernel UDP recvmmsg, threaded NAPI", group: "rxt", run: threadedRx(udpRecv)},
		{name: "testpmd macswap", group: "fwd", run: func(e *env) (trial, error) { return testpmd(ctx, e, "macswap") }},
		{name: "afxdp l2fwd", group: "fwd", run: afxdpFwd},
		{name: "testpmd txonly", group: "tx", run: func(e *env) (trial, error) { return testpmd(ctx, e, "txonly") }},
		{name: "afxdp txonly", group: "tx", run: afxdpTx},
		{name: "testpmd txonly, peer threaded NAPI", group: "txt", run: threaded(func(e *env) (trial, error) { return testpmd(ctx, e, "txonly") })},
		{name: "afxdp txonly, peer threaded NAPI", group: "txt", run: threaded(afxdpTx)},
	}
	// The flags' last check, before anything is installed or built.
	onlyRe, err := regexp.Compile(*only)
	if err != nil {
		return fmt.Errorf("-only: %w", err)
	}
	var cs []*contender
	for _, c := range all {
		if !c.off && onlyRe.MatchString(c.name) {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return fmt.Errorf("-only %q matches no contender", *only)
	}
	// Before anything is installed, made or removed: a compare or
	// results that runs already would measure alongside, and its
	// testpmd's /var/run/dpdk is not to be removed from under it.
	lock, err := onerun.Acquire("compare")
	if err != nil {
		return err
	}
	defer lock.Close()
	if slices.ContainsFunc(cs, func(c *contender) bool { return strings.HasPrefix(c.name, "testpmd") }) {
		if err := ensureTestpmd(); err != nil {
			return err
		}
	}
	removeStale(os.Stderr)
	ns, err := netenv.NewNetns(fmt.Sprintf("%s-%s", ownName(), netenv.RandomName("")[:6]))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ns.Close()) }()
	t, err := app.NewTopology(&app.TopologyOptions{PeerNS: ns, Generator: true, FrameLen: *size, HostSink: true})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	e := &env{ctx: ctx, ns: ns, topo: t}
	fmt.Fprintf(os.Stderr, "veth %s <-> %s (netns %s); %d rounds of %v\n", t.Veth.Host.Name, t.Veth.Peer.Name, ns.Name(), *rounds, *dur)

	if slices.ContainsFunc(cs, func(c *contender) bool { return strings.HasPrefix(c.name, "C ") }) {
		dir, err := os.MkdirTemp("", ownName()+"-cref")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if e.cref, err = ensureCRef(dir); err != nil {
			return err
		}
	}
	for r := range *rounds {
		order := slices.Clone(cs)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, c := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			tr, err := c.run(e)
			if ctx.Err() != nil {
				// Whatever the trial made of it: it was cut short.
				return fmt.Errorf("%s, round %d: %w", c.name, r+1, ctx.Err())
			}
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			c.res = append(c.res, tr)
			if *verbose {
				fmt.Fprintf(os.Stderr, "round %d %-28s %6.3f Mpps (offered %6.3f, drops %.0f, %.3f CPU-s/Mpkt)\n",
					r+1, c.name, tr.pps/1e6, tr.offered/1e6, tr.drops, tr.cpu)
			}
		}
	}
	report(os.Stdout, cs)
	if *jsonOut != "" {
		return writeJSON(*jsonOut, cs)
	}
	return nil
}

// writeJSON writes the medians of every contender to path. A contender
// without trials gets zeros; a figure that is not a finite number (a
// trial that should have been refused) fails the write with an error that
// names the contender and the figure, rather than json's "unsupported
// value".
func writeJSON(path string, cs []*contender) error {
	var out []summary.Summary
	for _, c := range cs {
		pps := func(t trial) float64 { return t.pps / 1e6 }
		lo, hi := ppsRange(c.res)
		s := summary.Summary{
			Name: c.name, Group: c.group, Trials: len(c.res),
			Mpps:        median(c.res, pps),
			Min:         lo / 1e6,
			Max:         hi / 1e6,
			OfferedMpps: median(c.res, func(t trial) float64 { return t.offered / 1e6 }),
			Drops:       median(c.res, func(t trial) float64 { return t.drops }),
			RxRingFull:  median(c.res, func(t trial) float64 { return t.full }),
			CPUPerMpkt:  median(c.res, func(t trial) float64 { return t.cpu }),
		}
		for _, t := range c.res {
			s.Rounds = append(s.Rounds, pps(t))
		}
		for _, f := range []struct {
			name string
			v    []float64
		}{
			{"Mpps", []float64{s.Mpps, s.Min, s.Max}}, {"offered Mpps", []float64{s.OfferedMpps}},
			{"drops", []float64{s.Drops, s.RxRingFull}}, {"CPU-s/Mpkt", []float64{s.CPUPerMpkt}},
			{"rounds' Mpps", s.Rounds},
		} {
			for _, v := range f.v {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return fmt.Errorf("write %s: %s: %s is %v", path, c.name, f.name, v)
				}
			}
		}
		out = append(out, s)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// threadedRx runs fn with threaded NAPI on the receiving end of the
// generator's frames (the peer), so that its XDP program, redirect and
// copy into the UMEM run in a kernel thread instead of in the generator's
// softirq. The thread is pinned to the receiver's CPU: on two cores it
// has to share one, and the generator's CPU is already full.
func threadedRx(fn func(*env) (trial, error)) func(*env) (trial, error) {
	return func(e *env) (_ trial, err error) {
		if err := app.SetVethThreadedNAPI(e.topo.Veth.Peer, true); err != nil {
			return trial{}, err
		}
		e.napi, e.napiCPU = &e.topo.Veth.Peer, loopCPU
		defer func() {
			e.napi = nil
			err = errors.Join(err, app.SetVethThreadedNAPI(e.topo.Veth.Peer, false))
		}()
		return fn(e)
	}
}

// threaded runs fn with threaded NAPI on the host end, which receives
// what the peer sends, its thread pinned to the generator's CPU (idle
// while transmitters are measured), so that the receiving work leaves the
// sender's CPU. The host end's sink program keeps its NAPI instances, and
// so the thread, alive throughout.
func threaded(fn func(*env) (trial, error)) func(*env) (trial, error) {
	return func(e *env) (_ trial, err error) {
		if err := app.SetThreadedNAPI(e.topo.Veth.Host, true); err != nil {
			return trial{}, err
		}
		defer func() { err = errors.Join(err, app.SetThreadedNAPI(e.topo.Veth.Host, false)) }()
		if err := pinNAPI(e.topo.Veth.Host, genCPU); err != nil {
			return trial{}, err
		}
		return fn(e)
	}
}

// pinNAPI pins ep's threaded-NAPI threads to cpu and fails if there were
// none, which would mean threaded NAPI is not in effect.
func pinNAPI(ep netenv.Endpoint, cpu int) error {
	n, err := app.PinNAPIThreads(ep, cpu)
	if err == nil && n == 0 {
		err = fmt.Errorf("no threaded-NAPI thread of %s to pin: threaded NAPI is not in effect", ep.Name)
	}
	return err
}

func median(ts []trial, f func(trial) float64) float64 {
	v := make([]float64, len(ts))
	for i, t := range ts {
		v[i] = f(t)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func report(w io.Writer, cs []*contender) {
	ref := map[string]float64{}
	for _, c := range cs {
		if strings.HasPrefix(c.name, "testpmd") {
			ref[c.group] = median(c.res, func(t trial) float64 { return t.pps })
		}
	}
	udp := map[string]float64{}
	for _, c := range cs {
		if strings.HasPrefix(c.name, "kernel UDP recvmmsg") {
			udp[c.group] = median(c.res, func(t trial) float64 { return t.pps })
		}
	}
	fmt.Fprintf(w, "| contender | Mpps (median) | min–max | offered Mpps | socket drops | of which RX ring full | CPU-s/Mpkt | vs testpmd | vs UDP recvmmsg |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range cs {
		pps := median(c.res, func(t trial) float64 { return t.pps })
		lo, hi := ppsRange(c.res)
		off := median(c.res, func(t trial) float64 { return t.offered })
		offs, drops, full, ratio, vsUDP := "", "", "", "", ""
		if off > 0 {
			offs = fmt.Sprintf("%.2f", off/1e6)
		}
		// The kernel's XDP_DROP runs in the generator's softirq, whose
		// CPU no row counts: it has no figure of its own, not 0.
		cpu := ""
		if !strings.HasPrefix(c.name, "kernel XDP_DROP") {
			cpu = fmt.Sprintf("%.3f", median(c.res, func(t trial) float64 { return t.cpu }))
		}
		switch {
		case c.group == "tx" || c.group == "txt":
			// Transmit only: nothing received, no drops measured.
		case strings.HasPrefix(c.name, "afxdp") || strings.HasPrefix(c.name, "C "):
			drops = fmt.Sprintf("%.0f", median(c.res, func(t trial) float64 { return t.drops }))
			full = fmt.Sprintf("%.0f", median(c.res, func(t trial) float64 { return t.full }))
		case strings.HasPrefix(c.name, "testpmd rxonly"), strings.HasPrefix(c.name, "testpmd macswap"),
			strings.HasPrefix(c.name, "kernel UDP"):
			// testpmd: counted at the veth (see testpmd), of either
			// kind; UDP: the socket's, for a full receive buffer.
			drops = fmt.Sprintf("%.0f", median(c.res, func(t trial) float64 { return t.drops }))
		}
		if r := ref[c.group]; r > 0 {
			ratio = fmt.Sprintf("%.2f×", pps/r)
		}
		if u := udp[c.group]; u > 0 {
			vsUDP = fmt.Sprintf("%.1f×", pps/u)
		}
		fmt.Fprintf(w, "| %s | %.2f | %.2f–%.2f | %s | %s | %s | %s | %s | %s |\n",
			c.name, pps/1e6, lo/1e6, hi/1e6, offs, drops, full, cpu, ratio, vsUDP)
	}
}

// ppsRange returns the lowest and highest rate of ts, 0 and 0 for none.
func ppsRange(ts []trial) (lo, hi float64) {
	if len(ts) == 0 {
		return 0, 0
	}
	by := func(a, b trial) int { return cmpf(a.pps, b.pps) }
	return slices.MinFunc(ts, by).pps, slices.MaxFunc(ts, by).pps
}

func cmpf(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sleep waits d, or until the run is interrupted, and then returns the
// context's error.
func (e *env) sleep(d time.Duration) error {
	if e.ctx == nil {
		time.Sleep(d)
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-e.ctx.Done():
		return e.ctx.Err()
	}
}

// window runs the generator for warmup+dur and calls at(0) after the
// warm-up and at(1) at the end; it returns the generator's rate, the
// window's length and the generator's CPU time in it. When the run is
// interrupted, it stops the generator and returns the context's error at
// once, at(1) not called.
func window(e *env, at func(i int)) (offered float64, secs float64, gcpu time.Duration, err error) {
	offered, _, secs, gcpu, err = windowFrames(e, at)
	return offered, secs, gcpu, err
}

// windowFrames is window that also returns how many frames the generator
// offered over its whole run, which goes on past the window to the end of
// its current BPF_PROG_RUN call.
func windowFrames(e *env, at func(i int)) (offered float64, frames uint64, secs float64, gcpu time.Duration, err error) {
	if e.napi != nil {
		// The code under test made the NAPI instances (its XDP program),
		// and with them the threads.
		if err := pinNAPI(*e.napi, e.napiCPU); err != nil {
			return 0, 0, 0, 0, err
		}
	}
	g, err := e.topo.StartGenerator(genCPU)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if err := e.sleep(*warmup); err != nil {
		_, serr := g.Stop()
		return 0, 0, 0, 0, errors.Join(err, serr)
	}
	// The process's CPU time, which at reads, and the generator's are on
	// one clock: read so that the process's span holds the generator's.
	t0 := time.Now()
	at(0)
	c0 := g.CPU()
	if err := e.sleep(*dur); err != nil {
		_, serr := g.Stop()
		return 0, 0, 0, 0, errors.Join(err, serr)
	}
	c1, t1 := g.CPU(), time.Now()
	at(1)
	if _, err := g.Stop(); err != nil {
		return 0, 0, 0, 0, err
	}
	secs = t1.Sub(t0).Seconds()
	// The generator's count moves once per BPF_PROG_RUN call (2^20
	// frames): its rate over its whole run is the better figure.
	return g.Rate(), g.Sent(), secs, c1 - c0, nil
}

func xdpDrop(e *env) (trial, error) {
	s, err := pktgen.AttachSink(e.topo.Veth.Peer, pktgen.Drop)
	if err != nil {
		return trial{}, err
	}
	defer s.Close()
	var p [2]uint64
	var rerr error
	off, secs, _, err := window(e, func(i int) {
		var e2 error
		p[i], e2 = e.topo.PeerReceived()
		rerr = errors.Join(rerr, e2)
	})
	if err = errors.Join(err, rerr); err != nil {
		return trial{}, err
	}
	pps, _, err := rates("the peer end took in nothing", float64(p[1]-p[0]), secs, 0)
	if err != nil {
		return trial{}, err
	}
	return trial{pps: pps, offered: off}, nil
}

// rates turns what a trial counted over its window into a rate and the
// CPU seconds per million packets. A trial that moved no packet is
// refused, as the testpmd and C rows refuse theirs: the row is broken,
// and its CPU per packet would be NaN or infinite, which no JSON summary
// can hold. what says what went wrong ("received nothing"). cpu is
// clamped at 0: it is the process's time less the generator thread's,
// both on the scheduler's clock, read microseconds apart.
func rates(what string, got, secs float64, cpu time.Duration) (pps, cpuPerMpkt float64, err error) {
	if !(got > 0) || !(secs > 0) {
		return 0, 0, fmt.Errorf("%s in %.2fs", what, secs)
	}
	return got / secs, max(cpu, 0).Seconds() / (got / 1e6), nil
}

func openPeer(e *env, c *app.Config) (*xsk.Socket, error) {
	var s *xsk.Socket
	err := e.topo.Veth.Peer.Do(func() error {
		var err error
		s, err = xsk.Open(e.topo.Veth.Peer.Name, 0, c.XSKOptions())
		return err
	})
	return s, err
}

// loopRun runs fn on a thread pinned to loopCPU until stop is called.
func loopRun(fn func() error) (stop func() error) {
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		unpin, perr := app.PinThread(loopCPU)
		if perr != nil {
			err = perr
			return
		}
		defer unpin()
		err = fn()
	}()
	return func() error { wg.Wait(); return err }
}

func afxdpRx(e *env, w app.WaitMode) (trial, error) { return afxdpRxRing(e, w, *ring) }

// afxdpRxRing runs afxdp's rxdrop with every ring of the given size (and
// the UMEM four times that many frames).
func afxdpRxRing(e *env, w app.WaitMode, ring int) (trial, error) {
	var c app.Config
	c.Defaults()
	c.Batch, c.RingSize, c.Wait, c.Nap = *batch, ring, w, *nap
	s, err := openPeer(e, &c)
	if err != nil {
		return trial{}, err
	}
	defer s.Close()
	l := app.NewLoop(s, &c)
	wait := loopRun(func() error { _, err := l.RxDrop(0); return err })
	var n [2]uint64
	var cpu [2]time.Duration
	var st [2]xsk.Stats
	off, secs, gcpu, err := window(e, func(i int) {
		n[i], cpu[i] = l.C.RxPackets.Load(), app.ProcessCPU()
		st[i], _ = s.Stats()
	})
	l.Stop.Store(true)
	if err = errors.Join(err, wait()); err != nil {
		return trial{}, err
	}
	pps, cpuPer, err := rates("received nothing", float64(n[1]-n[0]), secs, cpu[1]-cpu[0]-gcpu)
	if err != nil {
		return trial{}, err
	}
	drops, full := socketDrops(st)
	return trial{pps: pps, offered: off, drops: drops, full: full, cpu: cpuPer}, nil
}

func afxdpTx(e *env) (trial, error) {
	var c app.Config
	c.Defaults()
	c.Batch, c.RingSize, c.TxBudget, c.PacketSize = *txBatch, *ring, *txBudget, *size
	s, err := openPeer(e, &c)
	if err != nil {
		return trial{}, err
	}
	defer s.Close()
	l := app.NewLoop(s, &c)
	if err := l.PrepareTx(txFrame(e)); err != nil {
		return trial{}, err
	}
	wait := loopRun(func() error { _, err := l.TxOnly(0); return errors.Join(err, l.ReleaseTx()) })
	if err := e.sleep(*warmup); err != nil {
		l.Stop.Store(true)
		return trial{}, errors.Join(err, wait())
	}
	p0, err0 := e.topo.HostReceived()
	c0, t0 := app.ProcessCPU(), time.Now()
	if err := e.sleep(*dur); err != nil {
		l.Stop.Store(true)
		return trial{}, errors.Join(err, wait())
	}
	p1, err1 := e.topo.HostReceived()
	c1, t1 := app.ProcessCPU(), time.Now()
	l.Stop.Store(true)
	if err := errors.Join(err0, err1, wait()); err != nil {
		return trial{}, err
	}
	pps, cpuPer, err := rates("nothing arrived at the host end", float64(p1-p0), t1.Sub(t0).Seconds(), c1-c0)
	if err != nil {
		return trial{}, err
	}
	return trial{pps: pps, cpu: cpuPer}, nil
}

// socketDrops returns the socket's drops between two readings of its
// statistics: RX ring full plus no frame in the fill ring, and of those
// RX ring full.
func socketDrops(st [2]xsk.Stats) (drops, full float64) {
	full = float64(st[1].RxRingFull - st[0].RxRingFull)
	return full + float64(st[1].RxDropped-st[0].RxDropped), full
}

// afxdpFwd runs afxdp's l2fwd on the peer end: every frame the generator
// sends is received, its MAC addresses swapped, and transmitted back out
// of the same socket to the host end, where it is counted.
func afxdpFwd(e *env) (trial, error) {
	var c app.Config
	c.Defaults()
	c.Batch, c.RingSize, c.TxBudget = *batch, *ring, *txBudget
	s, err := openPeer(e, &c)
	if err != nil {
		return trial{}, err
	}
	defer s.Close()
	l := app.NewLoop(s, &c)
	wait := loopRun(func() error { _, err := l.L2Fwd(0); return err })
	var host [2]uint64
	var cpu [2]time.Duration
	var st [2]xsk.Stats
	var herr error
	off, secs, gcpu, err := window(e, func(i int) {
		var e1, e2 error
		host[i], e1 = e.topo.HostReceived()
		cpu[i] = app.ProcessCPU()
		st[i], e2 = s.Stats()
		herr = errors.Join(herr, e1, e2)
	})
	l.Stop.Store(true)
	if err = errors.Join(err, herr, wait()); err != nil {
		return trial{}, err
	}
	pps, cpuPer, err := rates("forwarded nothing", float64(host[1]-host[0]), secs, cpu[1]-cpu[0]-gcpu)
	if err != nil {
		return trial{}, err
	}
	drops, full := socketDrops(st)
	return trial{pps: pps, offered: off, drops: drops, full: full, cpu: cpuPer}, nil
}

func txFrame(e *env) []byte {
	// The generator's frame, turned around: peer to host.
	f := slices.Clone(e.topo.Frame)
	copy(f[0:6], e.topo.Veth.Host.MAC)
	copy(f[6:12], e.topo.Veth.Peer.MAC)
	return f
}

// udpPause is how long udpRecv's receiver sleeps after each call, 0 but
// in a test that needs the socket to drop datagrams during the window.
var udpPause time.Duration

func udpRecv(e *env) (trial, error) {
	s, err := pktgen.AttachSink(e.topo.Veth.Peer, pktgen.Pass)
	if err != nil {
		return trial{}, err
	}
	defer s.Close()
	var r *baseline.UDPReceiver
	err = e.topo.Veth.Peer.Do(func() (err error) {
		r, err = baseline.NewUDPReceiver(netip.AddrPortFrom(e.topo.Veth.Peer.IP(), 9000), nil)
		return err
	})
	if err != nil {
		return trial{}, err
	}
	defer r.Close()
	var stop sync.WaitGroup
	done := make(chan struct{})
	stop.Add(1)
	var rerr error
	go func() {
		defer stop.Done()
		unpin, err := app.PinThread(loopCPU)
		if err != nil {
			rerr = err
			return
		}
		defer unpin()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := r.Receive(1<<16, time.Now().Add(100*time.Millisecond)); err != nil {
				rerr = err
				return
			}
			if udpPause > 0 {
				time.Sleep(udpPause)
			}
		}
	}()
	var st [2]baseline.Stats
	var cpu [2]time.Duration
	var serr error
	off, secs, gcpu, err := window(e, func(i int) {
		var err error
		st[i], err = r.Stats()
		cpu[i] = app.ProcessCPU()
		serr = errors.Join(serr, err)
	})
	close(done)
	stop.Wait()
	if err = errors.Join(err, rerr, serr); err != nil {
		return trial{}, err
	}
	pps, cpuPer, err := rates("received nothing", float64(st[1].Packets-st[0].Packets), secs, cpu[1]-cpu[0]-gcpu)
	if err != nil {
		return trial{}, err
	}
	// The socket's drops (a full receive buffer), a 32-bit count in
	// the kernel (SO_MEMINFO), which may wrap between the readings.
	drops := float64(uint32(st[1].Drops) - uint32(st[0].Drops))
	return trial{pps: pps, offered: off, drops: drops, cpu: cpuPer}, nil
}

var (
	reRx = regexp.MustCompile(`RX-packets:\s+(\d+)`)
	reTx = regexp.MustCompile(`TX-packets:\s+(\d+)`)
)

// testpmd measures dpdk-testpmd in mode (rxonly, txonly or macswap) on
// the peer end.
func testpmd(ctx context.Context, e *env, mode string) (trial, error) {
	p, err := startTestpmd(ctx, e, mode)
	if err != nil {
		return trial{}, err
	}
	defer p.kill()
	switch mode {
	case "rxonly":
		return testpmdRx(e, p)
	case "macswap":
		return testpmdFwd(e, p)
	}
	return testpmdTx(e, p)
}

// testpmdProc is a running dpdk-testpmd.
type testpmdProc struct {
	cmd     *exec.Cmd
	mode    string
	out     strings.Builder // stdout; read only once scanned is closed
	stderr  strings.Builder
	scanned chan struct{} // closed when stdout ends
	done    bool
}

// startTestpmd starts dpdk-testpmd in mode on the peer end, lcore 0 its
// main thread and lcore 1 forwarding, as PEERS.md has it, and returns once
// it forwards.
func startTestpmd(ctx context.Context, e *env, mode string) (*testpmdProc, error) {
	dpdkParent.once.Do(func() {
		_, err := os.Stat(dpdkDir())
		dpdkParent.made = errors.Is(err, fs.ErrNotExist)
	})
	args := []string{"netns", "exec", e.ns.Name(), "dpdk-testpmd", "-l", "0-1", "--no-pci", "--no-huge", "-m", "1024",
		"--no-shconf", "--file-prefix", testpmdPrefix(),
		"--vdev", "net_af_xdp0,iface=" + e.topo.Veth.Peer.Name + ",start_queue=0,queue_count=1,busy_budget=0",
		"--", "--forward-mode=" + mode, "--nb-cores=1", "--stats-period", "1"}
	args = append(args, strings.Fields(*pmdArgs)...)
	switch mode {
	case "rxonly":
	case "txonly":
		args = append(args, fmt.Sprintf("--txpkts=%d", *size))
	case "macswap":
		// One port: forward back out of the port a frame came in on.
		args = append(args, "--port-topology=loop")
	default:
		return nil, fmt.Errorf("testpmd mode %q: want rxonly, txonly or macswap", mode)
	}
	p := &testpmdProc{mode: mode, scanned: make(chan struct{})}
	// Not killed when ctx ends: an interrupted trial stops the generator
	// first and then testpmd, else the rest of the generator's call goes
	// through the kernel's stack, slowly, once testpmd's socket is gone.
	p.cmd = exec.Command("ip", args...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = &p.stderr
	if err := child.Start(p.cmd); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		defer close(p.scanned)
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.out.WriteString(line + "\n")
			if strings.Contains(line, "Port statistics") || strings.Contains(line, "Press Ctrl+C") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
		return p, nil
	case <-p.scanned:
		p.kill()
		return nil, fmt.Errorf("testpmd %s exited before it started forwarding:\n%s\n%s", mode, p.out.String(), p.stderr.String())
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, fmt.Errorf("testpmd %s did not start within 30s:\n%s\n%s", mode, p.out.String(), p.stderr.String())
	}
}

// testpmdPrefix is testpmd's --file-prefix, one per compare process:
// ownName, followed by madeDPDKDir if dpdkDir was missing when this
// process first started testpmd. testpmd then made it, and a compare
// killed outright cannot remove it: the prefix tells the next one's
// removeStale that it may.
func testpmdPrefix() string {
	if dpdkParent.made {
		return ownName() + madeDPDKDir
	}
	return ownName()
}

// madeDPDKDir ends the --file-prefix of a compare whose testpmd made
// dpdkDir.
const madeDPDKDir = "-madedir"

// dpdkParent records whether dpdkDir was missing before this process
// first started testpmd, which then made it.
var dpdkParent struct {
	once sync.Once
	made bool
}

// owner names what compare makes after its process: afxcmpPID.
var owner = stale.New("compare", "afxcmp")

// ownName is what this process's namespace (ownName-HEX), testpmd's
// runtime directory (testpmdPrefix) and the C reference's build directory
// (ownName-crefRANDOM) are named after: afxcmpPID. A compare killed
// outright (SIGKILL) leaves them behind, and the next one removes them:
// see removeStale.
func ownName() string { return owner.Name() }

// removeStale removes what compare processes that are gone left behind:
// their named namespaces, testpmd's runtime directories and the C
// reference's build directories, all named after the process (ownName),
// and dpdkDir, if one of them made it and nothing else is in it now. A
// compare that is killed outright cannot remove them itself; what it
// started dies with it (see package child), and its veth pair goes with
// its host end's anonymous namespace. removeStale says on w what it
// removed, and what it failed to, and goes on.
//
// run calls it only while it holds the lock (package onerun), so that no
// other compare runs meanwhile: the pids tell only what is gone, and
// dpdkDir, empty now, may be where a live compare's testpmd is about to
// go, which that compare took as there before it (dpdkParent) and would
// then leave behind.
func removeStale(w io.Writer) {
	removed := owner.RemoveStale(w,
		stale.Place{Dir: "/var/run/netns", What: "namespace", Remove: netns.DeleteNamed},
		stale.Place{Dir: dpdkDir(), What: "testpmd's runtime directory"},
		stale.Place{Dir: os.TempDir(), What: "C reference's build directory"})
	for _, p := range removed {
		if filepath.Dir(p) != dpdkDir() || !strings.HasSuffix(p, madeDPDKDir) {
			continue
		}
		// Only when empty: another DPDK program may use it.
		if err := os.Remove(dpdkDir()); err == nil {
			fmt.Fprintf(w, "compare: removed %s, made by a compare that is gone\n", dpdkDir())
		} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			fmt.Fprintf(w, "compare: remove %s, made by a compare that is gone: %v\n", dpdkDir(), err)
		}
		break
	}
}

// dpdkDir is the directory that holds DPDK's runtime directories, which
// DPDK makes when it is missing: /var/run/dpdk as root.
func dpdkDir() string {
	base := "/var/run"
	if os.Getuid() != 0 {
		if base = os.Getenv("XDG_RUNTIME_DIR"); base == "" {
			base = "/tmp"
		}
	}
	return filepath.Join(base, "dpdk")
}

// testpmdRuntimeDir is the directory DPDK makes for the prefix, even with
// --no-shconf (eal_create_runtime_dir: /var/run/dpdk/PREFIX as root), and
// leaves behind when testpmd exits.
func testpmdRuntimeDir() string { return filepath.Join(dpdkDir(), testpmdPrefix()) }

// exited removes what testpmd left behind once it has exited: its runtime
// directory, and dpdkDir if testpmd made that and nothing else uses it
// (os.Remove leaves a directory that is not empty).
func (p *testpmdProc) exited() {
	p.done = true
	os.RemoveAll(testpmdRuntimeDir())
	if dpdkParent.made {
		os.Remove(dpdkDir())
	}
}

// stop interrupts testpmd, waits for it and returns the last RX-packets
// and TX-packets counts in its output: the totals it prints on its way
// out. A testpmd that did not exit cleanly (it died, or did not stop
// within 20s) printed no totals, and its last periodic statistics are
// not what it received: that is an error.
func (p *testpmdProc) stop() (rx, tx uint64, err error) {
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.scanned:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.scanned
	}
	werr := p.cmd.Wait()
	p.exited()
	out := p.out.String()
	if werr != nil {
		return 0, 0, fmt.Errorf("testpmd %s: %w:\n%s\n%s", p.mode, werr, out, p.stderr.String())
	}
	if rx, err = lastCount(reRx, out); err != nil {
		return 0, 0, err
	}
	if tx, err = lastCount(reTx, out); err != nil {
		return 0, 0, err
	}
	return rx, tx, nil
}

// kill ends testpmd unless stop already did.
func (p *testpmdProc) kill() {
	if !p.done {
		p.cmd.Process.Kill()
		<-p.scanned
		p.cmd.Wait()
		p.exited()
	}
}

func (p *testpmdProc) pid() int { return p.cmd.Process.Pid }

// lastCount returns the number in the last match of re in out.
func lastCount(re *regexp.Regexp, out string) (uint64, error) {
	m := re.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0, fmt.Errorf("no %s in testpmd's output:\n%s", re, out)
	}
	return strconv.ParseUint(m[len(m)-1][1], 10, 64)
}

// testpmdRx measures testpmd rxonly. testpmd does not tell its drops
// apart, and reports them only when it stops; the peer end's rx_dropped
// counts the frames its XDP program failed to redirect into the socket,
// which are the socket's drops of either kind, over the window.
func testpmdRx(e *env, p *testpmdProc) (trial, error) {
	var cpu [2]time.Duration
	var peer [2]pktgen.Counters
	var perr error
	off, frames, secs, _, err := windowFrames(e, func(i int) {
		cpu[i], _ = app.ProcCPU(p.pid())
		var err error
		peer[i], err = pktgen.ReadCounters(e.topo.Veth.Peer)
		perr = errors.Join(perr, err)
	})
	if err = errors.Join(err, perr); err != nil {
		return trial{}, err
	}
	time.Sleep(100 * time.Millisecond)
	total, _, err := p.stop()
	if err != nil {
		return trial{}, err
	}
	// testpmd's count covers the generator's whole run, which goes on
	// past the window to the end of its current call: its rate is the
	// share of the offered frames it received times the rate they were
	// offered at.
	if frames == 0 {
		return trial{}, errors.New("testpmd rxonly: the generator offered nothing")
	}
	if total == 0 {
		return trial{}, fmt.Errorf("testpmd rxonly received nothing of %d frames offered", frames)
	}
	pps := off * float64(total) / float64(frames)
	return trial{pps: pps, offered: off, drops: float64(peer[1].Sub(peer[0]).RxDropped),
		cpu: (cpu[1] - cpu[0]).Seconds() / (pps * secs / 1e6)}, nil
}

// testpmdFwd measures testpmd macswap: forwarded is what came back to the
// host end while the generator ran; drops are counted at the peer end, as
// for rxonly.
func testpmdFwd(e *env, p *testpmdProc) (trial, error) {
	var cpu [2]time.Duration
	var peer [2]pktgen.Counters
	var host [2]uint64
	var perr error
	off, secs, _, err := window(e, func(i int) {
		cpu[i], _ = app.ProcCPU(p.pid())
		var e1, e2 error
		peer[i], e1 = pktgen.ReadCounters(e.topo.Veth.Peer)
		host[i], e2 = e.topo.HostReceived()
		perr = errors.Join(perr, e1, e2)
	})
	if err != nil {
		return trial{}, err // testpmd ends in testpmd's kill
	}
	_, _, serr := p.stop()
	if err = errors.Join(perr, serr); err != nil {
		return trial{}, err
	}
	got := float64(host[1] - host[0])
	if got == 0 {
		return trial{}, errors.New("testpmd macswap forwarded nothing")
	}
	return trial{pps: got / secs, offered: off, drops: float64(peer[1].Sub(peer[0]).RxDropped),
		cpu: (cpu[1] - cpu[0]).Seconds() / (got / 1e6)}, nil
}

// testpmdTx measures testpmd txonly by what arrived at the host end.
func testpmdTx(e *env, p *testpmdProc) (trial, error) {
	var cpu [2]time.Duration
	if err := e.sleep(*warmup); err != nil {
		return trial{}, err
	}
	p0, err0 := e.topo.HostReceived()
	cpu[0], _ = app.ProcCPU(p.pid())
	t0 := time.Now()
	if err := e.sleep(*dur); err != nil {
		return trial{}, err
	}
	p1, err1 := e.topo.HostReceived()
	cpu[1], _ = app.ProcCPU(p.pid())
	t1 := time.Now()
	_, _, serr := p.stop()
	if err := errors.Join(err0, err1, serr); err != nil {
		return trial{}, err
	}
	got := float64(p1 - p0)
	if got == 0 {
		return trial{}, errors.New("testpmd txonly: nothing arrived")
	}
	return trial{pps: got / t1.Sub(t0).Seconds(), cpu: (cpu[1] - cpu[0]).Seconds() / (got / 1e6)}, nil
}

var reCRef = regexp.MustCompile(`^rx (\d+) dropped (\d+) ring_full (\d+)$`)

// crefProc is a running C reference receiver.
type crefProc struct {
	ctx    context.Context // ends next's wait
	cmd    *exec.Cmd
	lines  chan string
	stderr lockedBuffer // written by exec's goroutine until Wait
	waited bool
	werr   error // what Wait returned
}

// lockedBuffer is a strings.Builder that one goroutine may write while
// another reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// crefCounts is one report of the C reference: frames received, dropped
// by the socket (all causes) and, of those, for a full RX ring.
type crefCounts struct{ rx, drops, full uint64 }

// startCRef starts the C reference receiver (bench/cref/rxdrop.c) on the
// peer end, pinned to cpu, with afxdp's ring and batch sizes, and returns
// once its socket is bound.
func startCRef(ctx context.Context, e *env, cpu int) (*crefProc, error) {
	p := &crefProc{ctx: ctx, lines: make(chan string, 16)}
	// Not killed when ctx ends, for the reason testpmd is not.
	p.cmd = exec.Command("ip", "netns", "exec", e.ns.Name(), e.cref,
		e.topo.Veth.Peer.Name, "0", strconv.Itoa(cpu), strconv.Itoa(*ring), strconv.Itoa(*batch))
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := child.Start(p.cmd); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	l, err := p.next()
	if err == nil && l != "ready" {
		err = fmt.Errorf("C reference: want ready, got %q", l)
	}
	if err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// next returns the receiver's next line of output. When there is none
// because the receiver exited, the error says why, from all it wrote to
// its standard error.
func (p *crefProc) next() (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			// Its standard error is whole only once Wait has returned.
			return "", fmt.Errorf("C reference exited (%v): %s", p.wait(), strings.TrimSpace(p.stderr.String()))
		}
		return l, nil
	case <-time.After(10 * time.Second):
		return "", fmt.Errorf("C reference silent for 10s: %s", strings.TrimSpace(p.stderr.String()))
	case <-p.ctx.Done():
		return "", p.ctx.Err()
	}
}

// counts signals the receiver (SIGUSR1: report; SIGINT: report and exit)
// and parses the line it prints.
func (p *crefProc) counts(sig os.Signal) (crefCounts, error) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return crefCounts{}, err
	}
	l, err := p.next()
	if err != nil {
		return crefCounts{}, err
	}
	m := reCRef.FindStringSubmatch(l)
	if m == nil {
		return crefCounts{}, fmt.Errorf("C reference: unexpected line %q", l)
	}
	var c [3]uint64
	for i := range c {
		c[i], _ = strconv.ParseUint(m[i+1], 10, 64)
	}
	return crefCounts{c[0], c[1], c[2]}, nil
}

// stop asks the receiver to exit, returns its last counts and fails if it
// did not exit cleanly.
func (p *crefProc) stop() (crefCounts, error) {
	c, err := p.counts(syscall.SIGINT)
	if err := errors.Join(err, p.wait()); err != nil {
		return c, fmt.Errorf("C reference: %w: %s", err, strings.TrimSpace(p.stderr.String()))
	}
	return c, nil
}

// wait reads the receiver's output to its end, waits for it to exit, the
// first time it is called, and returns what Wait returned.
func (p *crefProc) wait() error {
	if !p.waited {
		for range p.lines {
		}
		p.werr = p.cmd.Wait()
		p.waited = true
	}
	return p.werr
}

// kill ends the receiver unless it has exited.
func (p *crefProc) kill() {
	if !p.waited {
		p.cmd.Process.Kill()
		p.wait()
	}
}

// cRxDrop measures the C reference receiver on loopCPU, reading its counts
// at both ends of the window.
func cRxDrop(ctx context.Context, e *env) (trial, error) {
	p, err := startCRef(ctx, e, loopCPU)
	if err != nil {
		return trial{}, err
	}
	defer p.kill()
	pid := p.cmd.Process.Pid
	var c [2]crefCounts
	var cpu [2]time.Duration
	var cerr error
	off, secs, _, err := window(e, func(i int) {
		cpu[i], _ = app.ProcCPU(pid)
		var err error
		c[i], err = p.counts(syscall.SIGUSR1)
		cerr = errors.Join(cerr, err)
	})
	if err != nil {
		return trial{}, err // the receiver ends in cRxDrop's kill
	}
	_, serr := p.stop()
	if err := errors.Join(cerr, serr); err != nil {
		return trial{}, err
	}
	got := float64(c[1].rx - c[0].rx)
	if got == 0 {
		return trial{}, errors.New("C reference received nothing")
	}
	return trial{pps: got / secs, offered: off,
		drops: float64(c[1].drops - c[0].drops), full: float64(c[1].full - c[0].full),
		cpu: (cpu[1] - cpu[0]).Seconds() / (got / 1e6)}, nil
}
