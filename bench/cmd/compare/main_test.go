package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
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

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/afxdp/afxdp/bench/cmd/internal/child"
	"github.com/afxdp/afxdp/bench/cmd/internal/onerun"
	"github.com/afxdp/afxdp/bench/internal/summary"
	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

func TestCheckRings(t *testing.T) {
	for _, tt := range []struct {
		ring, big, batch int
		bad              string // what the error must name; empty: no error
	}{
		{4096, 16384, 64, ""},
		{4096, 0, 64, ""},
		{64, 64, 64, ""},
		{3000, 16384, 64, "-ring 3000"},
		{4096, 1000, 64, "-big-ring 1000"},
		{32, 16384, 64, "-ring 32"},
		{4096, 1 << 17, 64, "-big-ring 131072"},
		{0, 16384, 64, "-ring 0"},
	} {
		err := checkRings(tt.ring, tt.big, tt.batch)
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("checkRings(%d, %d, %d) = %v, want nil", tt.ring, tt.big, tt.batch, err)
		case tt.bad != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.bad+":")):
			t.Errorf("checkRings(%d, %d, %d) = %v, want an error naming %q", tt.ring, tt.big, tt.batch, err, tt.bad)
		}
	}
}

// newEnv builds what run builds: a named namespace for the peer end and a
// veth topology with a generator and a sink, removed when t ends.
func newEnv(t *testing.T, prefix string) *env {
	t.Helper()
	testenv.RequirePrivileged(t)
	ns, err := netenv.NewNetns(netenv.RandomName(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	topo, err := app.NewTopology(&app.TopologyOptions{PeerNS: ns, Generator: true, FrameLen: 64, HostSink: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	})
	return &env{ns: ns, topo: topo}
}

// shortTrials makes trials brief for the rest of t.
func shortTrials(t *testing.T) {
	oldDur, oldWarm := *dur, *warmup
	*dur, *warmup = 300*time.Millisecond, 100*time.Millisecond
	t.Cleanup(func() { *dur, *warmup = oldDur, oldWarm })
}

// checkNoXDP fails t if an XDP program is still attached to the peer end
// after what says what ended.
func checkNoXDP(t *testing.T, e *env, after string) {
	t.Helper()
	var info bpf.XDPInfo
	if err := e.topo.Veth.Peer.Do(func() (err error) {
		info, err = bpf.QueryXDP(e.topo.Veth.Peer.Index)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if info.Attached() {
		t.Fatalf("XDP program left on %s after %s: %+v", e.topo.Veth.Peer.Name, after, info)
	}
}

// TestCRefAccountsForEveryFrame builds the C reference receiver, feeds it
// an exact number of frames from the generator and checks its counts: in
// paced chunks that fit its rings every frame is received, and after an
// overload burst every frame is received, counted as dropped by the
// socket or dropped by veth before it, at least an RX ring's worth
// received. Once it exits, libxdp's program is gone from the interface.
// This is what cRxDrop's figures rest on.
//
// It runs a second time with the peer's NAPI poll in a kernel thread, as
// in the threaded-NAPI rows and, in effect, on a loaded machine, where the
// poll is deferred to ksoftirqd while the generator goes on: veth then
// drops what its ring cannot hold, frames the socket never sees.
func TestCRefAccountsForEveryFrame(t *testing.T) {
	for _, threaded := range []bool{false, true} {
		name := "softirq"
		if threaded {
			name = "threaded-napi"
		}
		t.Run(name, func(t *testing.T) { testCRefAccounts(t, threaded) })
	}
}

func testCRefAccounts(t *testing.T, threaded bool) {
	e := newEnv(t, "afxcref")
	topo := e.topo
	var err error
	if e.cref, err = ensureCRef(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if threaded {
		if err := app.SetVethThreadedNAPI(topo.Veth.Peer, true); err != nil {
			t.Fatal(err)
		}
	}
	p, err := startCRef(context.Background(), e, loopCPU)
	if err != nil {
		t.Fatal(err)
	}
	defer p.kill()

	// overflow is what veth dropped since the start because the peer's
	// XDP ring was full: the host end's tx_dropped, nothing else on this
	// pair.
	h0, err := pktgen.ReadCounters(topo.Veth.Host)
	if err != nil {
		t.Fatal(err)
	}
	overflow := func() uint64 {
		t.Helper()
		h, err := pktgen.ReadCounters(topo.Veth.Host)
		if err != nil {
			t.Fatal(err)
		}
		return h.Sub(h0).TxDropped
	}
	// wait polls the receiver's counts and veth's overflow until
	// received plus dropped reach want, or 10 s pass.
	wait := func(want uint64) (crefCounts, uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := p.counts(syscall.SIGUSR1)
			if err != nil {
				t.Fatal(err)
			}
			o := overflow()
			if c.rx+c.drops+o >= want || time.Now().After(deadline) {
				return c, o
			}
			time.Sleep(time.Millisecond)
		}
	}
	send := func(n uint64) {
		t.Helper()
		if sent, err := topo.Gen.Send(n); err != nil || sent != n {
			t.Fatalf("generator sent %d of %d: %v", sent, n, err)
		}
	}

	// Chunks of 256 fit veth's XDP ring too, and each is sent once the
	// last has been received: none may be dropped, however late the
	// peer's NAPI poll or the receiver runs.
	const chunk, paced = 256, 80 * 256
	for sent := uint64(0); sent < paced; {
		send(chunk)
		sent += chunk
		if c, o := wait(sent); c.rx != sent || c.drops != 0 || o != 0 {
			t.Fatalf("paced: received %d of %d, socket drops %d, veth ring overflow %d", c.rx, sent, c.drops, o)
		}
	}

	const burst = 200000
	send(burst)
	wait(paced + burst)
	c, err := p.stop()
	if err != nil {
		t.Fatal(err)
	}
	o := overflow()
	if c.rx+c.drops+o != paced+burst || c.full > c.drops {
		t.Fatalf("received %d, socket drops %d (%d for a full RX ring), veth ring overflow %d: %d of %d sent",
			c.rx, c.drops, c.full, o, c.rx+c.drops+o, paced+burst)
	}
	if c.rx-paced < uint64(*ring) {
		t.Fatalf("overload: received %d of %d, less than the RX ring holds", c.rx-paced, burst)
	}
	t.Logf("overload: received %d of %d, dropped %d by the socket (%d RX ring full), %d by veth",
		c.rx-paced, burst, c.drops, c.full, o)

	checkNoXDP(t, e, "the C reference exited")
}

// TestThreadedRowCleansUp runs a threaded-NAPI row (afxdp nap, the NAPI
// thread pinned to the receiver's CPU) briefly and checks that it measured
// something and left the peer as it found it: no XDP program, no NAPI
// thread, nothing left to pin.
func TestThreadedRowCleansUp(t *testing.T) {
	e := newEnv(t, "afxthr")
	topo := e.topo
	shortTrials(t)

	tr, err := threadedRx(func(e *env) (trial, error) { return afxdpRx(e, app.WaitNap) })(e)
	if err != nil {
		t.Fatal(err)
	}
	if tr.pps <= 0 || tr.offered <= 0 {
		t.Errorf("threaded nap: %.0f pps received of %.0f offered; want both positive", tr.pps, tr.offered)
	}
	if e.napi != nil {
		t.Errorf("env not restored: still pinning the NAPI threads of %s", e.napi.Name)
	}
	if n, err := app.PinNAPIThreads(topo.Veth.Peer, 0); err != nil || n != 0 {
		t.Errorf("after the row: %d NAPI threads of the peer left (err %v)", n, err)
	}
	checkNoXDP(t, e, "the threaded row")
}

// TestReport renders made-up trials and checks each row's medians, ratios
// and drop columns: drops with their RX-ring-full share for the AF_XDP
// receivers that count both, drops alone for testpmd (counted at the
// veth) and for kernel UDP (its socket's), nothing for transmit; and no
// CPU figure for the kernel's XDP_DROP, whose work is all in the
// generator's softirq, which no row counts.
func TestReport(t *testing.T) {
	cs := []*contender{
		{name: "kernel XDP_DROP (ceiling)", group: "rx", res: []trial{{pps: 5e6, offered: 5e6}}},
		{name: "testpmd rxonly", group: "rx", res: []trial{{pps: 2e6, offered: 3e6, drops: 900, cpu: 0.3}, {pps: 3e6, offered: 3e6, drops: 100, cpu: 0.3}, {pps: 4e6, offered: 5e6, drops: 500, cpu: 0.3}}},
		{name: "afxdp rxdrop spin", group: "rx", res: []trial{{pps: 3.3e6, offered: 3e6, drops: 10, full: 0, cpu: 0.25}}},
		{name: "kernel UDP recvmmsg", group: "rx", res: []trial{{pps: 0.5e6, offered: 0.6e6, drops: 1e5, cpu: 1.5}}},
		{name: "testpmd macswap", group: "fwd", res: []trial{{pps: 0.5e6, offered: 3e6, drops: 7e6, cpu: 2}}},
		{name: "afxdp l2fwd", group: "fwd", res: []trial{{pps: 0.55e6, offered: 3.2e6, drops: 6e6, cpu: 1.9}}},
		{name: "testpmd txonly", group: "tx", res: []trial{{pps: 1e6, cpu: 1.6}}},
		{name: "afxdp txonly", group: "tx", res: []trial{{pps: 1.1e6, cpu: 1.5}}},
	}
	var b strings.Builder
	report(&b, cs)
	rows := map[string]string{}
	for _, l := range strings.Split(b.String(), "\n") {
		if f := strings.Split(l, "|"); len(f) > 2 {
			rows[strings.TrimSpace(f[1])] = l
		}
	}
	for name, want := range map[string]string{
		"kernel XDP_DROP (ceiling)": "| kernel XDP_DROP (ceiling) | 5.00 | 5.00–5.00 | 5.00 |  |  |  | 1.67× | 10.0× |",
		"testpmd rxonly":            "| testpmd rxonly | 3.00 | 2.00–4.00 | 3.00 | 500 |  | 0.300 | 1.00× | 6.0× |",
		"afxdp rxdrop spin":         "| afxdp rxdrop spin | 3.30 | 3.30–3.30 | 3.00 | 10 | 0 | 0.250 | 1.10× | 6.6× |",
		"kernel UDP recvmmsg":       "| kernel UDP recvmmsg | 0.50 | 0.50–0.50 | 0.60 | 100000 |  | 1.500 | 0.17× | 1.0× |",
		"testpmd macswap":           "| testpmd macswap | 0.50 | 0.50–0.50 | 3.00 | 7000000 |  | 2.000 | 1.00× |  |",
		"afxdp l2fwd":               "| afxdp l2fwd | 0.55 | 0.55–0.55 | 3.20 | 6000000 | 0 | 1.900 | 1.10× |  |",
		"testpmd txonly":            "| testpmd txonly | 1.00 | 1.00–1.00 |  |  |  | 1.600 | 1.00× |  |",
		// Nothing is received: no drops to show, as for testpmd.
		"afxdp txonly": "| afxdp txonly | 1.10 | 1.10–1.10 |  |  |  | 1.500 | 1.10× |  |",
	} {
		if rows[name] != want {
			t.Errorf("row %q:\n got %s\nwant %s", name, rows[name], want)
		}
	}
}

// TestWriteJSON checks the summary that bench/cmd/results reads: medians,
// and each round's rate in round order, so that ratios can be taken
// round by round.
func TestWriteJSON(t *testing.T) {
	cs := []*contender{
		{name: "testpmd rxonly", group: "rx", res: []trial{{pps: 2e6, cpu: 0.3}, {pps: 4e6, cpu: 0.3}, {pps: 3e6, cpu: 0.3}}},
		{name: "afxdp rxdrop spin", group: "rx", res: []trial{{pps: 3e6, full: 2}, {pps: 4e6}, {pps: 3.3e6}}},
	}
	path := filepath.Join(t.TempDir(), "s.json")
	if err := writeJSON(path, cs); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []summary.Summary
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Mpps != 3 || got[0].Min != 2 || got[0].Max != 4 || got[0].Trials != 3 ||
		!slices.Equal(got[0].Rounds, []float64{2, 4, 3}) || !slices.Equal(got[1].Rounds, []float64{3, 4, 3.3}) {
		t.Fatalf("summary:\n%s", b)
	}
	med, lo, hi, err := summary.Paired(got[1], got[0])
	if err != nil || math.Abs(med-1.1) > 1e-9 || lo != 1 || hi != 1.5 {
		t.Fatalf("per-round ratios: %v, %v, %v, %v; want 1.1, 1, 1.5", med, lo, hi, err)
	}
}

// TestFwdRow runs the afxdp l2fwd row briefly and checks that it
// forwarded frames, no more than were offered, and left no XDP program on
// the peer.
func TestFwdRow(t *testing.T) {
	e := newEnv(t, "afxfwd")
	shortTrials(t)

	tr, err := afxdpFwd(e)
	if err != nil {
		t.Fatal(err)
	}
	// Rates over slightly different spans (see windowFrames): allow a
	// little.
	if tr.pps <= 0 || tr.pps > 1.1*tr.offered {
		t.Errorf("l2fwd: %.0f pps forwarded of %.0f offered", tr.pps, tr.offered)
	}
	checkNoXDP(t, e, "the l2fwd row")
	t.Logf("forwarded %.0f pps of %.0f offered, %.0f dropped", tr.pps, tr.offered, tr.drops)
}

// TestTestpmdAccountsForEveryFrame runs dpdk-testpmd the way the testpmd
// rows do, in each of their modes, and checks its counts against the
// veth's, which is what those rows' figures rest on: in rxonly every frame
// the generator sent is received or counted as dropped at the peer end
// (testpmd's drops column), in macswap every paced frame comes back to the
// host end, and in txonly what testpmd says it sent is exactly what the
// host end received and what veth dropped on the way (its host end's
// NAPI poll behind, as in the threaded-NAPI case). Once testpmd exits,
// its XDP program is gone from the peer.
func TestTestpmdAccountsForEveryFrame(t *testing.T) {
	e := newEnv(t, "afxpmd")
	if err := ensureTestpmd(); err != nil {
		t.Fatalf("dpdk-testpmd (package dpdk-dev, which .ci/deps.sh installs): %v", err)
	}
	topo := e.topo
	ctx := context.Background()
	// DPDK makes the directory its runtime directories go in
	// (/var/run/dpdk) if there is none; what testpmd made must go when it
	// exits. One that is there and empty is what an earlier run left
	// behind: remove it, so that the test sees DPDK make it.
	parent := dpdkDir()
	if err := os.Remove(parent); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Logf("%s is there and in use (%v): not checking that it is removed", parent, err)
	}
	_, err := os.Stat(parent)
	parentMade := errors.Is(err, fs.ErrNotExist)
	send := func(t *testing.T, n uint64) {
		t.Helper()
		if sent, err := topo.Gen.Send(n); err != nil || sent != n {
			t.Fatalf("generator sent %d of %d: %v", sent, n, err)
		}
	}
	// paced sends frames in chunks far smaller than testpmd's rings,
	// with pauses in which it can take them all.
	const chunk, paced = 512, 20 * 512
	sendPaced := func(t *testing.T) {
		t.Helper()
		for sent := 0; sent < paced; sent += chunk {
			send(t, chunk)
			time.Sleep(2 * time.Millisecond)
		}
	}
	counters := func(t *testing.T, ep netenv.Endpoint) pktgen.Counters {
		t.Helper()
		c, err := pktgen.ReadCounters(ep)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	start := func(t *testing.T, mode string) *testpmdProc {
		t.Helper()
		p, err := startTestpmd(ctx, e, mode)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.kill)
		return p
	}
	stop := func(t *testing.T, p *testpmdProc) (rx, tx uint64) {
		t.Helper()
		rx, tx, err := p.stop()
		if err != nil {
			t.Fatal(err)
		}
		checkNoXDP(t, e, "testpmd "+p.mode+" exited")
		if _, err := os.Stat(testpmdRuntimeDir()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after testpmd %s exited, its runtime directory %s: %v; want it removed", p.mode, testpmdRuntimeDir(), err)
		}
		if parentMade {
			if _, err := os.Stat(parent); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("after testpmd %s exited, %s, which DPDK made: %v; want it removed", p.mode, parent, err)
			}
		}
		return rx, tx
	}

	t.Run("rxonly", func(t *testing.T) {
		p := start(t, "rxonly")
		c0 := counters(t, topo.Veth.Peer)
		sendPaced(t)
		const burst = 200000
		send(t, burst)
		time.Sleep(100 * time.Millisecond)
		rx, _ := stop(t, p)
		dropped := counters(t, topo.Veth.Peer).Sub(c0).RxDropped
		if rx+dropped != paced+burst {
			t.Fatalf("testpmd received %d, the peer dropped %d: %d of %d sent", rx, dropped, rx+dropped, paced+burst)
		}
		if rx < paced {
			t.Fatalf("testpmd received %d, fewer than the %d paced frames", rx, paced)
		}
		t.Logf("received %d, dropped %d of %d", rx, dropped, paced+burst)
	})

	t.Run("macswap", func(t *testing.T) {
		p := start(t, "macswap")
		h0, p0 := counters(t, topo.Veth.Host), counters(t, topo.Veth.Peer)
		sendPaced(t)
		// Paced, testpmd takes every frame unless it is kept off its
		// CPU (other tests running at the same time pin their loops
		// there too): then the peer counts the ones it missed.
		var back, dropped uint64
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			back = counters(t, topo.Veth.Host).Sub(h0).RxPackets
			dropped = counters(t, topo.Veth.Peer).Sub(p0).RxDropped
			if back+dropped >= paced {
				break
			}
		}
		rx, tx := stop(t, p)
		dropped = counters(t, topo.Veth.Peer).Sub(p0).RxDropped
		if rx+dropped != paced || tx != rx || back != tx || rx == 0 {
			t.Fatalf("sent %d: testpmd received %d and sent %d, the host end got %d back, the peer dropped %d",
				paced, rx, tx, back, dropped)
		}
		if dropped != 0 {
			t.Logf("the peer dropped %d of %d paced frames: testpmd was kept off its CPU", dropped, paced)
		}
	})

	// What testpmd sends the host end takes in, or veth drops, if the
	// host end's NAPI poll falls behind (threaded, or deferred to
	// ksoftirqd on a loaded machine), and counts in the sender's
	// tx_dropped.
	txonly := func(t *testing.T) {
		// Before testpmd starts, which is when it starts sending.
		h0, p0 := counters(t, topo.Veth.Host), counters(t, topo.Veth.Peer)
		p := start(t, "txonly")
		time.Sleep(300 * time.Millisecond)
		_, tx := stop(t, p)
		// The host end's poll may still have frames to take off its ring.
		var got, dropped uint64
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			got = counters(t, topo.Veth.Host).Sub(h0).RxPackets
			dropped = counters(t, topo.Veth.Peer).Sub(p0).TxDropped
			if got+dropped >= tx {
				break
			}
		}
		if tx == 0 || got+dropped != tx {
			t.Fatalf("testpmd says it sent %d; the host end received %d, veth dropped %d", tx, got, dropped)
		}
		t.Logf("sent %d, received %d, dropped by veth %d", tx, got, dropped)
	}
	t.Run("txonly", txonly)
	t.Run("txonly/threaded-napi", func(t *testing.T) {
		if err := app.SetThreadedNAPI(topo.Veth.Host, true); err != nil {
			t.Fatal(err)
		}
		defer app.SetThreadedNAPI(topo.Veth.Host, false)
		txonly(t)
	})
}

