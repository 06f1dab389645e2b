package app

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/ring"
	"github.com/afxdp/afxdp/umem"
	"github.com/afxdp/afxdp/xsk"
)

// WaitMode says what a run loop does when it finds nothing to do (no packet
// received, no transmit frame free).
type WaitMode int

const (
	// WaitSpin tries again at once: lowest latency and highest rate, and a
	// core burnt at 100% even when idle.
	WaitSpin WaitMode = iota
	// WaitPoll sleeps in poll(2) until the socket is ready: no CPU when
	// idle, a kernel wake-up per sleep when busy.
	WaitPoll
	// WaitHybrid spins for a bounded time (Config.Spin) and then sleeps in
	// poll(2).
	WaitHybrid
	// WaitNap sleeps for a fixed time (Config.Nap) without asking the
	// kernel to wake it: packets pile up in the rings meanwhile and are
	// then handled in long runs. Little CPU and no kernel wake-ups, for up
	// to Nap of added latency; the rings must hold Nap's worth of packets.
	WaitNap
)

func (m WaitMode) String() string {
	switch m {
	case WaitSpin:
		return "spin"
	case WaitPoll:
		return "poll"
	case WaitHybrid:
		return "hybrid"
	case WaitNap:
		return "nap"
	}
	return fmt.Sprintf("WaitMode(%d)", int(m))
}

// ParseWaitMode parses "spin", "poll", "hybrid" or "nap".
func ParseWaitMode(s string) (WaitMode, error) {
	for _, m := range []WaitMode{WaitSpin, WaitPoll, WaitHybrid, WaitNap} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("wait mode %q: must be spin, poll, hybrid or nap", s)
}

// Set and the String method make *WaitMode a flag.Value.
func (m *WaitMode) Set(s string) error {
	v, err := ParseWaitMode(s)
	if err == nil {
		*m = v
	}
	return err
}

// DefaultSpin is how long WaitHybrid spins before it sleeps.
const DefaultSpin = 50 * time.Microsecond

// DefaultNap is how long WaitNap sleeps.
const DefaultNap = 100 * time.Microsecond

// Config holds the knobs of the examples. The zero value is not ready:
// call Defaults (RegisterFlags does) or set every field.
type Config struct {
	// Interface to bind; "" makes the example build its own veth pair in
	// throwaway namespaces and drive it.
	Interface string
	Queue     int
	// Batch is the most descriptors handled per ring operation.
	Batch int
	// RingSize is the size of every ring (RX, TX, fill, completion).
	RingSize int
	// FrameSize is the UMEM frame size (2048 or 4096); NumFrames the
	// number of frames (0: 4×RingSize), half of them for transmit, or
	// all of them for a transmit-only run in copy mode
	// (xsk.Options.TxFrames).
	FrameSize, NumFrames int
	// PacketSize is the length of transmitted frames in bytes, without
	// the 4-byte FCS.
	PacketSize int
	// Bind is auto, copy or zero-copy.
	Bind xsk.BindMode
	// NeedWakeup turns on XDP_USE_NEED_WAKEUP.
	NeedWakeup bool
	// BusyPoll turns on preferred busy polling with this SO_BUSY_POLL
	// time; BusyBudget is SO_BUSY_POLL_BUDGET.
	BusyPoll   time.Duration
	BusyBudget int
	// TxBudget is XDP_MAX_TX_SKB_BUDGET (0: the kernel's 32).
	TxBudget int
	// Wait says what to do when idle; Spin bounds the spinning of
	// WaitHybrid.
	Wait WaitMode
	Spin time.Duration
	// Nap is how long WaitNap sleeps.
	Nap time.Duration
	// Duration ends the run this long after its loop started (0: until
	// interrupted); setting up does not count.
	Duration time.Duration
	// CPU pins the run loop's thread to a CPU (-1: no pinning).
	CPU int
	// Isolate keeps the process's other threads off CPU (see
	// [KeepOffCPU]). It helps only where another CPU has time to spare:
	// the Go runtime preempts a goroutine that has run for 10 ms, and
	// one locked to its thread is resumed by another thread, which
	// Isolate has put on the other CPUs. With those busy (the generator's
	// CPU, on two cores) the loop waited up to 24 ms.
	Isolate bool
	// Quiet turns off the per-second report.
	Quiet bool

	// Transmitted frames' addresses (txonly); unset ones are taken from
	// the interface (source MAC) or defaults.
	SrcMAC, DstMAC string
	SrcIP, DstIP   string
	SrcPort        uint
	DstPort        uint

	// Self-built topology (no Interface): generator settings.
	GenCPU   int
	GenBatch int
	GenPPS   uint64
}

