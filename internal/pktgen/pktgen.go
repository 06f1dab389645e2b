package pktgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/sys"
)

// Limits of the kernel's live-frame mode.
const (
	// MaxBatchSize is the largest BatchSize the kernel accepts
	// (TEST_XDP_MAX_BATCH in net/bpf/test_run.c).
	MaxBatchSize = 256
	// DefaultBatchSize is the kernel's default (NAPI_POLL_WEIGHT).
	DefaultBatchSize = 64
	// MaxFrameLen is the longest frame this package offers: live frames
	// live in one page together with the kernel's per-page state, XDP
	// headroom and skb_shared_info, which leaves 3408 bytes on 4 KiB
	// pages (measured on Linux 6.18, x86-64: one byte more and every
	// BPF_PROG_RUN fails with EINVAL). Another kernel's structures may
	// differ: the kernel has the last word.
	MaxFrameLen = 3408
	// DefaultChunk is the number of frames per BPF_PROG_RUN call when
	// neither a rate nor a deadline asks for smaller calls.
	DefaultChunk = 1 << 20
	// minLen is ETH_HLEN: the kernel refuses shorter XDP input.
	minLen = 14
)

// Options configures [New]. A nil *Options is not allowed: Frame is required.
type Options struct {
	// Frame is the Ethernet frame to send (without FCS), copied by New.
	// Between 14 bytes and MaxFrameLen, and at most the target's MTU
	// plus 14 (the redirect refuses longer frames).
	Frame []byte

	// SrcPorts, when above 1, makes the generator rewrite the UDP source
	// port of each frame to one of SrcPorts consecutive ports starting
	// at the template's, fixing the UDP checksum, so that a receiver
	// sees SrcPorts flows. Frame must then be UDP/IPv4 without IP
	// options. Default 1: every frame is Frame byte for byte.
	SrcPorts int

	// BatchSize is how many frames the kernel builds and redirects per
	// batch before flushing them to the target (and running softirqs).
	// Default 64; at most MaxBatchSize.
	BatchSize int

	// Chunk is the largest number of frames per BPF_PROG_RUN system call.
	// Smaller chunks let SendContext notice cancellation sooner; each
	// call costs a page pool setup in the kernel. Default DefaultChunk.
	Chunk int

	// PPS limits the rate, in frames per second, by sending chunks of
	// about a millisecond's worth, but at least BatchSize frames, and
	// sleeping in between: below BatchSize*1000 frames per second the
	// frames leave in bursts of BatchSize, and a send that ends early
	// (SendFor, SendContext) may have sent up to a burst more than
	// PPS times its duration. Default 0: as fast as the kernel can.
	PPS uint64

	// Pin runs the system calls on CPU (sched_setaffinity of the calling
	// thread for the duration of each send). On veth the CPU that runs
	// the program picks the RX queue on the far side (CPU modulo the
	// number of queues). Default: no pinning.
	Pin bool
	// CPU is the CPU number used when Pin is set: one of [sys.AllowedCPUs]
	// (under `taskset -c 2,3` only 2 and 3 are). Default 0.
	CPU int
}

// Generator sends one frame, again and again, out of one interface.
//
// Its send methods are serialised by a mutex: calls from several goroutines
// take turns. Close waits for a send in progress; Total may be called at
// any time.
type Generator struct {
	mu      sync.Mutex
	closed  bool
	ifindex int
	ifname  string
	opts    Options
	frame   []byte
	state   *ebpf.Map // [0] = runState of the current run
	devmap  *ebpf.Map // [0] = target ifindex
	prog    *ebpf.Program
	watch   *refusalWatch
	total   atomic.Uint64 // frames offered since New

	// resident keeps prog in the kernel's XDP dispatcher between runs
	// (see keepResident); nil when that could not be arranged.
	resident    link.Link
	residentNS  *netenv.Netns
	residentErr error
}

