package app

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/umem"
	"github.com/afxdp/afxdp/xsk"
)

func TestFlags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs, L2Fwd)
	err := fs.Parse([]string{"-i", "eth0", "-q", "3", "-batch", "32", "-ring", "512", "-mode", "copy",
		"-wakeup=false", "-busy-poll", "20us", "-tx-budget", "64", "-wait", "hybrid", "-spin", "1ms", "-d", "5s",
		"-size", "1500", "-frame", "4096"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	o := c.XSKOptions()
	want := xsk.Options{NumFrames: 2048, FrameSize: 4096, RxRingSize: 512, TxRingSize: 512, FillRingSize: 512,
		CompletionRingSize: 512, Bind: xsk.BindCopy, NoNeedWakeup: true, BusyPoll: 20 * time.Microsecond, TxBudget: 64}
	if *o != want {
		t.Fatalf("options %+v, want %+v", *o, want)
	}
	if c.Interface != "eth0" || c.Queue != 3 || c.Wait != WaitHybrid || c.Spin != time.Millisecond || c.Duration != 5*time.Second {
		t.Fatalf("config %+v", c)
	}
}

func TestNapFlags(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs, RxDrop)
	if c.Nap != DefaultNap {
		t.Fatalf("default nap %v, want %v", c.Nap, DefaultNap)
	}
	if err := fs.Parse([]string{"-wait", "nap", "-nap", "250us"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Wait != WaitNap || c.Nap != 250*time.Microsecond || c.Wait.String() != "nap" {
		t.Fatalf("wait %v, nap %v", c.Wait, c.Nap)
	}
}

// TestFlagSets: each program offers exactly the flags that do something
// there, every one of them listed here with the reason; a flag registered
// and not listed fails the test, so that a new one is not offered where it
// does nothing. Common to all: the socket's and the loop's knobs. -quiet
// only where there is a per-second report (not echo); -tx-budget only
// where the socket transmits (not rxdrop); a generator's flags only where
// the built-in topology starts one (rxdrop, l2fwd); the frame's addresses
// and ports only where the program builds frames (txonly); -size for
// both (the generator's frames, txonly's), and not for echo, whose -port
// is the only port that matters. A flag left out is refused, not
// silently ignored. examples_test checks the commands' flags the same way.
func TestFlagSets(t *testing.T) {
	common := []string{"i", "q", "batch", "ring", "frame", "frames", "mode", "wakeup",
		"busy-poll", "busy-budget", "wait", "spin", "nap", "d", "cpu", "isolate"}
	gen := []string{"size", "gen-cpu", "gen-batch", "gen-pps"}
	hdr := []string{"size", "src-mac", "dst-mac", "src-ip", "dst-ip", "src-port", "dst-port"}
	echo := func(c *Config, fs *flag.FlagSet) { c.RegisterCommonFlags(fs); c.RegisterTxBudgetFlag(fs) }
	for _, tc := range []struct {
		name     string
		register func(*Config, *flag.FlagSet)
		flags    [][]string
	}{
		{"rxdrop", func(c *Config, fs *flag.FlagSet) { c.RegisterFlags(fs, RxDrop) }, [][]string{common, gen, {"quiet"}}},
		{"l2fwd", func(c *Config, fs *flag.FlagSet) { c.RegisterFlags(fs, L2Fwd) }, [][]string{common, gen, {"quiet", "tx-budget"}}},
		{"txonly", func(c *Config, fs *flag.FlagSet) { c.RegisterFlags(fs, TxOnly) }, [][]string{common, hdr, {"quiet", "tx-budget"}}},
		{"echo", echo, [][]string{common, {"tx-budget"}}},
	} {
		want := map[string]bool{}
		for _, l := range tc.flags {
			for _, f := range l {
				want[f] = true
			}
		}
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		tc.register(&c, fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !want[f.Name] {
				t.Errorf("%s: offers -%s, which does nothing there", tc.name, f.Name)
			}
			delete(want, f.Name)
		})
		for f := range want {
			t.Errorf("%s: -%s not registered", tc.name, f)
		}
	}
	var c Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs, TxOnly)
	if err := fs.Parse([]string{"-ring", "512", "-size", "128", "-dst-port", "7"}); err != nil ||
		c.RingSize != 512 || c.PacketSize != 128 || c.Batch != 64 || c.DstPort != 7 {
		t.Errorf("-ring 512 -size 128 -dst-port 7: %v; config %+v", err, c)
	}
}

