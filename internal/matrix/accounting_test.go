package matrix

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestLostRefusesMoreReceivedThanSent: a count above what was sent is a
// wrong count, not a loss of zero.
func TestLostRefusesMoreReceivedThanSent(t *testing.T) {
	if n, err := lost(10, 7); n != 3 || err != nil {
		t.Errorf("lost(10, 7) = %d, %v; want 3, nil", n, err)
	}
	if n, err := lost(265472, 265479); err == nil || !strings.Contains(err.Error(), "more than the 265472 sent") {
		t.Errorf("lost(265472, 265479) = %d, %v; want an error", n, err)
	}
}

// TestTxStrayFramesDoNotCount sends, from A across a veth pair, what the
// host ends of a topology send on their own (IPv6 neighbour discovery,
// multicast), UDP to another port and the sender's frame to an unknown
// MAC address, then the sender's frames: the counter on B counts only the
// last.
func TestTxStrayFramesDoNotCount(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	sink, err := attachCountSink(tp.B, sinkMatch{DstMAC: tp.B.MAC, DstIP: tp.B.IP()})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.close()

	good := make([]byte, frameLen(64))
	if _, err := tp.requestFrame(good, payloadLen(64)); err != nil {
		t.Fatal(err)
	}
	// IPv6 neighbour solicitation to a solicited-node multicast address:
	// what a host end sends before disable_ipv6 or on its own.
	nd := make([]byte, 86)
	copy(nd, net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 2})
	copy(nd[6:], tp.A.MAC)
	binary.BigEndian.PutUint16(nd[12:], 0x86dd)
	nd[14] = 0x60
	nd[20] = 58 // ICMPv6
	// The multicast MAC with an IPv4 UDP frame to B.
	mcast := append([]byte(nil), good...)
	copy(mcast, net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 1})
	// Another port.
	otherPort := make([]byte, frameLen(64))
	u := packet.UDP{SrcMAC: tp.A.MAC, DstMAC: tp.B.MAC, SrcIP: tp.A.IP(), DstIP: tp.B.IP(), SrcPort: clientPort, DstPort: 5353}
	if _, err := u.Write(otherPort, payloadLen(64)); err != nil {
		t.Fatal(err)
	}
	// The sender's frame to a MAC address nobody has.
	unknown := append([]byte(nil), good...)
	copy(unknown, netenv.RandomMAC())

	const want = 5
	err = tp.A.Do(func() error {
		raw, err := openRaw(tp.A.Index)
		if err != nil {
			return err
		}
		defer raw.close()
		for _, f := range [][]byte{nd, mcast, otherPort, unknown, nd, otherPort} {
			if err := raw.write(f); err != nil {
				return err
			}
		}
		for range want {
			if err := raw.write(good); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err = sink.total(); err != nil || got >= want {
			break
		}
	}
	time.Sleep(50 * time.Millisecond)
	if got, err = sink.total(); err != nil || got != want {
		t.Fatalf("counted %d (%v), want the %d frames of the sender and none of the 6 strays", got, err, want)
	}
}

// TestTxNothingArrivesFails: a sender whose frames all go to a MAC address
// nobody has gets nothing to B, and the cell fails, whatever else B sees.
func TestTxNothingArrivesFails(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	tp.aNext = netenv.RandomMAC()
	m := &measurer{cfg: Config{Warmup: 300 * time.Millisecond, Duration: 100 * time.Millisecond}}
	s, _, err := m.tx(context.Background(), tp, "afpacket", 64)
	if err == nil || !strings.Contains(err.Error(), "reached B") {
		t.Fatalf("tx to an unknown MAC: %+v, %v; want the cell to fail", s, err)
	}
}

func buildT(t *testing.T, name string) *topo {
	t.Helper()
	tp, err := build(context.Background(), name, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Error(err)
		}
	})
	return tp
}