// New loads the generator's XDP program and points it at the interface
// ifindex in the calling thread's network namespace (wrap New in
// [netenv.Endpoint.Do], or use [NewFor]). Once made, the generator may send
// from any namespace: the target is held by a DEVMAP entry, which names the
// device itself rather than an ifindex to be looked up at send time.
//
// Frames redirected to one end of a veth pair come out of the other end,
// whose receive path must have NAPI enabled (an XDP program attached in
// native mode, as an AF_XDP socket's is in driver mode, or a [Sink]; or GRO
// on); otherwise veth refuses them and the sends fail (see
// [Generator.Send]). That is checked as the frames are sent, not here: the
// receiver may be attached after New.
//
// New also attaches two raw tracepoint programs that count the frames the
// kernel refuses after the redirect (see the package doc); it fails when
// it cannot (they need CAP_PERFMON and the kernel's BTF).
func New(ifindex int, opts *Options) (_ *Generator, err error) {
	if opts == nil {
		return nil, errors.New("create packet generator: Options required (Frame)")
	}
	o := *opts
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return nil, fmt.Errorf("create packet generator: ifindex %d: %w", ifindex, unix.ENODEV)
	}
	ifi, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("create packet generator: ifindex %d: %w", ifindex, unix.ENODEV)
	}
	if err := o.validate(ifi); err != nil {
		return nil, fmt.Errorf("create packet generator on %s: %w", ifi.Name, err)
	}

	g := &Generator{ifindex: ifindex, ifname: ifi.Name, opts: o, frame: append([]byte(nil), o.Frame...)}
	g.opts.Frame = g.frame
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	g.state, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "pktgen_state", Type: ebpf.Array, KeySize: 4, ValueSize: stateSize, MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("create packet generator on %s: create state map: %w", ifi.Name, err)
	}
	g.devmap, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "pktgen_target", Type: ebpf.DevMap, KeySize: 4, ValueSize: 4, MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("create packet generator on %s: create devmap: %w", ifi.Name, err)
	}
	if err := g.devmap.Put(uint32(0), uint32(ifindex)); err != nil {
		return nil, fmt.Errorf("create packet generator on %s: add ifindex %d to devmap: %w", ifi.Name, ifindex, err)
	}
	var pr *portRewrite
	if o.SrcPorts > 1 {
		r := newPortRewrite(g.frame, o.SrcPorts)
		pr = &r
	}
	g.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "pktgen",
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: generatorProgram(g.state, g.devmap, pr),
	})
	if err != nil {
		return nil, fmt.Errorf("create packet generator on %s: load program: %w", ifi.Name, err)
	}
	if g.watch, err = watchRefusals(g.state, g.devmap); err != nil {
		return nil, fmt.Errorf("create packet generator on %s: %w", ifi.Name, err)
	}
	g.residentErr = g.keepResident()
	return g, nil
}

// keepResident attaches the program, in generic mode, to the loopback of a
// namespace of its own where nothing ever sends a packet.
//
// Every BPF_PROG_RUN of an XDP program adds the program to the kernel's XDP
// dispatcher on entry and removes it on exit (bpf_prog_change_xdp); each
// change patches kernel text and waits for RCU, which took about 25 ms a
// call here, three times the time 65,536 frames take. A program already in
// the dispatcher (because it is attached somewhere) makes those changes
// mere reference counts: the generator went from 1.8 to 5.8 Mpps in runs
// of 65,536 frames on a veth pair. The namespace holds no traffic, so the
// attachment never runs the program (nor spends its budget).
func (g *Generator) keepResident() error {
	ns, err := netenv.NewNetns("")
	if err != nil {
		return err
	}
	err = ns.Do(func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		g.resident, err = link.AttachXDP(link.XDPOptions{Program: g.prog, Interface: lo.Index, Flags: link.XDPGenericMode})
		return err
	})
	if err != nil {
		ns.Close()
		return fmt.Errorf("keep generator resident in the XDP dispatcher: %w", err)
	}
	g.residentNS = ns
	return nil
}

// ResidentErr says why the generator could not keep its program in the
// kernel's XDP dispatcher (it then pays a fixed cost of some milliseconds
// per run); nil when it could.
func (g *Generator) ResidentErr() error { return g.residentErr }

// NewFor is [New] for an endpoint, run inside the endpoint's namespace.
func NewFor(ep netenv.Endpoint, opts *Options) (*Generator, error) {
	var g *Generator
	err := ep.Do(func() error {
		var err error
		g, err = New(ep.Index, opts)
		return err
	})
	return g, err
}