// TestFramesHelp checks that -frames says how the UMEM's frames are
// split where it is offered, against a socket opened as the run opens
// it: half for transmit in a socket that receives, all of them in
// txonly's in copy mode (xsk.Options.TxFrames).
func TestFramesHelp(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{})
	for _, tc := range []struct {
		kind      Kind
		help      string
		allFrames bool // all for transmit, else half
	}{
		{RxDrop, "half of them for receive and half for transmit", false},
		{L2Fwd, "half of them for receive and half for transmit", false},
		{TxOnly, "all of them for transmit in copy mode", true},
	} {
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.RegisterFlags(fs, tc.kind)
		if u := fs.Lookup("frames").Usage; !strings.Contains(u, tc.help) {
			t.Errorf("%s: -frames %q, want it to say %q", tc.kind, u, tc.help)
		}
		c.Bind, c.RingSize = xsk.BindCopy, 64
		var o umem.Options
		err := v.Peer.Do(func() error {
			s, err := xsk.Open(v.Peer.Name, 0, socketOptions(&c, tc.kind))
			if err != nil {
				return err
			}
			o = s.UMEM().Options()
			return s.Close()
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.kind, err)
		}
		if want := map[bool]int{true: o.NumFrames, false: o.NumFrames / 2}[tc.allFrames]; o.TxFrames != want {
			t.Errorf("%s in copy mode: %d of %d frames for transmit; -frames says %q", tc.kind, o.TxFrames, o.NumFrames, tc.help)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{{"-mode", "fast"}, {"-wait", "sleep"}} {
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		c.RegisterFlags(fs, RxDrop)
		if err := fs.Parse(args); err == nil {
			t.Errorf("%v: parsed", args)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.Batch = 0 }, "-batch 0"},
		{func(c *Config) { c.RingSize = 32; c.Batch = 64 }, "-ring 32"},
		{func(c *Config) { c.RingSize = 1000 }, "-ring 1000: must be a power of two"},
		{func(c *Config) { c.RingSize = 0 }, "-ring 0"},
		{func(c *Config) { c.PacketSize = 20 }, "-size 20"},
		{func(c *Config) { c.PacketSize = 3000 }, "-size 3000"},
		{func(c *Config) { c.Spin = -1 }, "-spin"},
		{func(c *Config) { c.Wait, c.Nap = WaitNap, 0 }, "-nap 0s"},
		{func(c *Config) { c.Wait, c.Nap = WaitNap, 2*time.Second }, "-nap 2s"},
		{func(c *Config) { c.Wait = WaitMode(7) }, "-wait 7"},
		{func(c *Config) { c.DstPort = 70000 }, "-dst-port 70000: must be at most 65535"},
		{func(c *Config) { c.SrcPort = 65536 }, "-src-port 65536: must be at most 65535"},
		// The built-in veth pair has one queue: refused before it is
		// built, not by Open once it is.
		{func(c *Config) { c.Queue = 1 }, "-q 1: the built-in veth pair has one queue"},
		{func(c *Config) { c.CPU = -5 }, "-cpu -5"},
		{func(c *Config) { c.CPU, c.Isolate = -5, true }, "-cpu -5"},
		{func(c *Config) { c.Isolate = true }, "-isolate: needs -cpu"},
		{func(c *Config) { c.GenCPU = -2 }, "-gen-cpu -2"},
		{func(c *Config) { c.GenBatch = 0 }, "-gen-batch 0: must be between 1 and 256"},
		{func(c *Config) { c.GenBatch = 257 }, "-gen-batch 257"},
		{func(c *Config) { c.FrameSize = 0 }, "-frame 0: must be 2048 or 4096"},
		{func(c *Config) { c.FrameSize = 1000 }, "-frame 1000"},
		{func(c *Config) { c.NumFrames = -1 }, "-frames -1"},
		// Beyond what the UMEM or a ring may have, or too few receive
		// frames for the fill ring: refused naming the flag, before a
		// topology is built, not by xsk.Open naming a field.
		{func(c *Config) { c.NumFrames = 1<<24 + 1 }, "-frames 16777217: must be at most 16777216"},
		{func(c *Config) { c.RingSize = 1 << 31 }, "-ring 2147483648: must be at most"},
		{func(c *Config) { c.RingSize = 1 << 62 }, "-ring 4611686018427387904: must be at most"},
		{func(c *Config) { c.RingSize = 1 << 23 }, "-ring 8388608: the default -frames"},
		{func(c *Config) { c.NumFrames = 100 }, "-frames 100: must be at least 4095"},
		{func(c *Config) { c.NumFrames, c.RingSize = 1<<24, 1<<24 }, "-ring 16777216: must be at most 8388608"},
		{func(c *Config) { c.NumFrames, c.RingSize = 1<<24-2, 1<<23 }, "-frames 16777214: must be at least 16777215"},
		{func(c *Config) { c.BusyPoll = 500 * time.Nanosecond }, "-busy-poll 500ns: must be 0 (off) or at least 1µs"},
		{func(c *Config) { c.Queue = -1 }, "-q -1"},
		{func(c *Config) { c.BusyPoll = -time.Second }, "-busy-poll -1s"},
		{func(c *Config) { c.BusyPoll = time.Hour }, "-busy-poll 1h0m0s"},
		{func(c *Config) { c.BusyPoll, c.BusyBudget = time.Microsecond, -1 }, "-busy-budget -1"},
		{func(c *Config) { c.BusyPoll, c.BusyBudget = time.Microsecond, 65536 }, "-busy-budget 65536"},
		{func(c *Config) { c.BusyBudget = 8 }, "-busy-budget 8: needs -busy-poll"},
		{func(c *Config) { c.TxBudget = 5 }, "-tx-budget 5"},
		{func(c *Config) { c.TxBudget = 4096 }, "-tx-budget 4096"},
		{func(c *Config) { c.SrcMAC = "01:02:03:04:05:06:07:08" }, "-src-mac 01:02:03:04:05:06:07:08: must be a 6-byte"},
		{func(c *Config) { c.DstMAC = "zz" }, "-dst-mac"},
		{func(c *Config) { c.SrcIP = "::1" }, "-src-ip ::1: must be an IPv4 address"},
		{func(c *Config) { c.DstIP = "fe80::1" }, "-dst-ip fe80::1"},
		// -d, as the user types it, not the field's name.
		{func(c *Config) { c.Duration = -time.Second }, "-d -1s: must not be negative"},
	} {
		var c Config
		c.Defaults()
		tc.set(&c)
		// The error starts with the flag, as typed, with its dash.
		if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error starting %q", err, tc.want)
		}
	}
}

