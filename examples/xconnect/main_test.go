package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestRun forwards generated traffic for a second on the embedded
// topology: what the first socket received is what the second sent and
// what the far end counted, and nothing is left behind.
func TestRun(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	// -d counts from the start of forwarding; a deadline on the context
	// would count the building of the pairs too, and end the run before
	// it started on a loaded machine.
	var out bytes.Buffer
	if err := run(context.Background(), &config{queue: 0, batch: 64, ring: 512, d: time.Second, cpu: -1, genCPU: -1, frameLen: 64}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var fwd, back, offered, far uint64
	var a, b string
	total := regexp.MustCompile(`, (\d+) and (\d+) in all$`)
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "forwarded ") {
			// "forwarded N packets A→B (RATE) and M B→A (RATE) in the Ss run"
			f := strings.Fields(line)
			if len(f) < 4 {
				t.Fatalf("line %q", line)
			}
			a, b, _ = strings.Cut(f[3], "→")
		}
		// "after the run, while ...: K more A→B and L B→A, N and M in all"
		if m := total.FindStringSubmatch(line); m != nil {
			if _, err := fmt.Sscan(m[1], &fwd); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			if _, err := fmt.Sscan(m[2], &back); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
		}
		if strings.HasPrefix(line, "generator offered ") {
			if _, err := fmt.Sscanf(line, "generator offered %d, the far end received %d", &offered, &far); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
		}
	}
	// Every frame a's socket saw, received or dropped, is one the
	// generator offered: the report counts all of them, not only the
	// generator's calls that had ended.
	aStats := statsOf(t, out.String(), a)
	seen := aStats["rx packets"] + aStats["rx dropped"] + aStats["rx ring full"]
	t.Logf("%s→%s forwarded %d, back %d, offered %d, far end %d; %s saw %d", a, b, fwd, back, offered, far, a, seen)
	if fwd == 0 || far != fwd || back != 0 || offered < seen || aStats["rx packets"] != fwd {
		t.Fatalf("forwarded %d (back %d), far end received %d, offered %d, %s's socket saw %d:\n%s", fwd, back, far, offered, a, seen, out.String())
	}
	// Both sockets' statistics agree with the count.
	for _, want := range []string{
		fmt.Sprintf("%s socket statistics:\n  rx packets        %d\n", a, fwd),
		fmt.Sprintf("  tx packets        %d\n", fwd),
		fmt.Sprintf("  tx completed      %d\n", fwd),
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}

// statsOf parses the socket statistics that the run printed for ifname.
func statsOf(t *testing.T, out, ifname string) map[string]uint64 {
	t.Helper()
	_, rest, ok := strings.Cut(out, ifname+" socket statistics:\n")
	if !ok {
		t.Fatalf("no statistics of %s in:\n%s", ifname, out)
	}
	m := map[string]uint64{}
	for _, line := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(line, "  ") {
			break
		}
		i := strings.LastIndexByte(line, ' ')
		var v uint64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		m[strings.TrimSpace(line[:i])] = v
	}
	return m
}