// TestPenaltySamePath: each cell is compared with the same path on the
// baseline topology, not with the baseline's AF_XDP cell.
func TestPenaltySamePath(t *testing.T) {
	res := &Result{Config: ResultConfig{Topologies: []string{"veth", "bridge"}, Paths: Paths, Modes: []string{"rx", "rr"}, Sizes: []int{64}, Baseline: "veth"}}
	add := func(topo, path, mode string, s Sample) {
		res.Cells = append(res.Cells, &Cell{Topology: topo, Path: path, Mode: mode, Size: 64, Runs: []Sample{s}})
	}
	saturated := func(pps, appNs float64) Sample {
		return Sample{PPS: pps, OfferedPPS: 2 * pps, Sent: 1000, Received: 500, Lost: 500, AppNs: appNs}
	}
	add("veth", "udp", "rx", saturated(500e3, 1000))
	add("veth", "afxdp", "rx", saturated(3e6, 80))
	add("bridge", "udp", "rx", saturated(250e3, 1500))
	add("bridge", "afxdp", "rx", saturated(1.5e6, 120))
	add("veth", "udp", "rr", Sample{P50: 100, P99: 500, Sent: 10, Received: 10})
	add("bridge", "udp", "rr", Sample{P50: 120, P99: 560, Sent: 10, Received: 10})
	res.Summarize()
	for _, tc := range []struct {
		topo, path, mode string
		against          string
		pps, cpu, p99    float64
	}{
		{"bridge", "udp", "rx", "veth/udp", -50, 50, 0},
		{"bridge", "afxdp", "rx", "veth/afxdp", -50, 50, 0},
		{"veth", "udp", "rx", "veth/udp", 0, 0, 0},
		{"bridge", "udp", "rr", "veth/udp", 0, 0, 60},
	} {
		c := res.Cell(tc.topo, tc.path, tc.mode, 64)
		p := c.Penalty
		if p == nil || p.Against != tc.against || p.PPSPct != tc.pps || p.CPUPct != tc.cpu || p.P99Us != tc.p99 {
			t.Errorf("%s/%s/%s penalty = %+v, want against %s: rate %v%%, cpu %v%%, p99 %+vµs", tc.topo, tc.path, tc.mode, p, tc.against, tc.pps, tc.cpu, tc.p99)
		}
	}
	// Recomputed against another baseline topology, as -render -baseline
	// does.
	res.Config.Baseline = "bridge"
	res.Summarize()
	if p := res.Cell("veth", "udp", "rx", 64).Penalty; p == nil || p.Against != "bridge/udp" || p.PPSPct != 100 {
		t.Errorf("veth/udp against bridge = %+v, want +100%% against bridge/udp", p)
	}
	// A result from before the baseline was a topology.
	res.Config.Baseline = "veth/afxdp"
	res.Summarize()
	if p := res.Cell("bridge", "udp", "rx", 64).Penalty; p == nil || p.Against != "veth/udp" {
		t.Errorf("old baseline veth/afxdp: bridge/udp penalty = %+v, want against veth/udp", p)
	}
	// Comparisons across paths are labelled as such.
	res.Config.Modes = []string{"rx"}
	for _, f := range res.findings() {
		if strings.Contains(f, "×") && !strings.Contains(f, "not a topology's penalty") {
			t.Errorf("cross-path finding not labelled: %q", f)
		}
	}
}