// TestCheckGiven: a flag given on the command line that does nothing with
// the others is refused, naming it, its value and why; the same flag left
// at its default, or given where it does something, is not. With -i the
// built-in topology's generator, and its -size, are not there; -spin is
// -wait hybrid's, -nap -wait nap's. txonly's -size is its own frames'.
func TestCheckGiven(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		args []string
		want string // "": accepted
	}{
		{RxDrop, []string{"-i", "eth0"}, ""},
		{RxDrop, []string{"-gen-pps", "1000", "-gen-cpu", "1", "-gen-batch", "32", "-size", "128"}, ""},
		{RxDrop, []string{"-i", "eth0", "-gen-pps", "1000"}, "-gen-pps 1000: applies only to the built-in topology's generator (without -i)"},
		{RxDrop, []string{"-i", "eth0", "-gen-cpu", "1"}, "-gen-cpu 1: applies only to the built-in topology's generator"},
		{L2Fwd, []string{"-i", "eth0", "-gen-batch", "32"}, "-gen-batch 32: applies only to the built-in topology's generator"},
		{L2Fwd, []string{"-i", "eth0", "-size", "128"}, "-size 128: applies only to the built-in topology's generator"},
		// Given at its default value, it is given all the same.
		{RxDrop, []string{"-i", "eth0", "-gen-cpu", "0"}, "-gen-cpu 0: applies only"},
		{TxOnly, []string{"-i", "eth0", "-size", "128"}, ""},
		{RxDrop, []string{"-spin", "1ms"}, "-spin 1ms: applies only to -wait hybrid (the wait is spin)"},
		{L2Fwd, []string{"-wait", "poll", "-spin", "1ms"}, "-spin 1ms: applies only to -wait hybrid (the wait is poll)"},
		{TxOnly, []string{"-wait", "hybrid", "-spin", "1ms"}, ""},
		{RxDrop, []string{"-wait", "hybrid", "-nap", "50us"}, "-nap 50µs: applies only to -wait nap (the wait is hybrid)"},
		{RxDrop, []string{"-wait", "nap", "-nap", "50us"}, ""},
	} {
		var c Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.RegisterFlags(fs, tc.kind)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := CheckGiven(fs, func(f string) string { return c.IdleFlag(f, tc.kind) })
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %v: %v; want it accepted", tc.kind, tc.args, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("%s %v: %v; want an error starting %q", tc.kind, tc.args, err, tc.want)
		}
	}
}