// TestCheckFlags refuses, before anything is built, the flag values that
// used to fail late: -rounds 0 or below (report and writeJSON had no
// trial to take a minimum of), and the others each row would refuse
// only when it ran.
func TestCheckFlags(t *testing.T) {
	if err := checkFlags(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	restore := saveFlags()
	*pmdArgs = " --rxd=4096  --burst=64 "
	if err := checkFlags(); err != nil {
		t.Errorf("-testpmd-args %q: %v", *pmdArgs, err)
	}
	restore()
	for _, tc := range []struct {
		set  func()
		want string
	}{
		{func() { *rounds = 0 }, "-rounds 0: must be at least 1"},
		{func() { *rounds = -2 }, "-rounds -2"},
		{func() { *dur = 0 }, "-d 0s"},
		{func() { *warmup = -time.Second }, "-warmup -1s"},
		{func() { *size = 20 }, "-size 20"},
		{func() { *size = 1515 }, "-size 1515"},
		{func() { *batch = 0 }, "-batch 0"},
		{func() { *txBatch = 0 }, "-tx-batch 0"},
		{func() { *txBatch = 8192 }, "-tx-batch 8192"},
		{func() { *txBudget = 16 }, "-tx-budget 16"},
		{func() { *nap = 0 }, "-nap 0s"},
		{func() { *ring = 1000 }, "-ring 1000"},
		// testpmd would take a stray word for a file name or ignore it.
		{func() { *pmdArgs = "--rxd=4096 64" }, `-testpmd-args: "64" is not a testpmd option`},
		// An output that cannot be written is refused before the
		// rounds, not after them.
		{func() { *jsonOut = "/nonexistent-afxdp/medians.json" }, "-json /nonexistent-afxdp/medians.json: stat /nonexistent-afxdp"},
		{func() { *jsonOut = os.TempDir() }, "-json " + os.TempDir() + ": is a directory"},
		{func() { *jsonOut = "/dev/null/medians.json" }, "-json /dev/null/medians.json: /dev/null is not a directory"},
		// A value without its flag (-d forgotten) is not ignored.
		{func() { flag.CommandLine.Parse([]string{"5s"}) }, `argument "5s": compare takes flags only`},
	} {
		restore := saveFlags()
		tc.set()
		err := checkFlags()
		restore()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("checkFlags() = %v; want an error starting %q", err, tc.want)
		}
	}
}