// TestSenderBound checks the cells whose receiver took all it was
// offered: marked as limited on the sending side only when every run was,
// compared with the baseline like the rest (on veth and ptp the sending
// side's work is the topology's), and left out of the comparisons across
// paths.
func TestSenderBound(t *testing.T) {
	res := &Result{Config: ResultConfig{Topologies: []string{"veth", "ptp"}, Paths: []string{"udp", "afxdp"}, Modes: []string{"rx"}, Sizes: []int{64}, Baseline: "veth"},
		Topos: []TopologyInfo{{Name: "veth", Available: true}, {Name: "ptp", Available: true}}}
	add := func(topo, path string, runs ...Sample) {
		res.Cells = append(res.Cells, &Cell{Topology: topo, Path: path, Mode: "rx", Size: 64, Runs: runs})
	}
	// An AF_PACKET sender's 181k, all taken.
	idle := Sample{PPS: 181e3, OfferedPPS: 181.2e3, Sent: 181696, Received: 181696, AppNs: 1956}
	add("veth", "udp", Sample{PPS: 563e3, OfferedPPS: 585e3, Sent: 589824, Received: 565571, Lost: 24253, AppNs: 1009})
	add("veth", "afxdp", idle, Sample{PPS: 3e6, OfferedPPS: 3e6, Sent: 3e6, Received: 3e6, AppNs: 83}, Sample{PPS: 3.1e6, OfferedPPS: 3.2e6, Sent: 3.2e6, Received: 3.1e6, Lost: 1e5, AppNs: 80})
	add("ptp", "udp", Sample{PPS: 240e3, OfferedPPS: 240e3, Sent: 240832, Received: 240832, AppNs: 1674})
	add("ptp", "afxdp", Sample{PPS: 150e3, OfferedPPS: 181e3, Sent: 181e3, Received: 150e3, Lost: 31e3, AppNs: 2000})
	res.Summarize()

	c := res.Cell("ptp", "udp", "rx", 64)
	if !c.SenderBound || c.Penalty == nil || c.Penalty.Against != "veth/udp" || c.Penalty.PPSPct > -50 {
		t.Errorf("ptp/udp, all taken: sender-bound %v, penalty %+v; want marked and compared with veth/udp (-57%%)", c.SenderBound, c.Penalty)
	}
	if !strings.HasSuffix(c.value(), "*") || !strings.Contains(c.penaltyText(), "rate") {
		t.Errorf("ptp/udp shows as %q, %q", c.value(), c.penaltyText())
	}
	if c := res.Cell("veth", "afxdp", "rx", 64); c.SenderBound || c.SenderBoundRuns != 2 {
		t.Errorf("veth/afxdp, all taken in 2 runs of 3: sender-bound %v (%d runs)", c.SenderBound, c.SenderBoundRuns)
	}
	if c := res.Cell("veth", "udp", "rx", 64); c.SenderBound || c.Penalty == nil {
		t.Errorf("veth/udp lost 4%%: sender-bound %v, penalty %+v", c.SenderBound, c.Penalty)
	}
	if c := res.Cell("ptp", "afxdp", "rx", 64); c.SenderBound || c.Penalty == nil || c.Penalty.PPSPct > -90 {
		t.Errorf("ptp/afxdp at 150k against veth/afxdp at 3M: sender-bound %v, penalty %+v; want about -95%%", c.SenderBound, c.Penalty)
	}
	for _, f := range res.findings() {
		if strings.Contains(f, "Across paths") && strings.Contains(f, "ptp ×") {
			t.Errorf("a comparison across paths with a cell limited on the sending side: %q", f)
		}
		if strings.Contains(f, "ptp 240k") && !strings.Contains(f, "ptp 240k*") {
			t.Errorf("a rate limited on the sending side without its mark: %q", f)
		}
	}
	var md strings.Builder
	if err := res.WriteMarkdown(&md, "", ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "ptp/udp/rx/64") {
		t.Errorf("markdown does not list ptp/udp/rx/64 as limited on the sending side:\n%s", md.String())
	}
}

// TestDropCounters: drop counters count from one snapshot to another, all
// of them, a link that appeared in between from zero; and the counters of
// one AF_XDP drop show as the same drops, not as three.
func TestDropCounters(t *testing.T) {
	before := counters{keyXSKDropped: 100, "B's veth rx_dropped": 40, "B's veth tx_dropped": 3}
	after := counters{keyXSKDropped: 150, "B's veth rx_dropped": 90, "B's veth tx_dropped": 3, "host's bridge rx_dropped": 2}
	got := drops(before, after)
	want := map[string]uint64{keyXSKDropped: 50, "B's veth rx_dropped": 50, "host's bridge rx_dropped": 2}
	if len(got) != len(want) {
		t.Fatalf("drops = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("drops = %v, want %v", got, want)
		}
	}

	c := &Cell{Status: StatusOK, Path: "afxdp", Mode: "rx", LossPct: 0.61,
		Drops: map[string]uint64{keyXSKDropped: 59078, keyXSKFillEmpty: 59078, "B's veth rx_dropped": 59078, "host's bridge tx_dropped": 3}}
	txt := c.dropText()
	if !strings.Contains(txt, keyXSKDropped+" 59078 [the same drops, counted again: "+keyXSKFillEmpty+" 59078, B's veth rx_dropped 59078]") ||
		!strings.Contains(txt, "host's bridge tx_dropped 3") {
		t.Errorf("dropText = %q", txt)
	}
	// rr on AF_XDP: the client's socket in A, with A's veth, likewise.
	a := xskKeysOf("A")
	c.Drops = map[string]uint64{a.dropped: 448, a.fillEmpty: 448, "A's veth rx_dropped": 448, keyXSKDropped: 7, "B's veth rx_dropped": 7}
	txt = c.dropText()
	if !strings.Contains(txt, a.dropped+" 448 [the same drops, counted again: "+a.fillEmpty+" 448, A's veth rx_dropped 448]") ||
		!strings.Contains(txt, keyXSKDropped+" 7 [the same drops, counted again: B's veth rx_dropped 7]") {
		t.Errorf("dropText = %q", txt)
	}
	// B's veth overflowing its ring: its rx_dropped is the socket's
	// drops plus A's tx_dropped, shown once, not a third time.
	c.Drops = map[string]uint64{keyXSKDropped: 19504, "B's veth rx_dropped": 143024, "A's veth tx_dropped": 123520}
	txt = c.dropText()
	if want := keyXSKDropped + " 19504, A's veth tx_dropped 123520 [the same drops, counted again: B's veth rx_dropped 143024]"; !strings.Contains(txt, want) {
		t.Errorf("dropText = %q, want %q in it", txt, want)
	}
	// Only the overflow, no socket drops.
	c.Drops = map[string]uint64{"B's veth rx_dropped": 500, "A's veth tx_dropped": 500}
	txt = c.dropText()
	if want := "(A's veth tx_dropped 500 [the same drops, counted again: B's veth rx_dropped 500])"; !strings.Contains(txt, want) {
		t.Errorf("dropText = %q, want %q in it", txt, want)
	}
	// A's tx_dropped that B's rx_dropped does not repeat stays on its own.
	c.Drops = map[string]uint64{keyXSKDropped: 7, "B's veth rx_dropped": 7, "A's veth tx_dropped": 9}
	txt = c.dropText()
	if want := keyXSKDropped + " 7 [the same drops, counted again: B's veth rx_dropped 7]; A's veth tx_dropped 9"; !strings.Contains(txt, want) {
		t.Errorf("dropText = %q, want %q in it", txt, want)
	}
}