// TestValidateFrames checks the UMEM's frame count against the rings: a
// run that receives needs half the frames (the receive ones) to fill the
// fill ring, and -frames just that many is accepted; txonly, which binds
// with every frame for transmit, needs none for receiving.
func TestValidateFrames(t *testing.T) {
	var c Config
	c.Defaults()
	c.RingSize, c.Batch = 256, 64
	c.NumFrames = 2*256 - 1 // 256 receive frames, 255 transmit ones
	if err := c.Validate(); err != nil {
		t.Errorf("-ring 256 -frames 511: %v", err)
	}
	c.NumFrames = 100
	if err := c.Validate(); err == nil {
		t.Errorf("-ring 256 -frames 100: accepted for a run that receives")
	}
	if err := validate(&c, TxOnly); err != nil {
		t.Errorf("txonly -ring 256 -frames 100: %v", err)
	}
	c.NumFrames, c.RingSize = 0, 1<<22 // the default 4×ring is the UMEM's limit
	if err := c.Validate(); err != nil {
		t.Errorf("-ring %d: %v", c.RingSize, err)
	}
}

func TestUDPHeader(t *testing.T) {
	var c Config
	c.Defaults()
	c.DstMAC, c.DstIP = "02:00:00:00:00:09", "192.0.2.9"
	h, err := c.UDPHeader([]byte{2, 0, 0, 0, 0, 1}, nil, netip.Addr{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	if _, err := h.Write(b, 64-packet.HeadersLen); err != nil {
		t.Fatal(err)
	}
	p, err := packet.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.DstMAC.String() != "02:00:00:00:00:09" || p.DstIP.String() != "192.0.2.9" || p.SrcIP.String() != "10.0.0.1" ||
		p.DstPort != 9000 || p.SrcPort != 40000 {
		t.Fatalf("header %+v", p)
	}
	c.SrcIP = "nonsense"
	if _, err := c.UDPHeader(nil, nil, netip.Addr{}, netip.Addr{}); err == nil || !strings.HasPrefix(err.Error(), "-src-ip: ") {
		t.Fatalf("-src-ip nonsense: %v; want an error starting %q", err, "-src-ip: ")
	}
}

func TestSwapMACs(t *testing.T) {
	f := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0}
	SwapMACs(f)
	if !bytes.Equal(f, []byte{7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6, 0x08, 0}) {
		t.Fatalf("swapped: %v", f)
	}
	SwapMACs(f[:5]) // too short: left alone
	if a := testing.AllocsPerRun(100, func() { SwapMACs(f) }); a != 0 {
		t.Fatalf("SwapMACs allocates %v times", a)
	}
}

func TestFormat(t *testing.T) {
	for pps, want := range map[float64]string{7.123e6: "7.12 Mpps", 12345: "12.3 kpps", 12: "12 pps"} {
		if got := FormatRate(pps); got != want {
			t.Errorf("FormatRate(%v) = %q, want %q", pps, got, want)
		}
	}
	if got := formatBits(64*1000, 1000, 1); got != "" {
		t.Errorf("bits shown for 64-byte frames: %q", got)
	}
	// Each rate in a unit that shows it: slow or small frames were
	// "0.00 Gb/s"; frames of 64.5 bytes on average are above 64.
	for _, tc := range []struct {
		bytes, pkts uint64
		secs        float64
		want        string
	}{
		{1500 * 1000, 1000, 1, " 12.00 Mb/s"},
		{128 * 1000, 1000, 1, " 1.02 Mb/s"},
		{128 * 10, 10, 1, " 10.24 kb/s"},
		{100, 1, 1, " 0.80 kb/s"},
		{100, 1, 20, " 40 b/s"},
		{1500 * 1e6, 1e6, 1, " 12.00 Gb/s"},
		{128 * 200000, 200000, 1, " 0.20 Gb/s"},
		{129, 2, 1, " 1.03 kb/s"},
		{1500, 1, 0, ""},
	} {
		if got := formatBits(tc.bytes, tc.pkts, tc.secs); got != tc.want {
			t.Errorf("formatBits(%d, %d, %v) = %q, want %q", tc.bytes, tc.pkts, tc.secs, got, tc.want)
		}
	}
}

// TestPrintResultRates checks the closing line's rates: the bits per
// second are those of the kind's own packets (l2fwd's forwarded ones, not
// the larger count it received), so 64-byte frames show none, and a run
// that handled no packet, or fewer than MinCPUPackets, shows no CPU per
// packet (over so few, the CPU is the waiting loop's), but its CPU time.
func TestPrintResultRates(t *testing.T) {
	var b strings.Builder
	PrintResult(&b, &Result{Kind: L2Fwd, Elapsed: time.Second, RxPackets: 3000, RxBytes: 3000 * 64,
		TxPackets: 1000, TxBytes: 1000 * 64, CPU: time.Second})
	line := strings.Split(strings.TrimSpace(b.String()), "\n")[0]
	if !strings.HasPrefix(line, "l2fwd: 1000 packets in 1.00s: 1.0 kpps, 1000.000 CPU-s per million packets") {
		t.Errorf("l2fwd of 64-byte frames, 3000 received and 1000 forwarded: %q", line)
	}
	b.Reset()
	PrintResult(&b, &Result{Kind: RxDrop, Elapsed: time.Millisecond, CPU: time.Millisecond})
	if strings.Contains(b.String(), "CPU-s per million") {
		t.Errorf("CPU per packet shown for a run without packets:\n%s", b.String())
	}
	// One packet in a 2 s run of a spinning loop: its CPU is the loop's,
	// and "2009970.679 CPU-s per million packets" was printed.
	b.Reset()
	PrintResult(&b, &Result{Kind: RxDrop, Elapsed: 2 * time.Second, RxPackets: 1, RxBytes: 70, CPU: 2009970679 * time.Nanosecond})
	if line := strings.Split(strings.TrimSpace(b.String()), "\n")[0]; strings.Contains(line, "per million") ||
		!strings.HasSuffix(line, ", 2.010 CPU-s (fewer than 1000 packets: too few for a cost per packet)") {
		t.Errorf("one packet in 2 s: %q; want the CPU time, and no cost per packet", line)
	}
	b.Reset()
	PrintResult(&b, &Result{Kind: RxDrop, Elapsed: time.Second, RxPackets: MinCPUPackets, CPU: time.Millisecond})
	if !strings.Contains(b.String(), ", 1.000 CPU-s per million packets") {
		t.Errorf("%d packets: no cost per packet:\n%s", MinCPUPackets, b.String())
	}
	b.Reset()
	PrintResult(&b, &Result{Kind: TxOnly, Elapsed: time.Second, TxPackets: 1000, TxBytes: 1000 * 1500})
	if !strings.Contains(b.String(), "1.0 kpps 12.00 Mb/s") {
		t.Errorf("txonly of 1500-byte frames without bits per second:\n%s", b.String())
	}
}

// TestBusyPollWarning checks that a run's report says when busy polling
// was asked for but the packets came from a NAPI instance without an ID.
func TestBusyPollWarning(t *testing.T) {
	const warning = "busy polling had no effect"
	for _, tc := range []struct {
		busy   time.Duration
		id     uint32
		rx     uint64
		warned bool
	}{
		{busy: 20 * time.Microsecond, id: 0, rx: 10, warned: true},
		{busy: 20 * time.Microsecond, id: 8193, rx: 10},
		{busy: 20 * time.Microsecond, id: 0, rx: 0}, // no packet: nothing known yet
		{busy: 0, id: 0, rx: 10},
	} {
		var b strings.Builder
		PrintResult(&b, &Result{Kind: RxDrop, Elapsed: time.Second, RxPackets: tc.rx,
			BusyPoll: tc.busy, NAPIID: tc.id, Stats: xsk.Stats{RxPackets: tc.rx}})
		if got := strings.Contains(b.String(), warning); got != tc.warned {
			t.Errorf("busy %v, NAPI ID %d, %d packets: warned %v, want %v:\n%s", tc.busy, tc.id, tc.rx, got, tc.warned, b.String())
		}
	}
}

func TestProcCPU(t *testing.T) {
	end := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(end) {
	}
	d, err := ProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d < 0 || ProcessCPU() <= 0 {
		t.Fatalf("cpu times %v, %v", d, ProcessCPU())
	}
}

// TestValidateCPUs checks that -cpu and -gen-cpu name CPUs this process
// may run on, by its affinity rather than by the machine's CPU count, and
// that the generator's knobs are checked only where there is a generator
// (no -i).
func TestValidateCPUs(t *testing.T) {
	allowed, err := sys.AllowedCPUSet()
	if err != nil {
		t.Fatal(err)
	}
	outside := 0 // the first CPU number the process may not use
	for allowed.IsSet(outside) {
		outside++
	}
	first := 0
	for !allowed.IsSet(first) {
		first++
	}
	for _, tc := range []struct {
		set  func(*Config)
		want string // "": valid
	}{
		{func(c *Config) { c.CPU, c.GenCPU = first, -1 }, ""},
		{func(c *Config) { c.CPU, c.GenCPU, c.Isolate = first, -1, true }, ""},
		// The loop and the generator on one CPU share it (and
		// -isolate would move the generator off it).
		{func(c *Config) { c.CPU = first }, fmt.Sprintf("-cpu %d: -gen-cpu is %d too", first, first)},
		{func(c *Config) { c.CPU, c.Isolate = first, true }, fmt.Sprintf("-cpu %d: -gen-cpu is %d too", first, first)},
		{func(c *Config) { c.Interface, c.CPU = "eth0", first }, ""},
		{func(c *Config) { c.CPU, c.GenCPU = -1, -1 }, ""},
		{func(c *Config) { c.CPU = outside }, fmt.Sprintf("-cpu %d: not one of the CPUs this process may run on", outside)},
		{func(c *Config) { c.CPU = 1 << 20 }, fmt.Sprintf("-cpu %d: not one of", 1<<20)},
		{func(c *Config) { c.GenCPU = outside }, fmt.Sprintf("-gen-cpu %d: not one of", outside)},
		// With -i there is no generator: its knobs do not matter.
		{func(c *Config) { c.Interface, c.GenCPU, c.GenBatch = "eth0", outside, 0 }, ""},
		{func(c *Config) { c.Interface, c.CPU = "eth0", outside }, fmt.Sprintf("-cpu %d", outside)},
	} {
		var c Config
		c.Defaults()
		c.GenCPU = first
		tc.set(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("cpu %d, gen-cpu %d, -i %q: %v; want valid", c.CPU, c.GenCPU, c.Interface, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("cpu %d, gen-cpu %d, -i %q: %v; want an error starting %q", c.CPU, c.GenCPU, c.Interface, err, tc.want)
		}
	}
}

// TestTxOnlyRegistersNowhere checks that a transmit-only run opens its
// socket with xsk.Options.TxOnly, so that the queue's traffic is not
// redirected to a socket that never receives, and that the receiving kinds
// do not.
func TestTxOnlyRegistersNowhere(t *testing.T) {
	var c Config
	c.Defaults()
	for kind, want := range map[Kind]bool{TxOnly: true, RxDrop: false, L2Fwd: false} {
		o := socketOptions(&c, kind)
		if o.TxOnly != want {
			t.Errorf("%s: TxOnly %v, want %v", kind, o.TxOnly, want)
		}
		o.TxOnly = false
		if *o != *c.XSKOptions() {
			t.Errorf("%s: options %+v differ from the config's %+v in more than TxOnly", kind, *o, *c.XSKOptions())
		}
	}
}

// TestRunRefusesSizeAboveMTU checks that -size is checked against the MTU
// of the built-in veth pair before it is built: longer frames would be
// dropped on the way, and txonly would report a rate while nothing
// arrived.
func TestRunRefusesSizeAboveMTU(t *testing.T) {
	for _, kind := range []Kind{TxOnly, RxDrop, L2Fwd} {
		var c Config
		c.Defaults()
		c.PacketSize = TopologyMTU + packet.EthLen + 1
		var out bytes.Buffer
		_, err := Run(context.Background(), kind, &c, &out)
		want := fmt.Sprintf("-size %d: longer than the MTU %d of the built-in veth pair", c.PacketSize, TopologyMTU)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v; want an error starting %q", kind, err, want)
		}
		if out.Len() > 0 {
			t.Errorf("%s: built something before refusing -size:\n%s", kind, out.String())
		}
	}
	c := Config{}
	c.Defaults()
	c.PacketSize = TopologyMTU + packet.EthLen
	if err := checkSize(c.PacketSize, "veth", TopologyMTU); err != nil {
		t.Errorf("a frame of MTU plus the Ethernet header refused: %v", err)
	}
}

// TestNewTopologyRefusesFrameLenOutOfRange checks that a generator's frame
// length is refused before anything is built, not silently raised to the
// minimum: rxdrop refuses -size 10 too.
func TestNewTopologyRefusesFrameLenOutOfRange(t *testing.T) {
	for _, n := range []int{0, 10, packet.MinFrame - 1, TopologyMTU + packet.EthLen + 1} {
		topo, err := NewTopology(&TopologyOptions{Generator: true, FrameLen: n})
		if err == nil {
			topo.Close()
			t.Errorf("NewTopology with FrameLen %d: no error", n)
			continue
		}
		want := fmt.Sprintf("FrameLen %d: must be between %d and %d", n, packet.MinFrame, TopologyMTU+packet.EthLen)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NewTopology with FrameLen %d: %v, want an error containing %q", n, err, want)
		}
	}
}