// saveFlags returns a function that sets the flags checkFlags reads back
// to their values now.
func saveFlags() (restore func()) {
	r, d, w, sz, b, tb, bud, n, rg, o, j, pa := *rounds, *dur, *warmup, *size, *batch, *txBatch, *txBudget, *nap, *ring, *only, *jsonOut, *pmdArgs
	args := flag.Args()
	return func() {
		*rounds, *dur, *warmup, *size, *batch, *txBatch, *txBudget, *nap, *ring, *only, *jsonOut, *pmdArgs = r, d, w, sz, b, tb, bud, n, rg, o, j, pa
		flag.CommandLine.Parse(args)
	}
}

// TestZeroPacketTrialRefused checks the rows' common arithmetic: a trial
// that moved no packet is an error that says so, not a rate of 0 with a
// CPU cost of NaN or infinity; and the CPU figure never goes negative.
func TestZeroPacketTrialRefused(t *testing.T) {
	for _, got := range []float64{0, -1, math.NaN()} {
		if _, _, err := rates("received nothing", got, 5, time.Second); err == nil || !strings.HasPrefix(err.Error(), "received nothing in 5.00s") {
			t.Errorf("rates(%v packets) = %v; want an error saying nothing was received", got, err)
		}
	}
	if _, _, err := rates("received nothing", 100, 0, time.Second); err == nil {
		t.Error("rates over a window of 0s: no error")
	}
	pps, cpu, err := rates("received nothing", 2e6, 2, 500*time.Millisecond)
	if err != nil || pps != 1e6 || cpu != 0.25 {
		t.Errorf("rates(2e6 packets, 2s, 0.5 CPU-s) = %v, %v, %v; want 1e6, 0.25, nil", pps, cpu, err)
	}
	if _, cpu, _ := rates("received nothing", 1e6, 1, -time.Millisecond); cpu != 0 {
		t.Errorf("CPU per Mpkt %v for a negative CPU time; want 0", cpu)
	}
}

