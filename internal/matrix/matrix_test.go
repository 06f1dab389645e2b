package matrix

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"quick", func(c *Config) { *c = QuickConfig() }, ""},
		{"unknown topology", func(c *Config) { c.Topologies = []string{"veth", "geneve"} }, `Topologies "geneve": unknown`},
		{"unknown path", func(c *Config) { c.Paths = []string{"dpdk"} }, `Paths "dpdk": unknown`},
		{"unknown mode", func(c *Config) { c.Modes = []string{"stream"} }, `Modes "stream": unknown`},
		{"small frame", func(c *Config) { c.Sizes = []int{60} }, "Sizes 60"},
		{"jumbo frame", func(c *Config) { c.Sizes = []int{9000} }, "Sizes 9000"},
		{"baseline not measured", func(c *Config) { c.Topologies = []string{"macvlan"} }, `Baseline "veth": not among the topologies measured`},
		{"baseline with a path", func(c *Config) { c.Baseline = "veth/afxdp" }, "must be a topology, such as veth: each cell is compared with the same path on it"},
		{"baseline any path", func(c *Config) { c.Paths = []string{"udp"} }, ""},
		{"duplicate size", func(c *Config) { c.Sizes = []int{64, 1500, 64} }, "Sizes 64: given twice"},
		{"duplicate topology", func(c *Config) { c.Topologies = []string{"veth", "veth"} }, `Topologies "veth": given twice`},
		{"plugin dir missing", func(c *Config) { c.PluginDir = "/nonexistent" }, `PluginDir "/nonexistent": stat /nonexistent: no such file`},
		{"plugin dir unused", func(c *Config) { c.PluginDir = "/nonexistent"; c.Topologies = []string{"veth", "vxlan"} }, ""},
		{"rate too low for duration", func(c *Config) { c.Rate = 10; c.Duration = 100 * time.Millisecond }, "fewer than 10 requests"},
		{"no runs", func(c *Config) { c.Runs = 0 }, "Runs 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestValidateNamed: the errors name each field as name says, so that a
// command names its flags, and keep the field's name where name gives "".
func TestValidateNamed(t *testing.T) {
	c := DefaultConfig()
	c.Sizes, c.Runs, c.Rate, c.Duration = []int{9000}, 0, 10, 100*time.Millisecond
	err := c.ValidateNamed(func(field string) string {
		if field == "Runs" {
			return ""
		}
		return "-" + strings.ToLower(field)
	})
	for _, want := range []string{"-sizes 9000: a frame must be", "Runs 0: must be between 1 and 100",
		"-rate 10 with -duration 100ms: fewer than 10 requests per run"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateNamed = %v, want an error containing %q", err, want)
		}
	}
	if err != nil && (strings.Contains(err.Error(), "Sizes") || strings.Contains(err.Error(), "Duration")) {
		t.Errorf("ValidateNamed = %v: a field named that name renamed", err)
	}
}

func TestParseList(t *testing.T) {
	got, err := ParseList("paths", "afxdp, udp,afxdp", Paths)
	if err != nil || strings.Join(got, ",") != "afxdp,udp" {
		t.Fatalf("ParseList = %v, %v", got, err)
	}
	if got, _ := ParseList("modes", "all", Modes); len(got) != len(Modes) {
		t.Fatalf("all = %v", got)
	}
	if _, err := ParseList("topologies", "veth,ipvlan", Topologies); err == nil || !strings.Contains(err.Error(), `-topologies "ipvlan": unknown`) {
		t.Fatalf("ParseList(ipvlan) = %v", err)
	}
}