func (o *Options) validate(ifi *net.Interface) error {
	switch {
	case len(o.Frame) < minLen:
		return fmt.Errorf("Frame of %d bytes: must be at least %d", len(o.Frame), minLen)
	case len(o.Frame) > MaxFrameLen:
		return fmt.Errorf("Frame of %d bytes: must be at most %d", len(o.Frame), MaxFrameLen)
	case ifi.MTU > 0 && len(o.Frame) > ifi.MTU+minLen:
		return fmt.Errorf("Frame of %d bytes: longer than MTU %d plus the Ethernet header", len(o.Frame), ifi.MTU)
	case o.BatchSize < 0 || o.BatchSize > MaxBatchSize:
		return fmt.Errorf("BatchSize %d: must be between 1 and %d", o.BatchSize, MaxBatchSize)
	case o.Chunk < 0 || uint64(o.Chunk) > math.MaxUint32:
		return fmt.Errorf("Chunk %d: must be between 1 and %d", o.Chunk, uint32(math.MaxUint32))
	case o.SrcPorts < 0 || o.SrcPorts > 1<<16:
		return fmt.Errorf("SrcPorts %d: must be between 1 and 65536", o.SrcPorts)
	}
	if o.Pin {
		cpus, err := sys.AllowedCPUs()
		if err != nil {
			return fmt.Errorf("CPU %d: %w", o.CPU, err)
		}
		if !cpus.Contains(o.CPU) {
			return fmt.Errorf("CPU %d: not one of the CPUs this process may run on (%s)", o.CPU, cpus)
		}
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Chunk == 0 {
		o.Chunk = DefaultChunk
	}
	if o.SrcPorts > 1 {
		p, err := packet.Parse(o.Frame)
		if err != nil {
			return fmt.Errorf("SrcPorts %d: Frame must be UDP/IPv4: %w", o.SrcPorts, err)
		}
		if o.Frame[packet.EthLen]&0x0f != 5 {
			return fmt.Errorf("SrcPorts %d: Frame must have no IPv4 options", o.SrcPorts)
		}
		if int(p.SrcPort)+o.SrcPorts > 1<<16 {
			return fmt.Errorf("SrcPorts %d: source port %d plus SrcPorts passes 65535", o.SrcPorts, p.SrcPort)
		}
	}
	return nil
}

// Send sends exactly n frames (at the configured rate, if any) and returns
// how many it offered to the target: n, unless an error stopped it early.
// A frame is offered when the target's driver took it (ndo_xdp_xmit); the
// driver may still drop it for want of room (a veth whose peer's ring is
// full, or whose peer's MTU is too small for it), and counts it in the
// target's tx_dropped. Frames that the kernel refuses on the way, without
// a trace in any interface counter, are not offered: Send stops after the
// BPF_PROG_RUN call that met them and fails with an error that names the
// target and wraps the kernel's errno: unix.ENETDOWN when the target is
// down, unix.EOPNOTSUPP when it cannot transmit XDP frames (no
// ndo_xdp_xmit: macvlan, bridge; a veth whose peer has neither a
// native-mode XDP program nor GRO), unix.ENXIO when its driver refuses
// them (a veth whose peer is down), unix.EMSGSIZE when the frame is longer
// than its MTU (changed since New). Once the target device is deleted
// nothing is offered, and Send fails with an error wrapping unix.ENODEV.
// Send(0) sends nothing and returns 0 and nil at once (an error wrapping
// [net.ErrClosed] after Close).
func (g *Generator) Send(n uint64) (uint64, error) {
	return g.send(context.Background(), n, false)
}

// SendFor sends for about d and returns the number of frames offered.
func (g *Generator) SendFor(d time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	n, err := g.SendContext(ctx, 0)
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil
	}
	return n, err
}

// SendContext sends n frames, or with n == 0 until ctx is done, and returns
// the number offered. When ctx ends first it returns ctx's error with the
// count so far; a chunk already handed to the kernel runs to its end. With
// n == 0, a ctx that can never be done (context.Background) is refused:
// the send would never end, nor could Close stop it.
func (g *Generator) SendContext(ctx context.Context, n uint64) (sent uint64, err error) {
	if n == 0 && ctx.Done() == nil {
		return 0, errors.New("send frames until ctx is done: ctx can never be done")
	}
	return g.send(ctx, n, n == 0)
}