// TestReportAndJSONWithoutTrials renders contenders that have no trials
// (what -rounds 0 used to leave), which must not panic, and checks that
// writeJSON names the contender and figure of a value JSON cannot hold
// instead of failing with json's "unsupported value".
func TestReportAndJSONWithoutTrials(t *testing.T) {
	cs := []*contender{{name: "afxdp rxdrop spin", group: "rx"}, {name: "testpmd rxonly", group: "rx"}}
	var b strings.Builder
	report(&b, cs)
	if !strings.Contains(b.String(), "| afxdp rxdrop spin | 0.00 | 0.00–0.00 |") {
		t.Errorf("report without trials:\n%s", b.String())
	}
	path := filepath.Join(t.TempDir(), "s.json")
	if err := writeJSON(path, cs); err != nil {
		t.Fatalf("writeJSON without trials: %v", err)
	}
	var got []summary.Summary
	if b, err := os.ReadFile(path); err != nil || json.Unmarshal(b, &got) != nil || len(got) != 2 || got[0].Trials != 0 {
		t.Fatalf("summary without trials: %v\n%s", err, b)
	}

	cs = []*contender{{name: "afxdp rxdrop spin", group: "rx", res: []trial{{pps: 0, cpu: math.NaN()}}}}
	err := writeJSON(filepath.Join(t.TempDir(), "nan.json"), cs)
	if err == nil || !strings.Contains(err.Error(), "afxdp rxdrop spin: CPU-s/Mpkt is NaN") {
		t.Fatalf("writeJSON with a NaN: %v; want an error naming the contender and the figure", err)
	}
	report(io.Discard, cs)
}