func TestBadConfig(t *testing.T) {
	good := config{batch: 64, ring: 512, cpu: -1, genCPU: -1, frameLen: 64}
	for _, tt := range []struct {
		edit func(*config)
		want string
	}{
		// Each error starts with the flag at fault, as typed.
		{func(c *config) { c.a = "eth0" }, "-a eth0: needs -b: give both interfaces or neither"},
		{func(c *config) { c.b = "eth1" }, "-b eth1: needs -a: give both interfaces or neither"},
		{func(c *config) { c.a, c.b = "eth0", "eth0" }, "-b eth0: the same interface as -a: they must differ"},
		{func(c *config) { c.batch = 0 }, "-batch 0: must be between 1 and 4096"},
		{func(c *config) { c.ring = 32 }, "-ring 32: must be at least the batch size 64"},
		{func(c *config) { c.d = -time.Second }, "-d -1s: must not be negative"},
		{func(c *config) { c.ring = 1000 }, "-ring 1000: must be a power of two"},
		{func(c *config) { c.ring = 0 }, "-ring 0: must be a power of two"},
		{func(c *config) { c.ring = 1 << 22 }, "-ring 4194304: the default -frames, 8×ring (33554432), are more than 16777216"},
		{func(c *config) { c.frames = 1 }, "-frames 1: must be 0 or between 2047 and 16777216"},
		{func(c *config) { c.frames = 2046 }, "-frames 2046: must be 0 or between 2047 and 16777216"},
		{func(c *config) { c.frames = -8 }, "-frames -8: must be 0 or between 2047"},
		{func(c *config) { c.queue = -1 }, "-q -1: must not be negative"},
		{func(c *config) { c.frameLen = 10 }, "-size 10: must be between 60 and 1514"},
		{func(c *config) { c.frameLen = 1515 }, "-size 1515: must be between 60 and 1514"},
		{func(c *config) { c.cpu = -2 }, "-cpu -2: must be -1 (no pinning) or a CPU number"},
		{func(c *config) { c.cpu = 4096 }, "-cpu 4096: not one of the CPUs"},
		{func(c *config) { c.genCPU = 4096 }, "-gen-cpu 4096: not one of the CPUs"},
		{func(c *config) { c.a, c.b = "afxnosuchif0", "afxnosuchif1" }, "-a afxnosuchif0: no such network interface"},
		// The built-in pairs have one queue: refused before they are
		// built, not by Open once they are.
		{func(c *config) { c.queue = 1 }, "-q 1: the built-in veth pairs have one queue each"},
		// The loop and the generator would share one CPU.
		{func(c *config) { c.cpu, c.genCPU = 0, 0 }, "-cpu 0: -gen-cpu is 0 too"},
	} {
		c := good
		tt.edit(&c)
		var out bytes.Buffer
		err := run(context.Background(), &c, &out)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want an error starting %q", c, err, tt.want)
		}
		// A bad flag is refused before the veth pairs are built.
		if strings.Contains(out.String(), "built veth pairs") {
			t.Errorf("%+v: built its topology before refusing the flags:\n%s", c, out.String())
		}
	}
	// With interfaces given, -size and -gen-cpu are not used: not
	// checked (given on the command line, main refuses them: see
	// TestIdleFlag).
	c := good
	c.a, c.b, c.frameLen, c.genCPU = "afxnosuchif0", "afxnosuchif1", 10, 4096
	if err := c.validate(); err != nil {
		t.Errorf("%+v: %v; -size and -gen-cpu only matter without -a and -b", c, err)
	}
}

// TestIdleFlag: with -a and -b there is no generator, and its flags, given
// on the command line, are refused naming them; without, they are taken,
// and so are the flags that apply either way.
func TestIdleFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // "": accepted
	}{
		{[]string{"-gen-pps", "1000", "-gen-cpu", "1", "-size", "128"}, ""},
		{[]string{"-a", "eth0", "-b", "eth1", "-batch", "32", "-cpu", "1", "-d", "1s"}, ""},
		{[]string{"-a", "eth0", "-b", "eth1", "-gen-pps", "1000"}, "-gen-pps 1000: applies only to the built-in topology's generator (without -a and -b)"},
		{[]string{"-a", "eth0", "-b", "eth1", "-gen-cpu", "0"}, "-gen-cpu 0: applies only"},
		{[]string{"-a", "eth0", "-b", "eth1", "-size", "128"}, "-size 128: applies only"},
	} {
		var c config
		fs := flag.NewFlagSet("xconnect", flag.ContinueOnError)
		c.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := app.CheckGiven(fs, c.idleFlag)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v; want it accepted", tc.args, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%v: %v; want an error starting %q", tc.args, err, tc.want)
		}
	}
}

// The smallest UMEM the check lets through is one the sockets take: its
// receive half fills both fill rings exactly.
func TestFramesMinimumOpens(t *testing.T) {
	testenv.RequirePrivileged(t)
	var out bytes.Buffer
	c := &config{batch: 64, ring: 512, frames: 4*512 - 1, d: 200 * time.Millisecond, cpu: -1, genCPU: -1, frameLen: 64}
	if err := run(context.Background(), c, &out); err != nil {
		t.Fatalf("-ring 512 -frames %d: %v\n%s", c.frames, err, out.String())
	}
}

// stopCtx is a context whose first Err sends the frames that are to be in
// the RX ring when the forwarder stops, and waits until they are there.
// The forwarder asks Err before each round of batches, and does nothing
// meanwhile: the frames stay in the ring. Done is closed only then, so
// forward's look at it before forwarding finds the run not yet ended.
type stopCtx struct {
	context.Context
	once  sync.Once
	fill  func() error
	err   error
	ready chan struct{}
}

func (c *stopCtx) Err() error {
	c.once.Do(func() {
		c.err = c.fill()
		if c.err == nil {
			c.err = context.Canceled
		}
		close(c.ready)
	})
	return c.err
}

func (c *stopCtx) Done() <-chan struct{} { return c.ready }

