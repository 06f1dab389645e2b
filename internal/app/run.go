package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/xsk"
)

// Kind is the data path a run exercises.
type Kind int

const (
	// RxDrop receives and drops.
	RxDrop Kind = iota
	// TxOnly transmits one prepared frame, again and again.
	TxOnly
	// L2Fwd receives, swaps MAC addresses and transmits back.
	L2Fwd
)

func (k Kind) String() string {
	switch k {
	case RxDrop:
		return "rxdrop"
	case TxOnly:
		return "txonly"
	case L2Fwd:
		return "l2fwd"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Context is a context that ends on SIGINT or SIGTERM, or after d when d
// is positive.
func Context(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if d <= 0 {
		return ctx, stop
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, func() { cancel(); stop() }
}

// Result is what a run measured, over its window (after the warm-up).
type Result struct {
	Kind    Kind
	Mode    xsk.BindMode
	Elapsed time.Duration

	RxPackets, RxBytes uint64
	TxPackets, TxBytes uint64
	// Offered is what the generator offered (own topology only), from
	// its average rate.
	Offered uint64
	// PeerReceived is what arrived at the host end, counted when
	// PeerCounted (own topology with a sink, for the sending kinds).
	PeerReceived uint64
	PeerCounted  bool
	// CPU is the process's CPU time minus the generator thread's;
	// GenCPU the generator thread's.
	CPU, GenCPU time.Duration
	// Sleeps is the number of poll(2) calls made while idle.
	Sleeps uint64
	// Stats are the socket's counters at the end of the run (whole run).
	Stats xsk.Stats
	// BusyPoll is the run's busy-poll setting, and NAPIID the NAPI ID the
	// kernel recorded on the socket (0: none, and busy polling did
	// nothing).
	BusyPoll time.Duration
	NAPIID   uint32
	// Account is where every generated frame went (own topology,
	// receiving kinds); nil otherwise.
	Account *Account
	// TxAccount is where every frame the socket queued for transmit
	// went (own topology with a sink: txonly, l2fwd); nil otherwise.
	TxAccount *TxAccount
}

// TxAccount follows what the socket queued for transmit over a whole run,
// warm-up included, to the host end: the loop stops first, and the counts
// are read once the kernel has completed every frame queued and the host
// end has taken in what it will.
type TxAccount struct {
	// Sent is what the socket queued for transmit (Stats.TxPackets), and
	// Completed what the kernel gave back (Stats.Completed): sent, or
	// dropped by the device, which the kernel completes too.
	Sent, Completed uint64
	// Dropped is what the device dropped instead of sending
	// (Stats.TxDropped): in Completed, and never on the wire.
	Dropped uint64
	// HostIn is what the host end took in (its rx_packets).
	HostIn uint64
}

// Lost is what the socket queued that neither the device dropped nor the
// host end took in: 0 when every frame is accounted for.
func (a *TxAccount) Lost() int64 {
	return int64(a.Sent) - int64(a.Dropped) - int64(a.HostIn)
}

// Account follows the generator's frames over a whole run, warm-up and
// drain included: the generator stops first and the loop runs on until it
// has taken in everything that arrived.
type Account struct {
	// Sent is what the generator sent into the host end.
	Sent uint64
	// PeerIn is what the peer end took in (its rx_packets): Sent, less
	// what veth lost, plus anything else the host end sent.
	PeerIn uint64
	// VethDropped is what veth dropped on the way, the host end's
	// tx_dropped: frames the peer's 256-frame XDP ring had no room for,
	// as happens when the peer's NAPI poll falls behind the generator
	// (deferred to ksoftirqd on a busy machine, or threaded). Sent is
	// PeerIn plus VethDropped.
	VethDropped uint64
	// Received and Dropped are the socket's: Dropped is its RX-ring-full
	// drops plus its other ones, no fill frame or too long
	// (Stats.RxRingFull + Stats.RxDropped).
	Received, Dropped uint64
}

// Unaccounted is what the peer end took in that the socket neither
// received nor dropped: 0 when every frame is accounted for.
func (a *Account) Unaccounted() int64 {
	return int64(a.PeerIn) - int64(a.Received) - int64(a.Dropped)
}

// Packets is what the run's data path handled: received for rxdrop,
// queued for transmit for txonly and forwarded for l2fwd.
func (r *Result) Packets() uint64 {
	if r.Kind == RxDrop {
		return r.RxPackets
	}
	return r.TxPackets
}

// Bytes is the bytes of Packets: received for rxdrop, queued for
// transmit for txonly and l2fwd.
func (r *Result) Bytes() uint64 {
	if r.Kind == RxDrop {
		return r.RxBytes
	}
	return r.TxBytes
}

// PPS is Packets per second (0 over no time).
func (r *Result) PPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Packets()) / r.Elapsed.Seconds()
}

// MinCPUPackets is the fewest packets over which PrintResult gives a CPU
// cost per packet. Over fewer, the process's CPU time is that of the loop
// waiting for them (spinning, or waking up), of the per-second report and
// of reading the counters, not of handling them, and dividing it by so
// few packets gives figures that mean nothing (one packet in a 2 s run of
// a spinning loop: 2 million CPU-s per million packets); PrintResult gives
// the CPU time itself instead.
const MinCPUPackets = 1000

// CPUPerMpkt is the CPU seconds the process (without the generator) spent
// per million packets.
func (r *Result) CPUPerMpkt() float64 {
	return r.CPU.Seconds() / max(float64(r.Packets())/1e6, 1e-9)
}

// Run opens a socket as c says and runs kind on it until ctx ends or for
// c.Duration (see [RunOn]), reporting to out (nil: no output). With
// c.Interface it first checks that the interface is there and up
// ([CheckInterface]); without, it builds its own topology (see
// [NewTopology]) and feeds it with a generator.
// A ctx that ends before the loop starts fails the run with ctx's error.
func Run(ctx context.Context, kind Kind, c *Config, out io.Writer) (_ *Result, err error) {
	if err := validate(c, kind); err != nil {
		return nil, err
	}
	if err := notStarted(ctx, kind); err != nil {
		return nil, err
	}
	if c.Interface != "" {
		if err := CheckInterface("i", c.Interface); err != nil {
			return nil, err
		}
		return RunOn(ctx, kind, c, nil, 0, out)
	}
	// The generator sends -size frames too: check before building.
	if err := checkSize(c.PacketSize, "the built-in veth pair", TopologyMTU); err != nil {
		return nil, err
	}
	t, err := NewTopology(&TopologyOptions{
		Generator: kind != TxOnly, FrameLen: c.PacketSize, GenBatch: c.GenBatch, GenPPS: c.GenPPS,
		HostSink: kind != RxDrop,
	})
	if err != nil {
		return nil, fmt.Errorf("build veth topology: %w", err)
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	if out != nil {
		fmt.Fprintf(out, "built veth pair %s (%s) <-> %s (%s) in throwaway namespaces\n",
			t.Veth.Host.Name, t.Veth.Host.Addr, t.Veth.Peer.Name, t.Veth.Peer.Addr)
	}
	return RunOn(ctx, kind, c, t, 0, out)
}

// notStarted returns an error when ctx has ended before the run's loop
// started (Ctrl-C while the topology was built or the socket opened): a
// window of nothing would otherwise be reported as a run, after the
// generator had sent a call's worth of frames into the topology.
func notStarted(ctx context.Context, kind Kind) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: stopped before the run started: %w", kind, err)
	}
	return nil
}