// Defaults sets every field to its default.
func (c *Config) Defaults() {
	*c = Config{
		Batch: 64, RingSize: xsk.DefaultRingSize, FrameSize: 2048, PacketSize: 64,
		NeedWakeup: true, Wait: WaitSpin, Spin: DefaultSpin, Nap: DefaultNap, CPU: -1,
		SrcPort: 40000, DstPort: 9000, GenCPU: 0, GenBatch: 64,
	}
}

type bindFlag struct{ m *xsk.BindMode }

func (b bindFlag) String() string {
	if b.m == nil {
		return ""
	}
	return b.m.String()
}

func (b bindFlag) Set(s string) error {
	switch s {
	case "auto":
		*b.m = xsk.BindAuto
	case "copy":
		*b.m = xsk.BindCopy
	case "zc", "zero-copy", "zerocopy":
		*b.m = xsk.BindZeroCopy
	default:
		return fmt.Errorf("bind mode %q: must be auto, copy or zc", s)
	}
	return nil
}

// RegisterFlags sets the defaults and registers on fs the flags of
// kind's example (rxdrop, txonly or l2fwd), and only those that do
// something there: the common ones (see [Config.RegisterCommonFlags]);
// -quiet, for the per-second report; -tx-budget where the socket
// transmits (txonly, l2fwd); -size and the frame's addresses and ports
// where the program builds the frames it sends (txonly); and, for the
// receiving kinds, -size and the knobs of the generator that their
// built-in topology starts (txonly's starts none). A flag left out is
// refused by Parse, not silently ignored; one offered that does nothing
// with the others given (the generator's with -i) is refused by
// [CheckGiven] with [Config.IdleFlag].
func (c *Config) RegisterFlags(fs *flag.FlagSet, kind Kind) {
	framesHelp := framesHelpRx
	if kind == TxOnly {
		framesHelp = framesHelpTxOnly
	}
	c.registerCommon(fs, framesHelp)
	fs.BoolVar(&c.Quiet, "quiet", false, "no per-second report")
	if kind != RxDrop {
		c.RegisterTxBudgetFlag(fs)
	}
	if kind == TxOnly {
		fs.IntVar(&c.PacketSize, "size", c.PacketSize, "transmitted frame length in bytes, without FCS")
		fs.StringVar(&c.SrcMAC, "src-mac", "", "source MAC of transmitted frames (default: the interface's)")
		fs.StringVar(&c.DstMAC, "dst-mac", "", "destination MAC of transmitted frames (default: broadcast, or the peer's)")
		fs.StringVar(&c.SrcIP, "src-ip", "", "source IPv4 of transmitted frames (default 10.0.0.1, or the topology's)")
		fs.StringVar(&c.DstIP, "dst-ip", "", "destination IPv4 of transmitted frames (default 10.0.0.2, or the topology's)")
		fs.UintVar(&c.SrcPort, "src-port", c.SrcPort, "UDP source port of transmitted frames")
		fs.UintVar(&c.DstPort, "dst-port", c.DstPort, "UDP destination port of transmitted frames")
		return
	}
	fs.IntVar(&c.PacketSize, "size", c.PacketSize, "without -i: length of the generator's frames in bytes, without FCS")
	fs.IntVar(&c.GenCPU, "gen-cpu", c.GenCPU, "without -i: CPU of the packet generator (-1: no pinning)")
	fs.IntVar(&c.GenBatch, "gen-batch", c.GenBatch, "without -i: generator batch size (1..256)")
	fs.Uint64Var(&c.GenPPS, "gen-pps", 0, "without -i: generator rate limit in frames per second (0: as fast as it can)")
}

// CheckGiven refuses a flag given on fs's command line (fs.Visit: set,
// not left at its default) that would do nothing in this configuration,
// naming the flag as typed, its value and why: "-gen-pps 1000: applies
// only to the built-in topology's generator (without -i)". idle says why
// the flag name (without its dash) does nothing, or "" when it does
// something. Call it once fs is parsed,
// before anything is built: a flag that a user gave and that is then
// silently ignored leaves them believing it applied.
func CheckGiven(fs *flag.FlagSet, idle func(name string) string) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err != nil {
			return
		}
		if why := idle(f.Name); why != "" {
			err = fmt.Errorf("-%s %s: %s", f.Name, f.Value, why)
		}
	})
	return err
}