// TestBadOnlyRefusedFirst checks that a bad -only is refused before
// anything is installed or built: with no dpdk-testpmd and no apt-get on
// the PATH, the error is about -only, not about installing DPDK; and
// that a selection without testpmd does not need it at all.
func TestBadOnlyRefusedFirst(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	defer saveFlags()()
	for _, tc := range []struct{ only, want string }{
		{"(", "-only: "},
		{"no such contender", `-only "no such contender" matches no contender`},
	} {
		*only = tc.only
		if err := run(context.Background()); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("-only %q: %v; want an error starting %q", tc.only, err, tc.want)
		}
	}
}

// TestCRefFailureSaysWhy starts the C reference on an interface that is
// not there: the error gives the reason it wrote to its standard error,
// read only once it has all been written (the race detector used to see
// the read race exec's copy), and nothing else.
func TestCRefFailureSaysWhy(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns, err := netenv.NewNetns(netenv.RandomName("afxcrf"))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	e := &env{ns: ns, topo: &app.Topology{Veth: &netenv.Veth{Peer: netenv.Endpoint{Name: "afxnosuch0"}}}}
	if e.cref, err = ensureCRef(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	_, err = startCRef(context.Background(), e, loopCPU)
	if err == nil || !strings.Contains(err.Error(), "No such device") || strings.Contains(err.Error(), "want ready") {
		t.Fatalf("C reference on a missing interface: %v; want its reason (No such device) alone", err)
	}
	t.Log(err)
}

// TestUDPRowCountsDrops runs the kernel UDP row briefly: what its socket
// could not take is counted as its drops, not left out of the row. Its
// receiver pauses after each call, so that the socket drops throughout
// the trial whether or not the receiver would keep up: drops spread over
// the trial did not always fall in the window on a loaded machine (5766
// in one trial, none in its window). The kernel's own count of datagrams
// dropped for a full receive buffer (Udp RcvbufErrors in the peer's
// namespace, over the whole trial) bounds what the window may count.
func TestUDPRowCountsDrops(t *testing.T) {
	e := newEnv(t, "afxudp")
	shortTrials(t)
	udpPause = 10 * time.Millisecond
	t.Cleanup(func() { udpPause = 0 })

	rb0 := udpRcvbufErrors(t, e.topo.Veth.Peer)
	tr, err := udpRecv(e)
	if err != nil {
		t.Fatal(err)
	}
	rb := udpRcvbufErrors(t, e.topo.Veth.Peer) - rb0
	if tr.pps <= 0 || tr.pps > 1.1*tr.offered {
		t.Fatalf("kernel UDP: %.0f pps received of %.0f offered", tr.pps, tr.offered)
	}
	if tr.drops > float64(rb) {
		t.Errorf("kernel UDP: %.0f drops counted in the window, more than the %d the kernel counted over the trial", tr.drops, rb)
	}
	// The receiver pauses after each call, for long enough that the
	// generator overflows the socket's buffer in every pause: the window
	// has drops, and the row must count them.
	if tr.drops == 0 {
		t.Errorf("kernel UDP: %.0f pps received of %.0f offered by a receiver that pauses %v a call, the socket dropped %d in the trial, and no drops counted in the window", tr.pps, tr.offered, udpPause, rb)
	}
	checkNoXDP(t, e, "the kernel UDP row")
	t.Logf("received %.0f pps of %.0f offered, %.0f dropped (%d over the trial)", tr.pps, tr.offered, tr.drops, rb)
}

// TestTestpmdDeathIsAnError kills testpmd rxonly in the middle of its
// trial, once it has printed a periodic statistics block, as a crash
// would: the trial must fail, not take that block's count (0 here) for
// what testpmd received and report a rate from it.
func TestTestpmdDeathIsAnError(t *testing.T) {
	e := newEnv(t, "afxpmk")
	if err := ensureTestpmd(); err != nil {
		t.Fatalf("dpdk-testpmd (package dpdk-dev, which .ci/deps.sh installs): %v", err)
	}
	shortTrials(t)
	// It forwards once it has printed its first statistics block.
	p, err := startTestpmd(context.Background(), e, "rxonly")
	if err != nil {
		t.Fatal(err)
	}
	defer p.kill()
	time.Sleep(100 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tr, err := testpmdRx(e, p)
	if err == nil {
		t.Fatalf("testpmd killed during its trial: %.0f pps, no error", tr.pps)
	}
	t.Log(strings.SplitN(err.Error(), "\n", 2)[0])
}

// udpRcvbufErrors reads Udp RcvbufErrors, the datagrams dropped for a
// full receive buffer, in ep's namespace.
func udpRcvbufErrors(t *testing.T, ep netenv.Endpoint) uint64 {
	t.Helper()
	var b []byte
	if err := ep.Do(func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "Udp: ") {
			continue
		}
		f := strings.Fields(l)[1:]
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Udp RcvbufErrors in /proc/net/snmp:\n%s", b)
	return 0
}

// TestInterruptEndsTrial interrupts compare (as Ctrl-C does: its context
// ends) in the middle of a trial far longer than the test, once the
// trial's traffic is flowing, and checks that run returns at once with the
// interruption as its error, having removed everything it made: its
// namespace and veth pair (and with them the XDP programs on them), every
// process it started (testpmd, the C reference) and testpmd's runtime
// directory. Each kind of trial waits in its own place: testpmd and the C
// reference in window, the transmitters in their own sleeps.
func TestInterruptEndsTrial(t *testing.T) {
	testenv.RequirePrivileged(t)
	if err := ensureTestpmd(); err != nil {
		t.Fatalf("dpdk-testpmd (package dpdk-dev, which .ci/deps.sh installs): %v", err)
	}
	for _, name := range []string{"testpmd rxonly", "C libxdp rxdrop", "testpmd txonly", "afxdp txonly"} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			defer saveFlags()()
			*only, *rounds = "^"+regexp.QuoteMeta(name)+"$", 1
			// The old code slept through the whole trial after an
			// interrupt: far longer than the wait below.
			*dur, *warmup = 3*time.Minute, 0
			interruptTrial(t)
		})
	}
}