// validate checks c for a run of kind: txonly starts no generator, so
// the generator's flags are not its concern, and receives nothing.
func validate(c *Config, kind Kind) error {
	if kind == TxOnly {
		return c.validate(false, false)
	}
	return c.Validate()
}

type snapshot struct {
	at               time.Time
	rx, rxb, tx, txb uint64
	// offered is what the generator has put into the veth pair so far
	// (see offeredSoFar); offeredOK says it could be read.
	offered   uint64
	offeredOK bool
	peer      uint64
	cpu, gen  time.Duration
	sleeps    uint64
}

// offeredSoFar is what the generator has offered since peer0 and host0
// were read, by the veth pair's counters, which move frame by frame: the
// frames the peer end has taken in (its rx_packets) and those veth
// dropped for want of room in the peer's ring (the host end's
// tx_dropped). It falls short of the generator's own count by at most
// what the peer's 256-frame ring holds, and counts too what else the
// host end sent (nothing, in the topology's namespace, but a stray
// frame). The generator's own count (GenRun.Offered) moves only once per
// call of 2^20 frames: seconds, at the rates of a loaded machine.
func offeredSoFar(t *Topology, peer0, host0 pktgen.Counters) (uint64, bool) {
	p, err := pktgen.ReadCounters(t.Veth.Peer)
	if err != nil {
		return 0, false
	}
	h, err := pktgen.ReadCounters(t.Veth.Host)
	if err != nil {
		return 0, false
	}
	return p.RxPackets - peer0.RxPackets + h.TxDropped - host0.TxDropped, true
}