func TestSummarize(t *testing.T) {
	c := DefaultConfig()
	c.Topologies, c.Paths, c.Modes, c.Sizes = []string{"veth", "macvlan"}, []string{"afxdp"}, []string{"rx", "rr"}, []int{64}
	res := &Result{Config: ResultConfig{Sizes: c.Sizes}}
	add := func(topo, mode string, runs ...Sample) {
		res.Cells = append(res.Cells, &Cell{Topology: topo, Path: "afxdp", Mode: mode, Size: 64, Runs: runs})
	}
	add("veth", "rx", Sample{PPS: 100, OfferedPPS: 120, Sent: 10, Received: 9, Lost: 1}, Sample{PPS: 300, OfferedPPS: 400, Sent: 10, Received: 9, Lost: 1}, Sample{PPS: 200, OfferedPPS: 250, Sent: 10, Received: 9, Lost: 1})
	add("macvlan", "rx", Sample{PPS: 50, OfferedPPS: 100, Sent: 10, Received: 5, Lost: 5})
	add("veth", "rr", Sample{P50: 10, P99: 20})
	add("macvlan", "rr", Sample{P50: 15, P99: 50})
	res.Cells = append(res.Cells, &Cell{Topology: "macvlan", Path: "afxdp", Mode: "tx", Size: 64})
	summarize(res, c)
	v := res.Cell("veth", "afxdp", "rx", 64)
	if v.Status != StatusOK || v.PPS != 200 || v.PPSMin != 100 || v.PPSMax != 300 || v.Penalty.PPSPct != 0 {
		t.Fatalf("veth rx = %+v", v)
	}
	if got := v.LossPct; got < 9.9 || got > 10.1 {
		t.Fatalf("LossPct = %v, want 3/30", got)
	}
	if m := res.Cell("macvlan", "afxdp", "rx", 64); m.Penalty == nil || m.Penalty.PPSPct != -75 {
		t.Fatalf("macvlan rx penalty = %+v", m.Penalty)
	}
	if m := res.Cell("macvlan", "afxdp", "rr", 64); m.Penalty == nil || m.Penalty.P99Us != 30 || m.Penalty.P50Us != 5 {
		t.Fatalf("macvlan rr penalty = %+v", m.Penalty)
	}
	if f := res.Cell("macvlan", "afxdp", "tx", 64); f.Status != StatusFailed || f.Reason == "" {
		t.Fatalf("unmeasured cell = %+v", f)
	}

	// A baseline that got nothing through gives no penalty, not "0%".
	res.Cells = append(res.Cells,
		&Cell{Topology: "veth", Path: "udp", Mode: "tx", Size: 64, Runs: []Sample{{PPS: 0, Sent: 1000, Lost: 1000}}},
		&Cell{Topology: "macvlan", Path: "udp", Mode: "tx", Size: 64, Runs: []Sample{{PPS: 5e5, Sent: 1000, Received: 1000, AppNs: 10}}})
	summarize(res, c)
	if m := res.Cell("macvlan", "udp", "tx", 64); m.Penalty != nil || m.NoPenalty != "veth/udp got nothing through" {
		t.Errorf("against a baseline of 0 pps: penalty %+v (%q), want none", m.Penalty, m.NoPenalty)
	}
}