// TestRunOnInterfaceRefusesSizeAboveMTU runs txonly with -i on an
// interface of MTU 1000 and a -size of 1100, which that interface would
// drop: it must fail naming -size and the MTU, before attaching anything.
func TestRunOnInterfaceRefusesSizeAboveMTU(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{MTU: 1000})
	var c Config
	c.Defaults()
	c.Interface, c.PacketSize = v.Host.Name, 1100
	_, err := Run(context.Background(), TxOnly, &c, nil)
	want := fmt.Sprintf("-size 1100: longer than the MTU 1000 of %s", v.Host.Name)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("%v; want an error starting %q", err, want)
	}
	// -d, which counts from the start of the loop: a deadline on the
	// context would count the setting up too, and fail the run
	// ("stopped before the run started") on a loaded machine.
	c.PacketSize, c.Duration = 1014, 200*time.Millisecond
	if _, err := Run(context.Background(), TxOnly, &c, nil); err != nil {
		t.Fatalf("size 1014 on MTU 1000: %v", err)
	}
}

// TestPrintResultNothingArrived checks that a transmit run whose frames
// never reached the peer says so, rather than leaving the peer's count
// out and reporting only the transmit rate.
func TestPrintResultNothingArrived(t *testing.T) {
	var b strings.Builder
	PrintResult(&b, &Result{Kind: TxOnly, Elapsed: time.Second, TxPackets: 1000, PeerCounted: true})
	for _, want := range []string{"peer received 0 pps", "nothing arrived at the peer end"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	PrintResult(&b, &Result{Kind: TxOnly, Elapsed: time.Second, TxPackets: 1000, PeerReceived: 1000, PeerCounted: true})
	if strings.Contains(b.String(), "nothing arrived") {
		t.Errorf("warned although everything arrived:\n%s", b.String())
	}
	// The window closed before the frames got there; the whole run's
	// account, read once they had, is the one to judge by.
	b.Reset()
	PrintResult(&b, &Result{Kind: TxOnly, Elapsed: time.Millisecond, TxPackets: 64, PeerCounted: true,
		TxAccount: &TxAccount{Sent: 128, Completed: 128, HostIn: 128}})
	if strings.Contains(b.String(), "nothing arrived") || !strings.Contains(b.String(), "every frame arrived") {
		t.Errorf("frames that arrived after the window called lost:\n%s", b.String())
	}
	b.Reset()
	PrintResult(&b, &Result{Kind: TxOnly, Elapsed: time.Second, TxPackets: 64, PeerCounted: true,
		TxAccount: &TxAccount{Sent: 128, Completed: 128}})
	if !strings.Contains(b.String(), "nothing arrived at the host end") {
		t.Errorf("no warning when nothing arrived over the whole run:\n%s", b.String())
	}
}

// TestPrintResultDeviceDrops checks the transmit account of a run in which
// the device dropped frames that the kernel completed: they are reported
// as dropped, not lost, and only what neither the device dropped nor the
// host end took in is lost.
func TestPrintResultDeviceDrops(t *testing.T) {
	for _, tc := range []struct {
		a          TxAccount
		want, lack []string
	}{
		{TxAccount{Sent: 128, Completed: 128, Dropped: 28, HostIn: 100},
			[]string{"of which the device dropped 28 (not sent), and the host end took in 100: every frame accounted for", "tx dropped        28"},
			[]string{"lost", "every frame arrived"}},
		{TxAccount{Sent: 128, Completed: 128, Dropped: 28, HostIn: 90},
			[]string{"the device dropped 28 (not sent)", "; 10 lost on the way"}, []string{"accounted for"}},
		{TxAccount{Sent: 128, Completed: 128, Dropped: 128},
			[]string{"the device dropped 128 (not sent), and the host end took in 0: every frame accounted for"}, []string{"lost", "nothing arrived"}},
		{TxAccount{Sent: 128, Completed: 128, Dropped: 28},
			[]string{"nothing arrived at the host end"}, nil},
	} {
		var b strings.Builder
		PrintResult(&b, &Result{Kind: TxOnly, Elapsed: time.Second, TxPackets: 128, PeerCounted: true,
			TxAccount: &tc.a, Stats: xsk.Stats{TxPackets: tc.a.Sent, Completed: tc.a.Completed, TxDropped: tc.a.Dropped}})
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("account %+v: report lacks %q:\n%s", tc.a, w, b.String())
			}
		}
		for _, w := range tc.lack {
			if strings.Contains(b.String(), w) {
				t.Errorf("account %+v: report says %q:\n%s", tc.a, w, b.String())
			}
		}
	}
	// Without a host end to count (an interface of the user's), the
	// drops are still reported.
	var b strings.Builder
	PrintResult(&b, &Result{Kind: TxOnly, Elapsed: time.Second, TxPackets: 128, Stats: xsk.Stats{TxPackets: 128, TxDropped: 7}})
	if want := "the device dropped 7 of the frames queued for transmit (not sent)"; !strings.Contains(b.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, b.String())
	}
}