// checkSize refuses a -size that ifname would not carry: longer than its
// MTU plus the Ethernet header, such frames are dropped on the way and
// never arrive.
func checkSize(size int, ifname string, mtu int) error {
	if mtu > 0 && size > mtu+packet.EthLen {
		return fmt.Errorf("-size %d: longer than the MTU %d of %s plus the %d-byte Ethernet header (at most %d)",
			size, mtu, ifname, packet.EthLen, mtu+packet.EthLen)
	}
	return nil
}

// socketOptions is the socket configuration of a run of kind. A socket
// that only transmits is registered in no XSKMAP (xsk.Options.TxOnly):
// otherwise the program would redirect every frame arriving on the queue
// to a socket that never receives, cutting the interface off from the
// kernel's stack for as long as the run lasts.
func socketOptions(c *Config, kind Kind) *xsk.Options {
	o := c.XSKOptions()
	o.TxOnly = kind == TxOnly
	return o
}

// RunOn runs kind on the peer end of t (nil: on c.Interface in the calling
// thread's namespace) until ctx ends or, when c.Duration is set, for that
// long from the start of the loop, or until the topology's generator
// fails (its error is returned with the result). The measured window
// starts after warmup. A ctx that ends before the loop starts fails the
// run with ctx's error, and the generator sends nothing.
func RunOn(ctx context.Context, kind Kind, c *Config, t *Topology, warmup time.Duration, out io.Writer) (_ *Result, err error) {
	if err := validate(c, kind); err != nil {
		return nil, err
	}
	if err := notStarted(ctx, kind); err != nil {
		return nil, err
	}
	ifname := c.Interface
	if t != nil {
		ifname = t.Veth.Peer.Name
	}
	var sock *xsk.Socket
	open := func() error {
		if kind == TxOnly {
			// An interface that does not exist is left for Open to
			// report.
			if ifi, err := net.InterfaceByName(ifname); err == nil {
				if err := checkSize(c.PacketSize, ifname, ifi.MTU); err != nil {
					return err
				}
			}
		}
		var err error
		sock, err = xsk.Open(ifname, c.Queue, socketOptions(c, kind))
		return err
	}
	if t != nil {
		err = t.Veth.Peer.Do(open)
	} else {
		err = open()
	}
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, sock.Close()) }()

	l := NewLoop(sock, c)
	if kind == TxOnly {
		frame, err := txFrame(c, ifname, t)
		if err != nil {
			return nil, err
		}
		if err := l.PrepareTx(frame); err != nil {
			return nil, err
		}
	}
	if out != nil {
		xdp := "XDP " + sock.XDPMode().String()
		switch {
		case sock.Program() == nil:
			xdp = "no XDP program (transmit only)"
		case kind == TxOnly:
			xdp += ", socket in no XSKMAP (transmit only)"
		}
		fmt.Fprintf(out, "%s on %s queue %d: %s mode, %s, batch %d, rings %d, frames of %d, need_wakeup %v, busy-poll %v, wait %s\n",
			kind, ifname, c.Queue, sock.Mode(), xdp, c.Batch, c.RingSize, c.FrameSize, c.NeedWakeup, c.BusyPoll, c.Wait)
		if zerr := sock.ZeroCopyErr(); zerr != nil {
			fmt.Fprintf(out, "no zero-copy: %v\n", zerr)
		}
	}

	// Opening the socket can take seconds (big rings).
	if err := notStarted(ctx, kind); err != nil {
		return nil, err
	}

	var gen *GenRun
	var peer0, hostGen0 pktgen.Counters
	if t != nil && t.Gen != nil && kind != TxOnly {
		if peer0, err = pktgen.ReadCounters(t.Veth.Peer); err != nil {
			return nil, err
		}
		if hostGen0, err = pktgen.ReadCounters(t.Veth.Host); err != nil {
			return nil, err
		}
		if gen, err = t.StartGenerator(c.GenCPU); err != nil {
			return nil, err
		}
		defer func() {
			if gen != nil {
				_, gerr := gen.Stop()
				err = errors.Join(err, gerr)
			}
		}()
	}

	take := func() snapshot {
		s := snapshot{at: time.Now(), rx: l.C.RxPackets.Load(), rxb: l.C.RxBytes.Load(),
			tx: l.C.TxPackets.Load(), txb: l.C.TxBytes.Load(), cpu: ProcessCPU(), sleeps: l.C.Sleeps.Load()}
		if gen != nil {
			s.gen = gen.CPU()
			s.offered, s.offeredOK = offeredSoFar(t, peer0, hostGen0)
		}
		if t != nil && t.Sink != nil {
			s.peer, _ = t.HostReceived()
		}
		return s
	}

	var host0 uint64
	if t != nil && t.Sink != nil {
		if host0, err = t.HostReceived(); err != nil {
			return nil, err
		}
	}

	var wg sync.WaitGroup
	var loopErr error
	loopDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(loopDone)
		unpin, err := PinThread(c.CPU)
		if err != nil {
			loopErr = err
			return
		}
		defer unpin()
		if c.CPU >= 0 && c.Isolate {
			restore, err := KeepOffCPU(c.CPU)
			if err != nil {
				loopErr = err
				return
			}
			defer func() { loopErr = errors.Join(loopErr, restore()) }()
		}
		switch kind {
		case RxDrop:
			_, loopErr = l.RxDrop(0)
		case TxOnly:
			_, loopErr = l.TxOnly(0)
			loopErr = errors.Join(loopErr, l.ReleaseTx())
		case L2Fwd:
			_, loopErr = l.L2Fwd(0)
		}
	}()

	start := take()
	if c.Duration > 0 {
		// The duration is the loop's: building the topology and
		// opening the socket (seconds for big rings) do not count.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration)
		defer cancel()
	}
	first := start
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	prev := start
	warm := warmup <= 0
	var warmTimer <-chan time.Time
	if !warm {
		warmTimer = time.After(warmup)
	}
	// The generator sends until stopped: it ends by itself only when it
	// fails (its target down, say), and a run fed by nothing would go on
	// measuring nothing until interrupted.
	var genDone <-chan struct{}
	if gen != nil {
		genDone = gen.done
	}
	report := func(s snapshot) {
		if out != nil && !c.Quiet {
			printRate(out, kind, s.at.Sub(first.at), prev, s, gen != nil, t != nil && t.Sink != nil)
		}
	}
	ticks := 0 // per-second lines so far, printed or not (Quiet)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-loopDone:
			break loop
		case <-genDone:
			break loop
		case <-warmTimer:
			start = take()
			warm = true
		case <-tick.C:
			now := take()
			report(now)
			prev = now
			ticks++
		}
	}
	end := take()
	if end.at.Sub(first.at) >= time.Duration(ticks+1)*time.Second {
		// A full second not yet reported: -d ended it with its last
		// tick, which the select above may not have taken (a -d of 2s
		// printed the line of the first second only).
		report(end)
	}
	var genErr error
	var genRate float64
	var sent uint64
	if gen != nil {
		// Stop the generator first and let the loop take in what is
		// still arriving, so that the statistics cover every frame.
		_, genErr = gen.Stop()
		genRate, sent = gen.Rate(), gen.Sent()
		gen = nil
		drain(l, loopDone, c, func() bool {
			// Everything the peer end took in is received or dropped:
			// the RX ring holds nothing the loop has yet to take.
			p, perr := pktgen.ReadCounters(t.Veth.Peer)
			st, serr := sock.Stats()
			return perr == nil && serr == nil &&
				p.RxPackets-peer0.RxPackets == st.RxPackets+st.RxRingFull+st.RxDropped
		})
	}
	l.Stop.Store(true)
	wg.Wait()
	if loopErr != nil && !errors.Is(loopErr, net.ErrClosed) {
		// What the socket did before the error is still worth seeing
		// (the interface deleted under a run, say).
		if st, err := sock.Stats(); out != nil && err == nil {
			fmt.Fprintf(out, "stopped by an error after %v\n", time.Since(start.at).Round(time.Millisecond))
			PrintStats(out, st)
		}
		return nil, errors.Join(fmt.Errorf("%s: %w", kind, loopErr), genErr)
	}
	if sent > 0 {
		// drain judges by time that nothing more is coming; a loop
		// kept off its CPU for that long stops with frames still in
		// the RX ring, which the account would miss.
		if _, err := l.Sweep(); err != nil {
			return nil, errors.Join(fmt.Errorf("%s: take in what the RX ring holds: %w", kind, err), genErr)
		}
	}
	r := &Result{Kind: kind, Mode: sock.Mode(), Elapsed: end.at.Sub(start.at),
		RxPackets: end.rx - start.rx, RxBytes: end.rxb - start.rxb,
		TxPackets: end.tx - start.tx, TxBytes: end.txb - start.txb,
		PeerReceived: end.peer - start.peer, PeerCounted: t != nil && t.Sink != nil,
		GenCPU: end.gen - start.gen, Sleeps: end.sleeps - start.sleeps}
	// Both on the scheduler's clock; the readings of a snapshot are a
	// few microseconds apart, which must not make the rest negative.
	r.CPU = max(end.cpu-start.cpu-r.GenCPU, 0)
	// The generator's count moves once per call (2^20 frames): its
	// average rate over its run is the better figure.
	r.Offered = uint64(genRate * r.Elapsed.Seconds())
	if t != nil && t.Sink != nil {
		if r.TxAccount, err = settleTx(sock, t, host0); err != nil {
			return nil, err
		}
	}
	if r.Stats, err = sock.Stats(); err != nil {
		return nil, err
	}
	if sent > 0 {
		p, err := pktgen.ReadCounters(t.Veth.Peer)
		if err != nil {
			return nil, err
		}
		h, err := pktgen.ReadCounters(t.Veth.Host)
		if err != nil {
			return nil, err
		}
		r.Account = &Account{Sent: sent, PeerIn: p.RxPackets - peer0.RxPackets,
			VethDropped: h.TxDropped - hostGen0.TxDropped,
			Received:    r.Stats.RxPackets, Dropped: r.Stats.RxRingFull + r.Stats.RxDropped}
	}
	r.BusyPoll = c.BusyPoll
	if r.NAPIID, err = sock.NAPIID(); err != nil {
		return nil, err
	}
	if out != nil {
		PrintResult(out, r)
	}
	return r, genErr
}