// IdleCommonFlag says why the flag name, one of
// [Config.RegisterCommonFlags]', does nothing with c, or "" when it does
// something: -spin bounds the spinning of -wait hybrid only, and -nap is
// the sleep of -wait nap only.
func (c *Config) IdleCommonFlag(name string) string {
	switch {
	case name == "spin" && c.Wait != WaitHybrid:
		return fmt.Sprintf("applies only to -wait hybrid (the wait is %s)", c.Wait)
	case name == "nap" && c.Wait != WaitNap:
		return fmt.Sprintf("applies only to -wait nap (the wait is %s)", c.Wait)
	}
	return ""
}

// IdleFlag says why the flag name, one of those [Config.RegisterFlags]
// registers for kind, does nothing with c, or "" when it does something:
// those of [Config.IdleCommonFlag], and with -i the generator's flags
// and, for the receiving kinds, -size (the generator's frames): only the
// built-in topology starts a generator. For [CheckGiven].
func (c *Config) IdleFlag(name string, kind Kind) string {
	if why := c.IdleCommonFlag(name); why != "" {
		return why
	}
	switch name {
	case "gen-cpu", "gen-batch", "gen-pps", "size":
		if c.Interface != "" && kind != TxOnly {
			return "applies only to the built-in topology's generator (without -i)"
		}
	}
	return ""
}

// The help of -frames: a socket that receives gives half its frames to
// transmit, a transmit-only one in copy mode all of them
// (xsk.Options.TxFrames).
const (
	framesHelpRx     = "UMEM frames (0: 4×ring), half of them for receive and half for transmit"
	framesHelpTxOnly = "UMEM frames (0: 4×ring), all of them for transmit in copy mode, half of them in zero-copy mode (where the other half take in the queue's receive traffic)"
)

// RegisterCommonFlags sets the defaults and registers the flags that
// rxdrop, txonly, l2fwd and echo all have and that do something in each:
// interface and queue, ring, batch and UMEM sizes (-frames as for a
// socket that receives), bind mode, need_wakeup, busy polling, how to
// wait, duration and CPU. A program that also transmits adds
// [Config.RegisterTxBudgetFlag]. Echo, which neither starts a generator,
// nor builds its own frames, nor prints a per-second report, registers
// only these and -tx-budget: the others would do nothing there.
func (c *Config) RegisterCommonFlags(fs *flag.FlagSet) { c.registerCommon(fs, framesHelpRx) }

// RegisterTxBudgetFlag registers -tx-budget, for a program whose socket
// transmits: XDP_MAX_TX_SKB_BUDGET bounds the frames one transmit system
// call sends in copy mode, and does nothing for a socket that only
// receives.
func (c *Config) RegisterTxBudgetFlag(fs *flag.FlagSet) {
	fs.IntVar(&c.TxBudget, "tx-budget", 0, "XDP_MAX_TX_SKB_BUDGET, 32..ring (0: the kernel's 32; Linux 6.17+)")
}

func (c *Config) registerCommon(fs *flag.FlagSet, framesHelp string) {
	c.Defaults()
	fs.StringVar(&c.Interface, "i", "", "interface to bind (empty: build a veth pair in throwaway namespaces and drive it)")
	fs.IntVar(&c.Queue, "q", 0, "queue to bind (without -i: 0, the built-in pair's only queue)")
	fs.IntVar(&c.Batch, "batch", c.Batch, "descriptors per ring operation")
	fs.IntVar(&c.RingSize, "ring", c.RingSize, "size of every ring (RX, TX, fill, completion), a power of two")
	fs.IntVar(&c.FrameSize, "frame", c.FrameSize, "UMEM frame size: 2048 or 4096")
	fs.IntVar(&c.NumFrames, "frames", 0, framesHelp)
	fs.Var(bindFlag{&c.Bind}, "mode", "bind mode: auto, copy or zc")
	fs.BoolVar(&c.NeedWakeup, "wakeup", c.NeedWakeup, "use need_wakeup (XDP_USE_NEED_WAKEUP)")
	fs.DurationVar(&c.BusyPoll, "busy-poll", 0, "preferred busy polling with this SO_BUSY_POLL time (0: off)")
	fs.IntVar(&c.BusyBudget, "busy-budget", 0, "SO_BUSY_POLL_BUDGET, with -busy-poll (0: 64)")
	fs.Var(&c.Wait, "wait", "when idle: spin, poll (sleep in poll(2)), hybrid (spin -spin, then poll) or nap (sleep -nap)")
	fs.DurationVar(&c.Spin, "spin", c.Spin, "how long -wait hybrid spins before it sleeps")
	fs.DurationVar(&c.Nap, "nap", c.Nap, "how long -wait nap sleeps")
	fs.DurationVar(&c.Duration, "d", 0, "run this long (0: until Ctrl-C)")
	fs.IntVar(&c.CPU, "cpu", c.CPU, "pin the run loop to this CPU (-1: no pinning)")
	fs.BoolVar(&c.Isolate, "isolate", false, "with -cpu: keep the process's other threads off that CPU (only if other CPUs have time to spare)")
}