// TestRunWithoutGeneratorIgnoresItsFlags runs txonly on the built-in
// topology, which starts no generator, with -gen-cpu naming a CPU this
// process may not use and -gen-batch 0: those flags do nothing there, so
// they must not stop the run (under `taskset -c 1` the default -gen-cpu 0
// is such a CPU). The receiving kinds, which start a generator, still
// refuse them.
func TestRunWithoutGeneratorIgnoresItsFlags(t *testing.T) {
	testenv.RequirePrivileged(t)
	outside := testenv.CPUOutsideAffinity(t)
	var c Config
	c.Defaults()
	c.GenCPU, c.GenBatch = outside, 0
	if err := c.ValidateWithoutGenerator(); err != nil {
		t.Errorf("ValidateWithoutGenerator with -gen-cpu %d -gen-batch 0: %v", outside, err)
	}
	// -d counts from the start of the loop, not the building of the
	// topology, which a loaded machine makes slow.
	c.Duration = 200 * time.Millisecond
	if _, err := Run(context.Background(), TxOnly, &c, nil); err != nil {
		t.Errorf("txonly with -gen-cpu %d -gen-batch 0: %v; it starts no generator", outside, err)
	}
	c.GenBatch = 64
	for _, kind := range []Kind{RxDrop, L2Fwd} {
		var out bytes.Buffer
		_, err := Run(context.Background(), kind, &c, &out)
		if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("-gen-cpu %d", outside)) {
			t.Errorf("%s with -gen-cpu %d: %v; want it refused", kind, outside, err)
		}
		if out.Len() > 0 {
			t.Errorf("%s: built something before refusing -gen-cpu:\n%s", kind, out.String())
		}
	}
}