// send sends n frames, or with untilDone until ctx is done.
func (g *Generator) send(ctx context.Context, n uint64, untilDone bool) (sent uint64, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, fmt.Errorf("send frames: %w", net.ErrClosed)
	}
	if n == 0 && !untilDone {
		return 0, nil
	}
	if g.opts.Pin {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		restore, err := pin(g.opts.CPU)
		if err != nil {
			return 0, err
		}
		defer restore()
	}

	chunk := uint64(g.opts.Chunk)
	_, hasDeadline := ctx.Deadline()
	if ctx.Done() != nil && (hasDeadline || untilDone) && chunk > 1<<16 {
		chunk = 1 << 16 // notice the end within some milliseconds
	}
	var start time.Time
	if g.opts.PPS > 0 {
		chunk = min(chunk, max(uint64(g.opts.BatchSize), g.opts.PPS/1000))
		start = time.Now()
	}
	for untilDone || sent < n {
		if err := ctx.Err(); err != nil {
			return sent, err
		}
		c := chunk
		if !untilDone {
			c = min(c, n-sent)
		}
		if g.opts.PPS > 0 {
			due := time.Duration(float64(sent) / float64(g.opts.PPS) * float64(time.Second))
			if wait := due - time.Since(start); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return sent, ctx.Err()
				case <-t.C:
				}
			}
		}
		done, err := g.run(uint32(c))
		sent += done
		g.total.Add(done)
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// run offers n frames with one BPF_PROG_RUN (restarted by cilium/ebpf after
// EINTR; the budget in the state map keeps the count exact) and returns
// how many of them the target took: those redirected less those the kernel
// then refused (see refusals.go).
func (g *Generator) run(n uint32) (uint64, error) {
	// The thread that makes the system call is the one the
	// xdp:xdp_devmap_xmit program looks for.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := g.state.Put(uint32(0), runState{Budget: uint64(n), Tid: uint32(unix.Gettid())}); err != nil {
		return 0, fmt.Errorf("send frames: set budget: %w", err)
	}
	_, runErr := g.prog.Run(&ebpf.RunOptions{
		Data:      g.frame,
		Repeat:    n,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		BatchSize: uint32(g.opts.BatchSize),
	})
	var st runState
	if err := g.state.Lookup(uint32(0), &st); err != nil {
		return 0, errors.Join(runErr, fmt.Errorf("send frames: read budget: %w", err))
	}
	redirected := uint64(n) - min(st.Budget, uint64(n))
	refused := min(st.Refused, redirected)
	done := redirected - refused
	if runErr != nil {
		return done, fmt.Errorf("send frames: BPF_PROG_RUN live frames: %w", runErr)
	}
	if refused > 0 {
		return done, refusedError(refused, redirected, g.ifname, g.ifindex, st.Err)
	}
	if redirected < uint64(n) {
		// The program counts only frames it redirected; the others
		// found no device in the DEVMAP: the target was deleted.
		return done, fmt.Errorf("send frames: %d of %d frames not redirected: ifindex %d is gone: %w", uint64(n)-redirected, n, g.ifindex, unix.ENODEV)
	}
	return done, nil
}

// Total is the number of frames offered since New, updated after every
// BPF_PROG_RUN call; it may be read while a send is in progress.
func (g *Generator) Total() uint64 { return g.total.Load() }

// Close unloads the program and frees the maps. A second Close returns nil.
func (g *Generator) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var errs []error
	if g.resident != nil {
		errs = append(errs, sys.CloseObject(g.resident))
	}
	if g.watch != nil {
		errs = append(errs, g.watch.Close())
	}
	if g.residentNS != nil {
		errs = append(errs, g.residentNS.Close())
	}
	if g.prog != nil {
		errs = append(errs, sys.CloseObject(g.prog))
	}
	if g.devmap != nil {
		errs = append(errs, sys.CloseObject(g.devmap))
	}
	if g.state != nil {
		errs = append(errs, sys.CloseObject(g.state))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close packet generator: %w", err)
	}
	return nil
}

// pin moves the calling (locked) thread to cpu and returns a function that
// restores its previous affinity.
func pin(cpu int) (func(), error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("pin to cpu %d: %w", cpu, os.NewSyscallError("sched_getaffinity", err))
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin to cpu %d: %w", cpu, os.NewSyscallError("sched_setaffinity", err))
	}
	return func() { unix.SchedSetaffinity(0, &old) }, nil
}