// interruptTrial runs compare with the flags as they are, interrupts it
// once traffic flows on its veth pair and checks what it left.
func interruptTrial(t *testing.T) {
	// run says on its standard error which veth pair and namespace it
	// made.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stderr := os.Stderr
	os.Stderr = w
	var out testenv.Buffer
	named := make(chan [2]string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		re := regexp.MustCompile(`^veth \S+ <-> (\S+) \(netns (\S+)\)`)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				named <- [2]string{m[1], m[2]}
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	// finish waits for run to end, then restores the standard error.
	finish := func() error {
		err := <-done
		os.Stderr = stderr
		w.Close()
		<-scanned
		t.Logf("compare's standard error:\n%s", out.String())
		return err
	}

	var peer, ns string
	select {
	case n := <-named:
		peer, ns = n[0], n[1]
	case err := <-done:
		done <- err
		t.Fatalf("run ended before it made its veth pair: %v", finish())
	}
	// Hold the namespace, so that what compare leaves in it stays to be
	// seen once compare has let go of it.
	nsh, err := netns.GetFromPath(filepath.Join("/var/run/netns", ns))
	if err != nil {
		cancel()
		t.Fatalf("namespace %s: %v; run: %v", ns, err, finish())
	}
	defer nsh.Close()
	nl, err := netlink.NewHandleAt(nsh)
	if err != nil {
		cancel()
		t.Fatalf("netlink in %s: %v; run: %v", ns, err, finish())
	}
	defer nl.Close()
	// The trial is running once frames cross the pair, either way.
	moved := false
	var c0 uint64
	for deadline := time.Now().Add(2 * time.Minute); !moved && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		l, err := nl.LinkByName(peer)
		if err != nil {
			t.Logf("%s in %s: %v", peer, ns, err)
			break
		}
		s := l.Attrs().Statistics
		if c0 == 0 {
			c0 = s.TxPackets + s.RxPackets + 1
		}
		moved = s.TxPackets+s.RxPackets >= c0
	}
	if !moved {
		cancel()
		t.Fatalf("no frame crossed %s within 2 minutes of its making; run: %v", peer, finish())
	}
	cancel()
	interrupted := time.Now()
	select {
	case err = <-done:
		done <- err
		t.Logf("run returned %v after the interrupt", time.Since(interrupted).Round(time.Millisecond))
	case <-time.After(time.Minute):
		t.Errorf("run still in its trial a minute after the interrupt")
	}
	err = finish()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("run after the interrupt: %v; want an error that is context.Canceled", err)
	}

	if _, err := os.Stat(filepath.Join("/var/run/netns", ns)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("namespace %s after the interrupt: %v; want it removed", ns, err)
	}
	// Deleting the peer end deletes the pair, and the XDP programs
	// attached to either end with it.
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Errorf("link %s left in namespace %s after the interrupt", l.Attrs().Name, ns)
		}
	}
	if _, err := os.Stat(testpmdRuntimeDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("testpmd's runtime directory %s after the interrupt: %v; want it removed", testpmdRuntimeDir(), err)
	}
	for _, p := range children(t) {
		t.Errorf("process left after the interrupt (exited but not waited for, if a zombie): %s", p)
	}
}