// maxBusyPoll is the largest SO_BUSY_POLL time, in microseconds an int.
const maxBusyPoll = time.Duration(math.MaxInt32) * time.Microsecond

// Validate checks the knobs of a run that receives, before anything is
// built: those xsk.Options and the UMEM check too, so that the error
// names the flag rather than the field. Each error starts with the flag
// as typed, dash and all: "-batch 0: must be between 1 and 4096". The
// generator's (GenCPU, GenBatch) are checked without Interface, where the
// built-in topology's generator uses them; a run that starts no generator
// calls [Config.ValidateWithoutGenerator] instead.
func (c *Config) Validate() error { return c.validate(c.Interface == "", true) }

// ValidateWithoutGenerator is Validate for a run that receives and starts
// no generator (echo), where GenCPU and GenBatch do nothing and are not
// checked.
func (c *Config) ValidateWithoutGenerator() error { return c.validate(false, true) }

// validate checks the knobs, the generator's too when gen is set. A run
// that receives (rx) needs receive frames enough to fill the fill ring;
// one that only transmits (txonly) needs none in copy mode, where xsk
// gives every frame to transmit, and is not held to it.
func (c *Config) validate(gen, rx bool) error {
	switch {
	case c.Batch < 1 || c.Batch > 4096:
		return fmt.Errorf("-batch %d: must be between 1 and 4096", c.Batch)
	case c.RingSize <= 0 || c.RingSize&(c.RingSize-1) != 0:
		return fmt.Errorf("-ring %d: must be a power of two", c.RingSize)
	case c.RingSize < c.Batch:
		return fmt.Errorf("-ring %d: must be at least the batch size %d", c.RingSize, c.Batch)
	case c.FrameSize != 2048 && c.FrameSize != 4096:
		return fmt.Errorf("-frame %d: must be 2048 or 4096", c.FrameSize)
	case c.NumFrames < 0:
		return fmt.Errorf("-frames %d: must not be negative (0: 4×ring)", c.NumFrames)
	case c.RingSize > ring.MaxSize:
		return fmt.Errorf("-ring %d: must be at most %d", c.RingSize, ring.MaxSize)
	case rx && c.RingSize > umem.MaxNumFrames/2:
		// Half the frames receive, and they must fill the fill ring.
		return fmt.Errorf("-ring %d: must be at most %d: the UMEM has at most %d frames, and half of them must fill the fill ring",
			c.RingSize, umem.MaxNumFrames/2, umem.MaxNumFrames)
	case c.NumFrames > umem.MaxNumFrames:
		return fmt.Errorf("-frames %d: must be at most %d", c.NumFrames, umem.MaxNumFrames)
	case c.NumFrames == 0 && 4*c.RingSize > umem.MaxNumFrames:
		return fmt.Errorf("-ring %d: the default -frames, 4×ring = %d, is more than the UMEM may have (%d): set -frames",
			c.RingSize, 4*c.RingSize, umem.MaxNumFrames)
	case rx && c.NumFrames > 0 && c.NumFrames-c.NumFrames/2 < c.RingSize:
		return fmt.Errorf("-frames %d: must be at least %d (2×ring - 1): half of them receive, and they must fill the %d-entry fill ring",
			c.NumFrames, 2*c.RingSize-1, c.RingSize)
	case c.BusyPoll > 0 && c.BusyPoll < time.Microsecond:
		return fmt.Errorf("-busy-poll %v: must be 0 (off) or at least 1µs: SO_BUSY_POLL counts whole microseconds, and 0 would busy-poll not at all", c.BusyPoll)
	case c.Queue < 0:
		return fmt.Errorf("-q %d: must not be negative", c.Queue)
	case c.Interface == "" && c.Queue > 0:
		// Opening it would fail only once the pair was built.
		return fmt.Errorf("-q %d: the built-in veth pair has one queue, 0 (give -i to bind a queue of another interface)", c.Queue)
	case c.BusyPoll < 0 || c.BusyPoll > maxBusyPoll:
		return fmt.Errorf("-busy-poll %v: must be between 0 (off) and %v", c.BusyPoll, maxBusyPoll)
	case c.BusyBudget < 0 || c.BusyBudget > math.MaxUint16:
		return fmt.Errorf("-busy-budget %d: must be between 0 and %d", c.BusyBudget, math.MaxUint16)
	case c.BusyBudget > 0 && c.BusyPoll == 0:
		return fmt.Errorf("-busy-budget %d: needs -busy-poll", c.BusyBudget)
	case c.TxBudget != 0 && (c.TxBudget < 32 || c.TxBudget > c.RingSize):
		return fmt.Errorf("-tx-budget %d: must be 0 (the kernel's 32) or between 32 and the ring size %d", c.TxBudget, c.RingSize)
	case c.PacketSize < packet.MinFrame || c.PacketSize > c.FrameSize:
		return fmt.Errorf("-size %d: must be between %d and the frame size %d", c.PacketSize, packet.MinFrame, c.FrameSize)
	case c.Wait < WaitSpin || c.Wait > WaitNap:
		return fmt.Errorf("-wait %d: unknown wait mode", int(c.Wait))
	case c.Spin < 0:
		return fmt.Errorf("-spin %v: must not be negative", c.Spin)
	case c.Wait == WaitNap && (c.Nap <= 0 || c.Nap > time.Second):
		return fmt.Errorf("-nap %v: must be above 0 and at most 1s", c.Nap)
	case c.Duration < 0:
		return fmt.Errorf("-d %v: must not be negative", c.Duration)
	case c.SrcPort > 0xffff:
		return fmt.Errorf("-src-port %d: must be at most 65535", c.SrcPort)
	case c.DstPort > 0xffff:
		return fmt.Errorf("-dst-port %d: must be at most 65535", c.DstPort)
	case c.CPU < -1:
		return fmt.Errorf("-cpu %d: must be -1 (no pinning) or a CPU number", c.CPU)
	case c.Isolate && c.CPU < 0:
		return errors.New("-isolate: needs -cpu: it keeps the other threads off the run loop's CPU")
	case gen && c.GenCPU < -1:
		return fmt.Errorf("-gen-cpu %d: must be -1 (no pinning) or a CPU number", c.GenCPU)
	case gen && (c.GenBatch < 1 || c.GenBatch > pktgen.MaxBatchSize):
		return fmt.Errorf("-gen-batch %d: must be between 1 and %d", c.GenBatch, pktgen.MaxBatchSize)
	case gen && c.CPU >= 0 && c.CPU == c.GenCPU:
		// Both spin: sharing one CPU, each gets half of it and the
		// run measures that. With -isolate, the generator would be
		// moved off it without a word.
		return fmt.Errorf("-cpu %d: -gen-cpu is %d too (0 unless given): the run loop and the generator would share one CPU; give -gen-cpu another CPU, or -1", c.CPU, c.GenCPU)
	}
	if _, err := c.UDPHeader(nil, nil, netip.Addr{}, netip.Addr{}); err != nil {
		return err
	}
	genCPU := c.GenCPU
	if !gen {
		genCPU = -1 // no generator
	}
	return CheckCPUs(c.CPU, genCPU)
}