// TestStopForwardsRXRing stops the forwarder of two given interfaces (-a,
// -b) while frames wait in the first socket's RX ring: they are forwarded
// and counted, not left where no count sees them.
func TestStopForwardsRXRing(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns, in, far := newTopologies(t)
	const n = 100 // fits veth's 256-frame ring and the socket's RX ring
	ctx := &stopCtx{Context: context.Background(), ready: make(chan struct{}), fill: func() error {
		return sendAndWait(in, n)
	}}
	c := &config{a: in.Veth.Peer.Name, b: far.Veth.Peer.Name, batch: 64, ring: 512, cpu: -1, genCPU: -1, frameLen: 64}
	var out bytes.Buffer
	if err := forward(ctx, c, ns, nil, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !errors.Is(ctx.err, context.Canceled) {
		t.Fatalf("filling the RX ring: %v", ctx.err)
	}
	st := statsOf(t, out.String(), c.a)
	// Forwarded after the run, not in it.
	want := fmt.Sprintf("%d more %s→%s and 0 %s→%s, %d and 0 in all\n", n, c.a, c.b, c.b, c.a, n)
	if !strings.Contains(out.String(), want) || st["rx packets"] != n {
		t.Fatalf("%d frames were in %s's RX ring at the stop: output lacks %q, or rx packets is not %d:\n%s",
			n, c.a, want, n, out.String())
	}
	waitFar(t, far, n)
}

// newTopologies builds what the built-in topology of run has, for tests
// that drive forward themselves: a namespace holding the inner ends of two
// veth pairs, a generator feeding the first (in), and a counting sink at
// the outer end of the second (far).
func newTopologies(t *testing.T) (*netenv.Netns, *app.Topology, *app.Topology) {
	t.Helper()
	ns := testenv.NewNetns(t)
	var topos [2]*app.Topology
	for i, o := range []*app.TopologyOptions{
		{PeerNS: ns, Generator: true, FrameLen: 64, GenBatch: 64},
		{PeerNS: ns, HostSink: true},
	} {
		topo, err := app.NewTopology(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := topo.Close(); err != nil {
				t.Error(err)
			}
		})
		topos[i] = topo
	}
	return ns, topos[0], topos[1]
}