// TestDropCountersByRole measures an AF_XDP rx cell on veth and checks
// that its interface counters are named by role, never by the random link
// names, and cover the span the socket's counters do: the drops of one
// event agree. B's veth counts in its rx_dropped both the frames it could
// not redirect into the socket and those its 256-frame XDP ring had no
// room for, which A's veth counts as its tx_dropped: that happens when B's
// NAPI poll falls behind pktgen, on a busy machine (deferred to ksoftirqd)
// or, as in the threaded case, always.
func TestDropCountersByRole(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name     string
		threaded bool // B's NAPI poll in a kernel thread, which falls behind pktgen
	}{
		{"softirq", false},
		{"threaded", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := buildT(t, "veth")
			names, err := tp.linkCounters()
			if err != nil {
				t.Fatal(err)
			}
			if keys := slices.Sorted(maps.Keys(names)); !slices.Equal(keys, []string{"A's veth", "B's veth"}) {
				t.Errorf("link counters named %q, want A's veth and B's veth", keys)
			}
			if tc.threaded {
				if err := app.SetVethThreadedNAPI(tp.B, true); err != nil {
					t.Fatal(err)
				}
			}
			m := &measurer{cfg: Config{Warmup: 2 * time.Second, Duration: 200 * time.Millisecond}}
			s, _, err := m.rx(context.Background(), tp, "afxdp", 64)
			if err != nil {
				t.Fatal(err)
			}
			for k := range s.Drops {
				if !strings.HasPrefix(k, "A's ") && !strings.HasPrefix(k, "B's ") {
					t.Errorf("drop counter %q not named by role", k)
				}
			}
			x, v, overflow := s.Drops[keyXSKDropped]+s.Drops[keyXSKRingFull], s.Drops["B's veth rx_dropped"], s.Drops["A's veth tx_dropped"]
			t.Logf("sent %d, received %d, lost %d; drops %v", s.Sent, s.Received, s.Lost, s.Drops)
			if x+overflow != v {
				t.Errorf("the AF_XDP socket dropped %d and veth's ring overflowed by %d, B's veth counted %d: counters over different spans", x, overflow, v)
			}
			if x+overflow > s.Lost {
				t.Errorf("the socket dropped %d and veth %d, more than the %d lost", x, overflow, s.Lost)
			}
			if tc.threaded && overflow == 0 {
				t.Errorf("threaded: veth's ring never overflowed (drops %v); the case tests nothing", s.Drops)
			}
		})
	}
}

// TestTeardownFailureFailsRun: a topology that cannot be torn down fails
// the run, whatever its cells did.
func TestTeardownFailureFailsRun(t *testing.T) {
	res := &Result{Config: ResultConfig{Topologies: []string{"veth"}, Paths: []string{"udp"}, Modes: []string{"tx"}, Sizes: []int{64}, Baseline: "veth"},
		Topos: []TopologyInfo{{Name: "veth", Available: true}},
		Cells: []*Cell{{Topology: "veth", Path: "udp", Mode: "tx", Size: 64, Runs: []Sample{{PPS: 1, Sent: 1, Received: 1}}}}}
	res.closeTopo(0, "veth", &topo{closers: []func() error{func() error { return nil }}})
	if res.Failed() {
		t.Fatalf("a clean teardown failed the run: %q", res.TeardownErrors)
	}
	boom := errors.New("delete link mxv0: device or resource busy")
	res.closeTopo(1, "veth", &topo{closers: []func() error{func() error { return boom }, func() error { return nil }}})
	res.Summarize()
	if !res.Failed() || len(res.TeardownErrors) != 1 || !strings.Contains(res.TeardownErrors[0], "run 2: tear down veth: delete link mxv0") {
		t.Fatalf("failed %v, teardown errors %q", res.Failed(), res.TeardownErrors)
	}
	if c := res.Cells[0]; c.Status != StatusOK {
		t.Errorf("the cell's measurement stands: %s", c.Status)
	}
	var md strings.Builder
	res.WriteMarkdown(&md, "", "")
	if !strings.Contains(md.String(), "**Teardown failed**") {
		t.Errorf("the page does not say the teardown failed:\n%s", md.String())
	}
}