// CheckCPUs checks that the CPUs given by -cpu and -gen-cpu (-1: none) are
// ones this process may run on (its affinity, which taskset or a
// container's cpuset narrow), so that a bad one fails before anything is
// built rather than when the run loop starts. Errors start with the
// flag as typed: "-cpu 9: not one of the CPUs ...".
func CheckCPUs(cpu, genCPU int) error {
	if cpu < 0 && genCPU < 0 {
		return nil
	}
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		return fmt.Errorf("check -cpu %d, -gen-cpu %d: %w", cpu, genCPU, err)
	}
	for _, p := range [...]struct {
		flag string
		cpu  int
	}{{"cpu", cpu}, {"gen-cpu", genCPU}} {
		if p.cpu >= 0 && !cpus.Contains(p.cpu) {
			return fmt.Errorf("-%s %d: not one of the CPUs this process may run on (%s)", p.flag, p.cpu, cpus)
		}
	}
	return nil
}

// CheckInterface checks that the interface name, given by flag (the flag's
// name without its dash), is in the calling thread's network namespace and
// up, so that a missing or down one is refused naming the flag, as typed,
// before anything is attached to it: "-i eth9: no such network
// interface". A socket on an interface that is down
// receives nothing and fails its first transmit.
func CheckInterface(flag, name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		// "route ip+net: no such network interface": the operation
		// says nothing to a user.
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return fmt.Errorf("-%s %s: %w", flag, name, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return fmt.Errorf("-%s %s: the interface is down: it would send and receive nothing (ip link set %s up)", flag, name, name)
	}
	return nil
}