// TestQuickMatrix runs every topology the kernel has, every path and mode,
// once and briefly, and checks that every cell is measured (packets counted
// on both ends) or says plainly why it is unavailable, and that nothing is
// left behind.
func TestQuickMatrix(t *testing.T) {
	testenv.RequirePrivileged(t)
	if _, err := os.Stat("/usr/lib/cni/ptp"); err != nil {
		if os.Getenv(testenv.RequireEnv) == "1" {
			t.Fatalf("CNI plugins missing (containernetworking-plugins): %v", err)
		}
		t.Skipf("CNI plugins missing (apt-get install containernetworking-plugins): %v", err)
	}
	// The poller's epoll descriptor is made on first use: make it now so
	// that the descriptor count compares like with like.
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err == nil {
		c.Close()
	}
	t.Setenv("TMPDIR", t.TempDir()) // where the CNI IPAM stores go
	ipvlan := ipvlanAvailable(t)
	before := testenv.Snapshot(t)
	rootLinks := testenv.LinkNames(t)

	var mu sync.Mutex
	var nsInodes []uint64
	testHookBuilt = func(tp *topo) {
		mu.Lock()
		defer mu.Unlock()
		for _, ns := range tp.nss {
			var st syscall.Stat_t
			if err := syscall.Fstat(int(ns.NsHandle()), &st); err == nil {
				nsInodes = append(nsInodes, st.Ino)
			}
		}
	}
	defer func() { testHookBuilt = nil }()

	c := QuickConfig()
	c.Duration = 100 * time.Millisecond
	start := time.Now()
	res, err := Run(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("matrix of %d cells in %v", len(res.Cells), time.Since(start).Round(time.Millisecond))
	var out bytes.Buffer
	res.WriteText(&out)
	t.Log("\n" + out.String())

	measured := map[string]bool{}
	for _, cell := range res.Cells {
		name := cell.Topology + "/" + cell.Path + "/" + cell.Mode
		switch cell.Status {
		case StatusOK:
			measured[cell.Topology] = true
			s := cell.Runs[0]
			if s.Sent == 0 || s.Received == 0 || s.PPS <= 0 {
				t.Errorf("%s: packets not counted on both ends: sent %d, received %d, pps %v", name, s.Sent, s.Received, s.PPS)
			}
			if cell.Generator == "" {
				t.Errorf("%s: no generator recorded", name)
			}
			if cell.Path == "afxdp" && cell.Bind == "" {
				t.Errorf("%s: AF_XDP bind mode not recorded", name)
			}
			if cell.Path == "afxdp" && cell.Mode != "tx" && cell.XDP != "native" && cell.XDP != "generic" {
				t.Errorf("%s: XDP mode %q not recorded", name, cell.XDP)
			}
			if cell.Mode == "rr" && (cell.P50 <= 0 || cell.P99 < cell.P50 || cell.P999 < cell.P99) {
				t.Errorf("%s: percentiles p50 %v p99 %v p99.9 %v", name, cell.P50, cell.P99, cell.P999)
			}
		case StatusUnavailable:
			if !strings.HasPrefix(cell.Reason, "not available: ") {
				t.Errorf("%s: unavailable without a plain reason: %q", name, cell.Reason)
			}
		default:
			t.Errorf("%s: %s: %s", name, cell.Status, cell.Reason)
		}
	}
	want := []string{"veth", "ptp", "bridge", "macvlan", "vxlan"}
	if ipvlan {
		want = append(want, "ipvlan-l2", "ipvlan-l3")
	} else {
		for _, tn := range []string{"ipvlan-l2", "ipvlan-l3"} {
			if c := res.Cell(tn, "afxdp", "rx", 64); c.Status != StatusUnavailable || !strings.Contains(c.Reason, "CONFIG_IPVLAN") {
				t.Errorf("%s on a kernel without ipvlan: %s %q", tn, c.Status, c.Reason)
			}
		}
		var md bytes.Buffer
		res.WriteMarkdown(&md, "", "")
		if title, _, _ := strings.Cut(md.String(), "\n"); !strings.Contains(title, "not measured here: ipvlan") {
			t.Errorf("the title claims ipvlan: %q", title)
		}
	}
	t.Logf("ipvlan in this kernel: %v", ipvlan)
	for _, tn := range want {
		if !measured[tn] {
			t.Errorf("topology %s: nothing measured", tn)
		}
	}

	// Nothing left behind.
	checkNothingLeft(t, before, rootLinks, nsInodes)
}

// ipvlanAvailable asks the kernel: it makes an ipvlan on a veth in a
// namespace of its own.
func ipvlanAvailable(t *testing.T) bool {
	t.Helper()
	ns, err := netenv.NewNetns("")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	v, err := netenv.NewVeth(&netenv.VethOptions{HostNS: ns, NoAddr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	l, err := netenv.NewIPVlan(v.Host, nil)
	if errors.Is(err, netenv.ErrNotSupported) {
		return false
	}
	if err != nil {
		t.Fatalf("probe ipvlan: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return true
}

// checkNothingLeft fails t unless, within 3 s, the process is back to the
// descriptors and socket mappings of before, the root namespace has no
// new mx* link (rootLinks are its links before), and nothing else of a
// run is left: children, holders of the namespaces nsInodes, IPAM stores.
func checkNothingLeft(t *testing.T, before testenv.Resources, rootLinks map[string]bool, nsInodes []uint64) {
	t.Helper()
	testenv.Settle(t, 3*time.Second, func() []string {
		var problems []string
		after := testenv.Snapshot(t)
		if after.FDs != before.FDs {
			problems = append(problems, "open descriptors "+strconv.Itoa(before.FDs)+" before, "+strconv.Itoa(after.FDs)+" after")
		}
		if after.SocketMappings != before.SocketMappings {
			problems = append(problems, "socket (AF_XDP ring) mappings left")
		}
		for _, name := range testenv.LinksAdded(t, rootLinks, "mx") {
			problems = append(problems, "link "+name+" left in the root namespace")
		}
		if kids := children(); len(kids) > 0 {
			problems = append(problems, "child processes left: "+strings.Join(kids, ", "))
		}
		if users := nsUsers(nsInodes); len(users) > 0 {
			problems = append(problems, "namespaces still held by: "+strings.Join(users, ", "))
		}
		if ents, _ := filepath.Glob(filepath.Join(os.TempDir(), "afxdp-cni-ipam-*")); len(ents) > 0 {
			problems = append(problems, "CNI IPAM stores left: "+strings.Join(ents, ", "))
		}
		return problems
	})
}

// children lists the processes whose parent is this one.
func children() []string {
	me := strconv.Itoa(os.Getpid())
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == me {
			out = append(out, s[:i+1])
		}
	}
	return out
}

// nsUsers lists this process's threads that are in, and descriptors that
// hold, one of the network namespaces. Only this process: a namespace's
// inode number is reused once it is freed, so another test binary running
// beside this one may be in a new namespace with the same number (its
// children are checked by children).
func nsUsers(inodes []uint64) []string {
	if len(inodes) == 0 {
		return nil
	}
	want := map[string]bool{}
	for _, ino := range inodes {
		want["net:["+strconv.FormatUint(ino, 10)+"]"] = true
	}
	var out []string
	paths, _ := filepath.Glob("/proc/self/task/[0-9]*/ns/net")
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, p := range append(paths, fds...) {
		if l, err := os.Readlink(p); err == nil && want[l] {
			out = append(out, p+" -> "+l)
		}
	}
	return out
}

// TestCancelMidway stops a run from inside, in the middle of a topology
// with sockets and programs in use, and checks that Run reports it and
// leaves nothing behind.
func TestCancelMidway(t *testing.T) {
	testenv.RequirePrivileged(t)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skipf("CNI plugins missing: %v", err)
	}
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err == nil {
		c.Close()
	}
	t.Setenv("TMPDIR", t.TempDir())
	before := testenv.Snapshot(t)
	rootLinks := testenv.LinkNames(t)
	var inodes []uint64
	testHookBuilt = func(tp *topo) {
		for _, ns := range tp.nss {
			var st syscall.Stat_t
			if syscall.Fstat(int(ns.NsHandle()), &st) == nil {
				inodes = append(inodes, st.Ino)
			}
		}
	}
	defer func() { testHookBuilt = nil }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := QuickConfig()
	c.Topologies = []string{"bridge", "macvlan"}
	c.Baseline = "bridge"
	done := 0
	res, err := Run(ctx, c, func(p Progress) {
		if p.Phase == "done" {
			if done++; done == 4 {
				cancel()
			}
		}
	})
	if !errors.Is(err, context.Canceled) || res == nil || !res.Interrupted {
		t.Fatalf("Run = %v, interrupted %v; want context.Canceled", err, res != nil && res.Interrupted)
	}
	if m := res.Cell("macvlan", "udp", "rx", 64); m.Status != StatusFailed || !strings.Contains(m.Reason, "interrupted") {
		t.Errorf("a cell never reached: %s %q", m.Status, m.Reason)
	}
	checkNothingLeft(t, before, rootLinks, inodes)
}