// children lists the processes whose parent is this one, as "PID (NAME)
// STATE".
func children(t *testing.T) []string {
	t.Helper()
	var kids []string
	for _, p := range childrenOf(t, os.Getpid()) {
		kids = append(kids, fmt.Sprintf("%d (%s) %s", p.pid, p.name, p.state))
	}
	return kids
}

// kid is a process found by childrenOf.
type kid struct {
	pid         int
	name, state string
}

// childrenOf lists the processes whose parent is ppid.
func childrenOf(t *testing.T, ppid int) []kid {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []kid
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// PID (COMM) STATE PPID ...; COMM may hold spaces and parentheses.
		s := string(b)
		i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(s[j+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			kids = append(kids, kid{pid, s[i+1 : j], f[0]})
		}
	}
	return kids
}

// TestMain runs compare's main instead of the tests when
// TestKilledLeavesNothingRunning runs this binary as compare.
//
// Its runs, in process or not, take a lock of their own
// (onerun.UseTestLock), not the one of real runs: compare's tests and
// results' run at the same time, and must neither refuse a real run nor
// be refused by one.
func TestMain(m *testing.M) {
	done, err := onerun.UseTestLock()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if os.Getenv("AFXDP_COMPARE_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	code := m.Run()
	done()
	os.Exit(code)
}

// TestKilledLeavesNothingRunning runs compare in a process of its own with
// a long warm-up, kills it with SIGKILL once the trial's process (the C
// reference, testpmd) runs, and checks that the process dies with it. The
// C reference used to go on, orphaned, spinning on its CPU (it writes
// nothing until it is signalled, so no SIGPIPE ends it); testpmd died of
// SIGPIPE at its next statistics line, so its case checks that the
// parent-death signal passes through `ip netns exec`, and what it leaves.
// compare cannot remove its named namespace, testpmd's runtime directory
// or the C reference's build directory then, nor /var/run/dpdk, which its
// testpmd made: the test checks that the next compare's removeStale does.
// Its veth pair goes with its host end's anonymous namespace.
func TestKilledLeavesNothingRunning(t *testing.T) {
	testenv.RequirePrivileged(t)
	if err := ensureTestpmd(); err != nil {
		t.Fatalf("dpdk-testpmd (package dpdk-dev, which .ci/deps.sh installs): %v", err)
	}
	for _, tt := range []struct{ contender, proc string }{
		{"C libxdp rxdrop", "rxdrop"},
		{"testpmd rxonly", "dpdk-testpmd"},
	} {
		t.Run(strings.ReplaceAll(tt.contender, " ", "_"), func(t *testing.T) {
			killCompare(t, tt.contender, tt.proc)
		})
	}
}

// killCompare runs compare with contender alone, kills it once its child
// named proc runs, and checks what is left.
func killCompare(t *testing.T, contender, proc string) {
	dir := t.TempDir()
	if proc == "dpdk-testpmd" {
		// An empty dpdkDir is what an earlier run left behind: remove
		// it, so that the killed compare's testpmd makes it.
		if err := os.Remove(dpdkDir()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Logf("%s is there and in use (%v): not checking that it is removed", dpdkDir(), err)
		}
	}
	_, dpdkParentBefore := os.Stat(dpdkDir())
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	said := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
	cmd := exec.Command(os.Args[0], "-only", "^"+regexp.QuoteMeta(contender)+"$", "-rounds", "1", "-d", "1s", "-warmup", "10m")
	cmd.Env = append(os.Environ(), "AFXDP_COMPARE_MAIN=1", "TMPDIR="+dir)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	// The trial is under way, its process ready, once frames cross the
	// veth pair: from then on the process writes nothing until compare
	// signals it (the C reference), so that no SIGPIPE ends it.
	reNamed := regexp.MustCompile(`^veth \S+ <-> (\S+) \(netns (\S+)\)`)
	var peer, ns string
	var nl *netlink.Handle
	var c0 uint64
	pid := 0
	for deadline := time.Now().Add(time.Minute); pid == 0; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("compare ended (%v) before its trial ran:\n%s", err, said())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("compare's trial did not run within a minute:\n%s", said())
		}
		if nl == nil {
			m := reNamed.FindStringSubmatch(said())
			if m == nil {
				continue
			}
			peer, ns = m[1], m[2]
			nsh, err := netns.GetFromPath(filepath.Join("/var/run/netns", ns))
			if err != nil {
				t.Fatalf("namespace %s: %v", ns, err)
			}
			defer nsh.Close()
			if nl, err = netlink.NewHandleAt(nsh); err != nil {
				t.Fatalf("netlink in %s: %v", ns, err)
			}
			defer nl.Close()
		}
		l, err := nl.LinkByName(peer)
		if err != nil {
			t.Fatalf("%s in %s: %v", peer, ns, err)
		}
		st := l.Attrs().Statistics
		if c0 == 0 {
			c0 = st.RxPackets + st.TxPackets + 1
			continue
		}
		if st.RxPackets+st.TxPackets < c0 {
			continue
		}
		for _, k := range childrenOf(t, cmd.Process.Pid) {
			if k.name == proc {
				pid = k.pid
			}
		}
		if pid == 0 {
			t.Fatalf("trial runs, but compare has no child named %s: %v", proc, childrenOf(t, cmd.Process.Pid))
		}
	}
	name := "afxcmp" + strconv.Itoa(cmd.Process.Pid)
	// What the old compare left running.
	defer syscall.Kill(pid, syscall.SIGKILL)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Reaped, so that it is gone for removeStale.
	done <- <-done
	for deadline := time.Now().Add(10 * time.Second); child.Running(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still running 10s after compare was killed", proc, pid)
		}
	}

	defer netns.DeleteNamed(ns) // should removeStale not
	left := []string{filepath.Join("/var/run/netns", ns)}
	if proc == "dpdk-testpmd" {
		// Named after the killed compare, and marked if its testpmd
		// made dpdkDir, which the killed compare could not remove
		// then.
		want := name
		if dpdkParentBefore != nil {
			want += madeDPDKDir
		}
		runtimeDir := filepath.Join(dpdkDir(), want)
		defer os.RemoveAll(runtimeDir) // should removeStale not
		left = append(left, runtimeDir)
		if dpdkParentBefore != nil {
			defer os.Remove(dpdkDir())
			left = append(left, dpdkDir())
		}
	} else {
		builds, _ := filepath.Glob(filepath.Join(dir, name+"-cref*"))
		if len(builds) != 1 {
			t.Fatalf("C reference's build directory: found %q in %s", builds, dir)
		}
		left = append(left, builds[0])
	}
	for _, p := range left {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v; want it left by the killed compare", p, err)
		}
	}
	t.Setenv("TMPDIR", dir)
	var out strings.Builder
	removeStale(&out)
	t.Logf("removeStale said:\n%s", out.String())
	for _, p := range left {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after removeStale: %v; want it removed", p, err)
		}
	}
}

// TestRemoveStaleKeepsDPDKDirInUse leaves in dpdkDir what a killed
// compare whose testpmd made it leaves there, with another program's
// runtime directory beside it, and checks that removeStale removes the
// killed compare's and keeps the other and dpdkDir itself.
func TestRemoveStaleKeepsDPDKDirInUse(t *testing.T) {
	testenv.RequirePrivileged(t)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dpdkDir()); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dpdkDir(), 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(dpdkDir())
	}
	left := filepath.Join(dpdkDir(), "afxcmp"+strconv.Itoa(gone.Process.Pid)+madeDPDKDir)
	other := filepath.Join(dpdkDir(), "afxtest"+netenv.RandomName("")[:6])
	for _, d := range []string{left, other} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(d)
	}
	var out strings.Builder
	removeStale(&out)
	t.Logf("removeStale said:\n%s", out.String())
	if _, err := os.Stat(left); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after removeStale: %v; want it removed", left, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("%s, another program's, after removeStale: %v; want it kept", other, err)
	}
	if strings.Contains(out.String(), "remove "+dpdkDir()+",") {
		t.Errorf("removeStale reported a failure to remove %s, which is in use", dpdkDir())
	}
}