// XSKOptions is the socket configuration the knobs describe.
func (c *Config) XSKOptions() *xsk.Options {
	n := c.NumFrames
	if n == 0 {
		n = 4 * c.RingSize
	}
	return &xsk.Options{
		NumFrames:          n,
		FrameSize:          c.FrameSize,
		RxRingSize:         c.RingSize,
		TxRingSize:         c.RingSize,
		FillRingSize:       c.RingSize,
		CompletionRingSize: c.RingSize,
		Bind:               c.Bind,
		NoNeedWakeup:       !c.NeedWakeup,
		BusyPoll:           c.BusyPoll,
		BusyPollBudget:     c.BusyBudget,
		TxBudget:           c.TxBudget,
	}
}

// UDPHeader is the header of transmitted frames: the flags where given,
// else the defaults (source MAC of ifname, or of def; destination MAC,
// IPs from def when it has them).
func (c *Config) UDPHeader(src, dst net.HardwareAddr, srcIP, dstIP netip.Addr) (packet.UDP, error) {
	h := packet.UDP{SrcMAC: src, DstMAC: dst, SrcIP: srcIP, DstIP: dstIP,
		SrcPort: uint16(c.SrcPort), DstPort: uint16(c.DstPort)}
	var err error
	if c.SrcMAC != "" {
		if h.SrcMAC, err = net.ParseMAC(c.SrcMAC); err != nil {
			return h, fmt.Errorf("-src-mac: %w", err)
		}
	}
	if c.DstMAC != "" {
		if h.DstMAC, err = net.ParseMAC(c.DstMAC); err != nil {
			return h, fmt.Errorf("-dst-mac: %w", err)
		}
	}
	if c.SrcIP != "" {
		if h.SrcIP, err = netip.ParseAddr(c.SrcIP); err != nil {
			return h, fmt.Errorf("-src-ip: %w", err)
		}
	}
	if c.DstIP != "" {
		if h.DstIP, err = netip.ParseAddr(c.DstIP); err != nil {
			return h, fmt.Errorf("-dst-ip: %w", err)
		}
	}
	// ParseMAC takes EUI-64 and InfiniBand addresses too, ParseAddr IPv6
	// ones: refuse them here, naming the flag, not when the frame is
	// built.
	for _, m := range []struct {
		flag, v string
		mac     net.HardwareAddr
	}{{"src-mac", c.SrcMAC, h.SrcMAC}, {"dst-mac", c.DstMAC, h.DstMAC}} {
		if m.v != "" && len(m.mac) != 6 {
			return h, fmt.Errorf("-%s %s: must be a 6-byte Ethernet address", m.flag, m.v)
		}
	}
	for _, a := range []struct {
		flag, v string
		ip      netip.Addr
	}{{"src-ip", c.SrcIP, h.SrcIP}, {"dst-ip", c.DstIP, h.DstIP}} {
		if a.v != "" && !a.ip.Is4() {
			return h, fmt.Errorf("-%s %s: must be an IPv4 address", a.flag, a.v)
		}
	}
	if h.DstMAC == nil {
		h.DstMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	}
	if h.SrcMAC == nil {
		h.SrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	}
	if !h.SrcIP.IsValid() {
		h.SrcIP = netip.MustParseAddr("10.0.0.1")
	}
	if !h.DstIP.IsValid() {
		h.DstIP = netip.MustParseAddr("10.0.0.2")
	}
	return h, nil
}