// TestRunRefusesMissingOrDownInterface runs each kind with -i naming an
// interface that is not there, and one that is down: both must be refused
// naming -i and the interface, before anything is attached or printed. A
// receiver on a down interface used to run to its end receiving nothing,
// and txonly failed only at its first transmit.
func TestRunRefusesMissingOrDownInterface(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	testenv.SetLink(t, v.Host, false)
	for _, kind := range []Kind{RxDrop, TxOnly, L2Fwd} {
		for name, want := range map[string]string{
			"afxnosuch0": "-i afxnosuch0: no such network interface",
			v.Host.Name:  fmt.Sprintf("-i %s: the interface is down", v.Host.Name),
		} {
			var c Config
			c.Defaults()
			c.Interface, c.Wait = name, WaitPoll
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			var out bytes.Buffer
			_, err := Run(ctx, kind, &c, &out)
			cancel()
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%s -i %s: %v; want an error starting %q", kind, name, err, want)
			}
			if out.Len() > 0 {
				t.Errorf("%s -i %s: printed before refusing:\n%s", kind, name, out.String())
			}
		}
	}
	info, err := bpf.QueryXDP(v.Host.Index)
	if err != nil {
		t.Fatal(err)
	}
	if info.Attached() {
		t.Errorf("an XDP program was left on %s: %+v", v.Host.Name, info)
	}
}