// drain waits, after the generator has stopped, until the loop has
// received nothing for a while (longer than it may sleep) and settled
// reports that it has taken in everything that arrived, or until the
// loop has ended, or a few seconds have passed. A quiet spell alone would
// not do: a loop kept from running for that long (by the scheduler, or a
// pause of the runtime's) has not received either.
func drain(l *Loop, loopDone <-chan struct{}, c *Config, settled func() bool) {
	quiet := 20 * time.Millisecond
	switch c.Wait {
	case WaitNap:
		quiet += 2 * c.Nap
	case WaitPoll, WaitHybrid:
		quiet += pollTimeout
	}
	deadline := time.Now().Add(3 * time.Second)
	last, lastAt := l.C.RxPackets.Load(), time.Now()
	for (time.Since(lastAt) < quiet || !settled()) && time.Now().Before(deadline) {
		select {
		case <-loopDone:
			return
		case <-time.After(5 * time.Millisecond):
		}
		if n := l.C.RxPackets.Load(); n != last {
			last, lastAt = n, time.Now()
		}
	}
}

// settleTx waits, after the loop has stopped, until the kernel has
// completed every frame the socket queued and the host end has taken in
// those the device did not drop, kicking the socket for frames still in
// its TX ring, and returns the account; it gives up after a few seconds,
// or once the host end's count has stood still for a while after the last
// completion (frames lost on the way). A count read at the end of the
// window instead would miss the frames still on their way (veth hands them
// to the host end's NAPI poll, later), and call frames lost that arrive a
// moment after.
func settleTx(sock *xsk.Socket, t *Topology, host0 uint64) (*TxAccount, error) {
	deadline := time.Now().Add(3 * time.Second)
	var a TxAccount
	var last uint64
	lastAt := time.Now()
	for {
		if _, err := sock.Complete(); err != nil {
			return nil, err
		}
		st, err := sock.Stats()
		if err != nil {
			return nil, err
		}
		h, err := t.HostReceived()
		if err != nil {
			return nil, err
		}
		a = TxAccount{Sent: st.TxPackets, Completed: st.Completed, Dropped: st.TxDropped, HostIn: h - host0}
		if a.HostIn != last {
			last, lastAt = a.HostIn, time.Now()
		}
		done := a.Completed >= a.Sent
		if done && a.Lost() <= 0 || done && time.Since(lastAt) > 100*time.Millisecond ||
			time.Now().After(deadline) {
			return &a, nil
		}
		if !done {
			if err := sock.Kick(); err != nil {
				return nil, err
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// txFrame builds the frame txonly sends.
func txFrame(c *Config, ifname string, t *Topology) ([]byte, error) {
	var h packet.UDP
	var err error
	if t != nil {
		h, err = c.UDPHeader(t.Veth.Peer.MAC, t.Veth.Host.MAC, t.Veth.Peer.IP(), t.Veth.Host.IP())
	} else {
		var src net.HardwareAddr
		if ifi, ierr := net.InterfaceByName(ifname); ierr == nil {
			src = ifi.HardwareAddr
		}
		h, err = c.UDPHeader(src, nil, netip.Addr{}, netip.Addr{})
	}
	if err != nil {
		return nil, err
	}
	frame := make([]byte, c.PacketSize)
	packet.FillPayload(frame[packet.HeadersLen:], 0)
	if _, err := h.Write(frame, c.PacketSize-packet.HeadersLen); err != nil {
		return nil, err
	}
	return frame, nil
}

// FormatRate formats a packet rate: "7.12 Mpps".
func FormatRate(pps float64) string {
	switch {
	case pps >= 1e6:
		return fmt.Sprintf("%.2f Mpps", pps/1e6)
	case pps >= 1e3:
		return fmt.Sprintf("%.1f kpps", pps/1e3)
	}
	return fmt.Sprintf("%.0f pps", pps)
}

// formatBits formats the bit rate of pkts frames of bytes in all over
// secs, or "" for frames of 64 bytes or less on average, or no time. The
// unit is the largest in which the rate reads 0.10 or more, so that two
// decimals show it ("1.02 Mb/s", not "0.00 Gb/s").
func formatBits(bytes uint64, pkts uint64, secs float64) string {
	if pkts == 0 || bytes <= 64*pkts || secs <= 0 {
		return ""
	}
	switch bps := float64(bytes) * 8 / secs; {
	case bps >= 1e8:
		return fmt.Sprintf(" %.2f Gb/s", bps/1e9)
	case bps >= 1e5:
		return fmt.Sprintf(" %.2f Mb/s", bps/1e6)
	case bps >= 1e2:
		return fmt.Sprintf(" %.2f kb/s", bps/1e3)
	default:
		return fmt.Sprintf(" %.0f b/s", bps)
	}
}

func printRate(out io.Writer, kind Kind, at time.Duration, a, b snapshot, gen, sink bool) {
	s := b.at.Sub(a.at).Seconds()
	line := fmt.Sprintf("%6.1fs", at.Seconds())
	if kind != TxOnly {
		line += fmt.Sprintf("  rx %s%s", FormatRate(float64(b.rx-a.rx)/s), formatBits(b.rxb-a.rxb, b.rx-a.rx, s))
	}
	if kind != RxDrop {
		line += fmt.Sprintf("  tx %s%s", FormatRate(float64(b.tx-a.tx)/s), formatBits(b.txb-a.txb, b.tx-a.tx, s))
	}
	if gen && a.offeredOK && b.offeredOK {
		line += fmt.Sprintf("  (offered %s)", FormatRate(float64(b.offered-a.offered)/s))
	}
	if sink {
		line += fmt.Sprintf("  (peer got %s)", FormatRate(float64(b.peer-a.peer)/s))
	}
	if b.sleeps != a.sleeps {
		line += fmt.Sprintf("  sleeps %d", b.sleeps-a.sleeps)
	}
	fmt.Fprintln(out, line)
}

// PrintResult prints the totals of a run and the socket's statistics.
func PrintResult(out io.Writer, r *Result) {
	secs := r.Elapsed.Seconds()
	fmt.Fprintf(out, "\n%s: %d packets in %.2fs: %s%s", r.Kind, r.Packets(), secs, FormatRate(r.PPS()),
		formatBits(r.Bytes(), r.Packets(), secs))
	switch {
	case r.Packets() >= MinCPUPackets:
		fmt.Fprintf(out, ", %.3f CPU-s per million packets", r.CPUPerMpkt())
	case r.Packets() > 0:
		fmt.Fprintf(out, ", %.3f CPU-s (fewer than %d packets: too few for a cost per packet)", r.CPU.Seconds(), MinCPUPackets)
	}
	if r.Offered > 0 {
		fmt.Fprintf(out, "; generator offered %s (%.2f CPU-s)", FormatRate(float64(r.Offered)/secs), r.GenCPU.Seconds())
	}
	if r.PeerCounted {
		fmt.Fprintf(out, "; peer received %s", FormatRate(float64(r.PeerReceived)/secs))
	}
	fmt.Fprintln(out)
	if r.BusyPoll > 0 && r.Stats.RxPackets > 0 && r.NAPIID == 0 {
		fmt.Fprintf(out, "busy polling had no effect: the packets came from a NAPI instance without an ID (SO_INCOMING_NAPI_ID 0, as on veth), so there was nothing to busy-poll\n")
	}
	if a := r.Account; a != nil {
		fmt.Fprintf(out, "accounting: the generator sent %d frames and the peer end took in %d", a.Sent, a.PeerIn)
		if a.VethDropped > 0 {
			fmt.Fprintf(out, " (veth dropped %d: the peer's ring was full)", a.VethDropped)
		}
		// (PeerIn also counts anything else the host end sent.)
		if lost := int64(a.Sent) - int64(a.PeerIn) - int64(a.VethDropped); lost > 0 {
			fmt.Fprintf(out, " (%d lost in veth without a count)", lost)
		}
		fmt.Fprintf(out, "; the socket received %d and dropped %d (%d RX ring full, %d with no fill frame or too long)",
			a.Received, a.Dropped, r.Stats.RxRingFull, r.Stats.RxDropped)
		if u := a.Unaccounted(); u != 0 {
			fmt.Fprintf(out, "; %d unaccounted\n", u)
		} else {
			fmt.Fprintf(out, ": every frame accounted for\n")
		}
	}
	if a := r.TxAccount; a != nil {
		fmt.Fprintf(out, "accounting: the socket queued %d frames for transmit, the kernel completed %d", a.Sent, a.Completed)
		if a.Dropped > 0 {
			fmt.Fprintf(out, ", of which the device dropped %d (not sent),", a.Dropped)
		}
		fmt.Fprintf(out, " and the host end took in %d", a.HostIn)
		switch lost := a.Lost(); {
		case a.HostIn == 0 && lost > 0:
			fmt.Fprintf(out, ": nothing arrived at the host end, the frames were lost on the way\n")
		case lost > 0:
			fmt.Fprintf(out, "; %d lost on the way\n", lost)
		case a.Dropped > 0:
			fmt.Fprintf(out, ": every frame accounted for\n")
		default:
			fmt.Fprintf(out, ": every frame arrived\n")
		}
	} else {
		if r.PeerCounted && r.PeerReceived == 0 && r.TxPackets > 0 {
			fmt.Fprintf(out, "nothing arrived at the peer end: the %d frames queued for transmit were lost on the way\n", r.TxPackets)
		}
		if r.Stats.TxDropped > 0 {
			fmt.Fprintf(out, "the device dropped %d of the frames queued for transmit (not sent)\n", r.Stats.TxDropped)
		}
	}
	PrintStats(out, r.Stats)
}

// PrintStats prints a socket's statistics, one per line.
func PrintStats(out io.Writer, s xsk.Stats) {
	fmt.Fprintf(out, "socket statistics:\n")
	for _, f := range []struct {
		name string
		v    uint64
	}{
		{"rx packets", s.RxPackets}, {"rx bytes", s.RxBytes}, {"rx batches", s.RxBatches},
		{"tx packets", s.TxPackets}, {"tx bytes", s.TxBytes}, {"tx batches", s.TxBatches},
		{"tx completed", s.Completed}, {"tx dropped", s.TxDropped},
		{"rx dropped", s.RxDropped}, {"rx ring full", s.RxRingFull}, {"fill ring empty", s.FillRingEmpty},
		{"rx invalid descs", s.RxInvalidDescs}, {"tx invalid descs", s.TxInvalidDescs}, {"tx ring empty", s.TxRingEmpty},
		{"rx wakeups", s.RxWakeups}, {"tx wakeups", s.TxWakeups},
	} {
		fmt.Fprintf(out, "  %-17s %d\n", f.name, f.v)
	}
}

// Main is the main function of the rxdrop, txonly and l2fwd examples: it
// parses the command line into a Config, runs kind until Ctrl-C or the
// -d duration, and exits 1 with the error, prefixed by name, on failure.
func Main(name string, kind Kind) {
	var c Config
	c.RegisterFlags(flag.CommandLine, kind)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags]\n\n", name)
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := CheckGiven(flag.CommandLine, func(f string) string { return c.IdleFlag(f, kind) }); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	// Run times -d itself, from the start of the loop.
	ctx, cancel := Context(0)
	_, err := Run(ctx, kind, &c, os.Stdout)
	cancel()
	if err != nil {
		// Run's errors from the loop already start with the kind,
		// which is the name.
		fmt.Fprintf(os.Stderr, "%s: %s\n", name, strings.TrimPrefix(err.Error(), name+": "))
		os.Exit(1)
	}
}