// TestCheckResult: a result read back is checked before anything reads
// it, naming what is wrong.
func TestCheckResult(t *testing.T) {
	good := func() *Result {
		return &Result{Config: ResultConfig{Topologies: []string{"veth"}, Paths: []string{"udp"}, Modes: []string{"rx"}, Sizes: []int{64}, Baseline: "veth"},
			Topos: []TopologyInfo{{Name: "veth", Available: true}},
			Cells: []*Cell{{Topology: "veth", Path: "udp", Mode: "rx", Size: 64}}}
	}
	if err := good().Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Result)
		want string
	}{
		{"null cell", func(r *Result) { r.Cells = []*Cell{nil} }, "cells[0]: null"},
		{"no topologies", func(r *Result) { r.Config.Topologies = nil }, "config.topologies: empty"},
		{"unknown path", func(r *Result) { r.Cells[0].Path = "dpdk" }, "cells[0] veth/dpdk/rx/64: not a cell of config"},
		{"size not in config", func(r *Result) { r.Cells[0].Size = 1500 }, "cells[0] veth/udp/rx/1500: not a cell of config"},
		{"twice", func(r *Result) { r.Cells = append(r.Cells, r.Cells[0]) }, "cells[1] veth/udp/rx/64: given twice"},
		{"baseline", func(r *Result) { r.Config.Baseline = "bridge/afxdp" }, `config.baseline "bridge": not among`},
		{"status", func(r *Result) { r.Cells[0].Status = "great" }, `status "great" unknown`},
	} {
		r := good()
		tc.mod(r)
		if err := r.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestCheckPluginDir: a plugin directory must hold, as executables, the
// plugins the topologies asked for, and only those.
func TestCheckPluginDir(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"ptp": 0o755, "host-local": 0o755, "bridge": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		topologies []string
		dir, want  string
	}{
		{[]string{"veth", "ptp"}, dir, ""},
		{[]string{"veth", "vxlan"}, "/nonexistent", ""},
		{[]string{"ptp", "bridge", "macvlan"}, dir, "no executable CNI plugin bridge, macvlan in it"},
		{[]string{"ptp"}, "/nonexistent", `"/nonexistent": stat /nonexistent: no such file or directory`},
		{[]string{"ptp"}, filepath.Join(dir, "ptp"), "not a directory"},
	} {
		err := CheckPluginDir(tc.dir, tc.topologies)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckPluginDir(%s, %v) = %v, want %q", tc.dir, tc.topologies, err, tc.want)
		}
	}
}

// TestRRLossHasCounters drives rr faster than its sockets can keep up and
// checks that what was lost shows in the drop counters: the client's and
// the echo's sockets are where rr loses requests and replies, and a loss
// without a counter is a packet unaccounted for.
func TestRRLossHasCounters(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	m := &measurer{cfg: Config{Warmup: 2 * time.Second, Duration: 300 * time.Millisecond, Rate: 300000}}
	for _, path := range Paths {
		s, _, err := m.rr(context.Background(), tp, path, 1518)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var counted uint64
		for _, v := range s.Drops {
			counted += v
		}
		t.Logf("%s: sent %d, received %d, lost %d; drops %v", path, s.Sent, s.Received, s.Lost, s.Drops)
		if s.Lost == 0 {
			t.Logf("%s: nothing lost at %d/s; nothing to account for", path, m.cfg.Rate)
			continue
		}
		if counted < s.Lost {
			t.Errorf("%s: lost %d, but the drop counters account for %d: %v", path, s.Lost, counted, s.Drops)
		}
		if path == "afxdp" && s.Drops[keyXSKDropped]+s.Drops[keyXSKRingFull]+s.Drops[xskKeysOf("A").dropped]+s.Drops[xskKeysOf("A").ringFull] == 0 {
			t.Errorf("afxdp: lost %d, and neither AF_XDP socket counted a drop: %v", s.Lost, s.Drops)
		}
	}
}