// sendAndWait has in's generator send n frames, in chunks that fit veth's
// 256-frame ring, each once the one before has gone through the receiving
// end's NAPI poll. veth counts a frame there in rx_packets whether its
// program's redirect put it in a socket's RX ring or failed (the socket
// had no frame for it: in rx_dropped too).
func sendAndWait(in *app.Topology, n int) error {
	const chunk = 128
	c0, err := pktgen.ReadCounters(in.Veth.Peer)
	if err != nil {
		return err
	}
	for sent := 0; sent < n; {
		k := min(chunk, n-sent)
		if got, err := in.Gen.Send(uint64(k)); err != nil || got != uint64(k) {
			return fmt.Errorf("send: %d of %d: %v", got, k, err)
		}
		sent += k
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := pktgen.ReadCounters(in.Veth.Peer)
			if err != nil {
				return err
			}
			d := c.Sub(c0)
			if d.RxPackets == uint64(sent) {
				break
			} else if time.Now().After(deadline) {
				return fmt.Errorf("%s took in %+v, want %d frames", in.Veth.Peer.Name, d, sent)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// waitFar waits until far's outer end has received n frames since it was
// made (its NAPI poll counts them a little after they were sent), and
// fails if it receives more, or not that many within a generous bound.
func waitFar(t *testing.T, far *app.Topology, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := far.HostReceived()
		if err != nil {
			t.Fatal(err)
		}
		if h == n {
			return
		}
		if h > n || time.Now().After(deadline) {
			t.Fatalf("the far end received %d, want %d", h, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRatesCoverTheRun has the generator send only once the run is over,
// while it is being stopped: those frames are forwarded after the run, so
// the closing line's rates, over the run, are 0, and the next line counts
// them apart. The rates were the whole count over the run and the drain.
func TestRatesCoverTheRun(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns, in, far := newTopologies(t)
	const n = 200
	g := &generator{
		start: func() error { return nil },
		stop: func() uint64 {
			if err := sendAndWait(in, n); err != nil {
				t.Error(err)
			}
			return in.Gen.Total()
		},
		far: func() uint64 {
			h, _ := far.HostReceived()
			return h
		},
	}
	// The run ends at the forwarder's first look, before it forwards
	// anything. (A context that has ended before forward is called
	// stops it before it starts: see TestRefusedBeforeStart.)
	ctx := &stopCtx{Context: context.Background(), ready: make(chan struct{}), fill: func() error { return nil }}
	c := &config{a: in.Veth.Peer.Name, b: far.Veth.Peer.Name, batch: 64, ring: 512, cpu: -1, genCPU: -1, frameLen: 64}
	var out bytes.Buffer
	if err := forward(ctx, c, ns, g, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	o := out.String()
	for _, want := range []string{
		fmt.Sprintf("\nforwarded 0 packets %s→%s (0 pps) and 0 %s→%s (0 pps) in the ", c.a, c.b, c.b, c.a),
		fmt.Sprintf("while the generator stopped and the rings drained ("),
		fmt.Sprintf(" not in the rates): %d more %s→%s and 0 %s→%s, %d and 0 in all\n", n, c.a, c.b, c.b, c.a, n),
		fmt.Sprintf("generator offered %d, the far end received %d\n", n, n),
	} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q:\n%s", want, o)
		}
	}
	if st := statsOf(t, o, c.a); st["rx packets"] != n {
		t.Errorf("%s received %d, want %d:\n%s", c.a, st["rx packets"], n, o)
	}
}

// TestFillRingEmptyNote sends, before the forwarder takes any, more frames
// than the first socket can hold (in copy mode at most -ring, in its fill
// and RX rings together): the rest are dropped as fill ring empty, and
// the run says what those drops are, once, naming that socket.
func TestFillRingEmptyNote(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns, in, far := newTopologies(t)
	const ring, n = 512, 768
	ctx := &stopCtx{Context: context.Background(), ready: make(chan struct{}), fill: func() error {
		return sendAndWait(in, n)
	}}
	c := &config{a: in.Veth.Peer.Name, b: far.Veth.Peer.Name, batch: 64, ring: ring, cpu: -1, genCPU: -1, frameLen: 64}
	var out bytes.Buffer
	if err := forward(ctx, c, ns, nil, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !errors.Is(ctx.err, context.Canceled) {
		t.Fatalf("filling the rings: %v", ctx.err)
	}
	o := out.String()
	st := statsOf(t, o, c.a)
	if st["rx packets"] != ring || st["fill ring empty"] != n-ring {
		t.Fatalf("%s: rx packets %d, fill ring empty %d; want %d and %d:\n%s", c.a, st["rx packets"], st["fill ring empty"], ring, n-ring, o)
	}
	want := fmt.Sprintf("fill ring empty (%s): frames dropped by the kernel", c.a)
	if strings.Count(o, want) != 1 || strings.Count(o, "fill ring empty (") != 1 {
		t.Errorf("output has not one note %q:\n%s", want, o)
	}
	if strings.Contains(o, "-gen-pps") {
		t.Errorf("the note of a run on given interfaces points to the generator's -gen-pps:\n%s", o)
	}
	// The ring frames are forwarded in one go, more than the 256 that
	// the far end's veth ring holds: when its NAPI poll falls behind (on
	// a loaded machine, deferred to ksoftirqd), veth drops the rest and
	// counts them in the sending end's tx_dropped. Every frame forwarded
	// is received there or dropped so.
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := pktgen.ReadCounters(far.Veth.Host)
		if err != nil {
			t.Fatal(err)
		}
		p, err := pktgen.ReadCounters(far.Veth.Peer)
		if err != nil {
			t.Fatal(err)
		}
		if h.RxPackets+p.TxDropped == ring {
			if p.TxDropped > 0 {
				t.Logf("the far end received %d, veth dropped %d on the way", h.RxPackets, p.TxDropped)
			}
			break
		}
		if h.RxPackets+p.TxDropped > ring || time.Now().After(deadline) {
			t.Fatalf("the far end received %d and veth dropped %d on the way to it, want %d in all", h.RxPackets, p.TxDropped, ring)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMeter checks the per-second lines: each rate is the frames counted
// since the previous line over the time between the two readings (the
// tick before a reading was the interval, and a reading a quarter of a
// second late showed a rate a quarter too high), labelled with the time
// of the reading; and a stop that ends a full second not yet reported
// prints its line, one that does not prints none.
func TestMeter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var out bytes.Buffer
	m := &meter{out: &out, a: "a", b: "b", t0: t0, last: t0}
	m.line(t0.Add(1250*time.Millisecond), [2]uint64{2500, 10})
	m.line(t0.Add(2250*time.Millisecond), [2]uint64{2500 + 4000, 10})
	m.end(t0.Add(2900*time.Millisecond), [2]uint64{9000, 10}) // no full second since
	// 2500 and 10 over 1.25 s, then 4000 and 0 over 1 s.
	want := "   1.2s  a→b 2.0 kpps  b→a 8 pps\n   2.2s  a→b 4.0 kpps  b→a 0 pps\n"
	if out.String() != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
	m.end(t0.Add(3*time.Second), [2]uint64{9000, 10})
	want += "   3.0s  a→b 3.3 kpps  b→a 0 pps\n" // 2500 over 0.75 s
	if out.String() != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestDurationCountsFromForwarding runs the built-in topology with -d 2s
// and a context that does not end: the run must end by itself (-d was
// applied only by main, from the start of the process, so run went on
// until its context ended), with a line for each of the two full seconds
// (the second was lost when -d ended with its tick).
func TestDurationCountsFromForwarding(t *testing.T) {
	testenv.RequirePrivileged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &config{batch: 64, ring: 512, d: 2 * time.Second, cpu: -1, genCPU: -1, frameLen: 64}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("a run of -d 2s lasted until its context ended:\n%s", out.String())
	}
	var lines []string
	for _, l := range strings.Split(out.String(), "\n") {
		if regexp.MustCompile(`^\s*\d+\.\ds  \S+→`).MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Errorf("%d per-second lines in a run of -d 2s; want 2:\n%s", len(lines), out.String())
	}
	t.Log(out.String())
}

// TestPPSPacesTheGenerator runs the built-in topology with -gen-pps: the
// generator offers no more than that rate allows over the time the run
// took (plus one chunk of 64 frames, the least it sends at once). Unpaced,
// it offers 2^20 frames a call.
func TestPPSPacesTheGenerator(t *testing.T) {
	testenv.RequirePrivileged(t)
	const pps = 20000
	var out bytes.Buffer
	start := time.Now()
	if err := run(context.Background(), &config{batch: 64, ring: 512, d: 500 * time.Millisecond, cpu: -1, genCPU: -1, frameLen: 64, pps: pps}, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	took := time.Since(start)
	var offered, far uint64
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "generator offered ") {
			if _, err := fmt.Sscanf(line, "generator offered %d, the far end received %d", &offered, &far); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
		}
	}
	if limit := uint64(took.Seconds()*pps) + 64; offered == 0 || offered > limit {
		t.Fatalf("-gen-pps %d over %v: generator offered %d; want 1 to %d:\n%s", pps, took, offered, limit, out.String())
	}
	t.Logf("offered %d, far end %d in %v", offered, far, took)
}

// TestRefusedBeforeStart: interfaces that are down are refused naming the
// flag before anything is attached to them, and a run whose context ends
// while it sets up (Ctrl-C then) fails saying so. It used to start the
// generator all the same, forward its call of 2^20 frames, and report a
// run of nothing.
func TestRefusedBeforeStart(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns := testenv.NewNetns(t)
	v1 := testenv.NewVeth(t, &netenv.VethOptions{PeerNS: ns})
	v2 := testenv.NewVeth(t, &netenv.VethOptions{PeerNS: ns})
	testenv.SetLink(t, v2.Host, false)
	c := config{a: v1.Host.Name, b: v2.Host.Name, batch: 64, ring: 512, cpu: -1, genCPU: -1, frameLen: 64, d: time.Second}
	var out bytes.Buffer
	err := run(context.Background(), &c, &out)
	if want := fmt.Sprintf("-b %s: the interface is down", v2.Host.Name); err == nil || !strings.HasPrefix(err.Error(), want) || out.Len() > 0 {
		t.Errorf("-b down: %v; want an error starting %q and nothing printed\n%s", err, want, out.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out.Reset()
	c = config{batch: 64, ring: 512, cpu: -1, genCPU: -1, frameLen: 64}
	if err := run(ctx, &c, &out); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "stopped before forwarding started") {
		t.Errorf("run with an ended context: %v; want it stopped before forwarding started", err)
	}
	if s := out.String(); strings.Contains(s, "forwarded") || strings.Contains(s, "generator offered") {
		t.Errorf("a run that never started was reported:\n%s", s)
	}
	// The same with the context ending while the sockets open.
	c.a, c.b = v1.Peer.Name, v2.Peer.Name
	out.Reset()
	if err := forward(ctx, &c, ns, nil, &out); !errors.Is(err, context.Canceled) || strings.Contains(out.String(), "forwarded") {
		t.Errorf("forward with an ended context: %v; want context.Canceled and no report\n%s", err, out.String())
	}
}
