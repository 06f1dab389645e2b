// Command xconnect cross-connects two interfaces: every frame received on
// one goes out of the other, in both directions, through two AF_XDP
// sockets that share one UMEM (xsk.Options.ShareUMEM). A received frame is
// transmitted from the frame it arrived in: the forwarder copies nothing.
// It prints the rate of each direction every second and, at the end (on
// Ctrl-C or after -d), the rates over the run and both sockets'
// statistics. At the end it first takes the sockets out of their XSKMAPs
// (the interfaces' frames go to the kernel's stack from then on) and
// forwards what their RX rings still hold, so that the counts cover every
// frame the sockets were given; what it forwards then, after the run, is
// counted apart, outside the rates.
//
// With no interfaces (-a, -b) it builds two veth pairs whose inner ends
// share a throwaway namespace, feeds the first with a kernel-speed
// generator (internal/pktgen) and counts what arrives at the far end of
// the second (an XDP_DROP program there). Unpaced, the generator offers
// several times what the forwarder can take (a copy-mode socket sends
// through a system call): the forwarder runs flat out, the per-second
// lines show its rate, and the excess is dropped by the kernel as "fill
// ring empty" (the socket had no free frame to receive into, see the note
// printed at the end). -gen-pps paces the generator below that rate.
//
// Needs Linux 5.18+ and root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW,
// CAP_IPC_LOCK, CAP_SYS_ADMIN).
//
//	go run ./examples/xconnect -d 10s -cpu 1
//	go run ./examples/xconnect -a eth0 -b eth1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/ring"
	"github.com/afxdp/afxdp/umem"
	"github.com/afxdp/afxdp/xsk"
)

type config struct {
	a, b     string
	queue    int
	batch    int
	ring     int
	frames   int
	d        time.Duration
	cpu      int
	genCPU   int
	frameLen int
	pps      uint64
}

func main() {
	var c config
	c.register(flag.CommandLine)
	flag.Parse()
	err := app.CheckGiven(flag.CommandLine, c.idleFlag)
	if err == nil {
		// forward times -d itself, from the start of forwarding.
		ctx, cancel := app.Context(0)
		err = run(ctx, &c, os.Stdout)
		cancel()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "xconnect: %v\n", err)
		os.Exit(1)
	}
}

// register defines the flags on fs, into c.
func (c *config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.a, "a", "", "first interface (empty, with -b empty: build two veth pairs and drive them)")
	fs.StringVar(&c.b, "b", "", "second interface")
	fs.IntVar(&c.queue, "q", 0, "queue to bind on both interfaces (without -a/-b: 0, the built-in pairs' only queue)")
	fs.IntVar(&c.batch, "batch", 64, "descriptors per ring operation")
	fs.IntVar(&c.ring, "ring", 1024, "size of every ring, a power of two")
	fs.IntVar(&c.frames, "frames", 0, "UMEM frames (0: 8×ring); half are for receive and must fill both fill rings: at least 4×ring-1")
	fs.DurationVar(&c.d, "d", 0, "run this long (0: until Ctrl-C)")
	fs.IntVar(&c.cpu, "cpu", -1, "pin the forwarding loop to this CPU (-1: no pinning)")
	fs.IntVar(&c.genCPU, "gen-cpu", 0, "without -a/-b: CPU of the packet generator (-1: no pinning)")
	fs.IntVar(&c.frameLen, "size", 64, "without -a/-b: generated frame length in bytes, without FCS (60 to 1514)")
	fs.Uint64Var(&c.pps, "gen-pps", 0, "without -a/-b: generator rate in frames per second (0: as fast as it can, which outruns the forwarder: the excess is dropped, as fill ring empty)")
}

// idleFlag says why the flag name does nothing with c, or "" when it does
// something (see app.CheckGiven): the generator's flags with -a and -b,
// which start no generator.
func (c *config) idleFlag(name string) string {
	switch name {
	case "gen-cpu", "gen-pps", "size":
		if c.a != "" || c.b != "" {
			return "applies only to the built-in topology's generator (without -a and -b)"
		}
	}
	return ""
}

// validate checks every flag before anything is built, naming the flag
// at fault.
func (c *config) validate() error {
	// The UMEM's receive half (xsk gives the other half to transmit)
	// must fill both sockets' fill rings of c.ring entries each:
	// frames - frames/2 >= 2×ring.
	minFrames := 4*c.ring - 1
	own := c.a == "" // the topology and generator are ours
	switch {
	case c.b == "" && c.a != "":
		return fmt.Errorf("-a %s: needs -b: give both interfaces or neither", c.a)
	case c.a == "" && c.b != "":
		return fmt.Errorf("-b %s: needs -a: give both interfaces or neither", c.b)
	case c.a != "" && c.a == c.b:
		return fmt.Errorf("-b %s: the same interface as -a: they must differ", c.b)
	case c.queue < 0:
		return fmt.Errorf("-q %d: must not be negative", c.queue)
	case own && c.queue > 0:
		// Opening it would fail only once the pairs were built.
		return fmt.Errorf("-q %d: the built-in veth pairs have one queue each, 0 (give -a and -b to bind a queue of other interfaces)", c.queue)
	case c.batch < 1 || c.batch > 4096:
		return fmt.Errorf("-batch %d: must be between 1 and 4096", c.batch)
	case c.ring < 1 || c.ring > ring.MaxSize || c.ring&(c.ring-1) != 0:
		return fmt.Errorf("-ring %d: must be a power of two", c.ring)
	case c.ring < c.batch:
		return fmt.Errorf("-ring %d: must be at least the batch size %d", c.ring, c.batch)
	case c.frames == 0 && 8*c.ring > umem.MaxNumFrames:
		return fmt.Errorf("-ring %d: the default -frames, 8×ring (%d), are more than %d; lower -ring or give -frames",
			c.ring, 8*c.ring, umem.MaxNumFrames)
	case c.frames != 0 && (c.frames < minFrames || c.frames > umem.MaxNumFrames):
		return fmt.Errorf("-frames %d: must be 0 or between %d and %d: half of them receive, and must fill both sockets' fill rings of -ring %d",
			c.frames, minFrames, umem.MaxNumFrames, c.ring)
	case c.d < 0:
		return fmt.Errorf("-d %v: must not be negative", c.d)
	case c.cpu < -1:
		return fmt.Errorf("-cpu %d: must be -1 (no pinning) or a CPU number", c.cpu)
	case own && c.genCPU < -1:
		return fmt.Errorf("-gen-cpu %d: must be -1 (no pinning) or a CPU number", c.genCPU)
	case own && c.cpu >= 0 && c.cpu == c.genCPU:
		return fmt.Errorf("-cpu %d: -gen-cpu is %d too (0 unless given): the forwarding loop and the generator would share one CPU; give -gen-cpu another CPU, or -1", c.cpu, c.genCPU)
	case own && (c.frameLen < packet.MinFrame || c.frameLen > app.TopologyMTU+packet.EthLen):
		return fmt.Errorf("-size %d: must be between %d and %d (the veth pairs' MTU %d plus the Ethernet header)",
			c.frameLen, packet.MinFrame, app.TopologyMTU+packet.EthLen, app.TopologyMTU)
	}
	gen := c.genCPU
	if c.a != "" {
		gen = -1 // no generator
	}
	return app.CheckCPUs(c.cpu, gen)
}

// run forwards until ctx ends, or for c.d (when set) from the start of
// forwarding. It builds its own topology when c names no interfaces.
func run(ctx context.Context, c *config, out io.Writer) (err error) {
	if err := c.validate(); err != nil {
		return err
	}
	if err := notStarted(ctx); err != nil {
		return err
	}
	var (
		ns      *netenv.Netns
		gen     *app.GenRun
		in, far *app.Topology
	)
	if c.a == "" {
		ns, err = netenv.NewNetns("")
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, ns.Close()) }()
		// in feeds the first interface; far swallows what the second
		// sends and counts it.
		if in, err = app.NewTopology(&app.TopologyOptions{PeerNS: ns, Generator: true, FrameLen: c.frameLen, GenBatch: 64, GenPPS: c.pps}); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, in.Close()) }()
		if far, err = app.NewTopology(&app.TopologyOptions{PeerNS: ns, HostSink: true}); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, far.Close()) }()
		c.a, c.b = in.Veth.Peer.Name, far.Veth.Peer.Name
		fmt.Fprintf(out, "built veth pairs %s <-> %s and %s <-> %s; the generator feeds %s, %s's far end counts\n",
			in.Veth.Host.Name, c.a, c.b, far.Veth.Host.Name, c.a, c.b)
		defer func() {
			if gen != nil {
				_, gerr := gen.Stop()
				err = errors.Join(err, gerr)
			}
		}()
		g := &generator{
			start: func() error {
				var err error
				gen, err = in.StartGenerator(c.genCPU)
				return err
			},
			// The generator's running count moves once per call of
			// 2^20 frames: only once it has stopped is it whole.
			stop: func() uint64 {
				gen.Stop() // its error is the deferred Stop's
				return gen.Sent()
			},
			far: func() uint64 {
				n, _ := far.HostReceived()
				return n
			},
		}
		return forward(ctx, c, ns, g, out)
	}
	// Missing, or down (nothing would be forwarded): refused naming the
	// flag, before anything is attached to either.
	for _, f := range []struct{ flag, name string }{{"a", c.a}, {"b", c.b}} {
		if err := app.CheckInterface(f.flag, f.name); err != nil {
			return err
		}
	}
	return forward(ctx, c, nil, nil, out)
}

// notStarted returns an error when ctx has ended before forwarding started
// (Ctrl-C while the pairs were built or the sockets opened): the run would
// otherwise start the generator, an unpaced call of 2^20 frames, and
// report a run of nothing.
func notStarted(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("stopped before forwarding started: %w", ctx.Err())
	default:
		return nil
	}
}

// generator is the built-in topology's traffic: start starts the
// generator, stop stops it and returns how many frames it offered, and
// far is what the far end has received.
type generator struct {
	start func() error
	stop  func() (offered uint64)
	far   func() uint64
}

// forward opens the two sockets (in ns, when given), starts g once they
// are ready, and forwards until ctx ends or, when c.d is set, for that
// long (setting up does not count, as in the other examples); with g, it
// then stops the generator and forwards on until nothing more arrives,
// and reports what the generator offered and what the far end received.
// It ends with XConnect.Finish, which forwards what the RX rings still
// hold.
func forward(ctx context.Context, c *config, ns *netenv.Netns, g *generator, out io.Writer) (err error) {
	frames := c.frames
	if frames == 0 {
		frames = 8 * c.ring
	}
	var a, b *xsk.Socket
	open := func() error {
		var err error
		a, err = xsk.Open(c.a, c.queue, &xsk.Options{NumFrames: frames, RxRingSize: c.ring, TxRingSize: c.ring,
			FillRingSize: c.ring, CompletionRingSize: c.ring})
		if err != nil {
			return err
		}
		b, err = xsk.Open(c.b, c.queue, &xsk.Options{ShareUMEM: a, RxRingSize: c.ring, TxRingSize: c.ring,
			FillRingSize: c.ring, CompletionRingSize: c.ring})
		return err
	}
	if ns != nil {
		err = ns.Do(open)
	} else {
		err = open()
	}
	defer func() {
		for _, s := range []*xsk.Socket{b, a} {
			if s != nil {
				err = errors.Join(err, s.Close())
			}
		}
	}()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "xconnect %s <-> %s queue %d: %s mode, one UMEM of %d frames, rings %d, batch %d\n",
		c.a, c.b, c.queue, a.Mode(), frames, c.ring, c.batch)
	if err := notStarted(ctx); err != nil {
		return err
	}

	unpin, err := app.PinThread(c.cpu)
	if err != nil {
		return err
	}
	defer unpin()
	if g != nil {
		if err := g.start(); err != nil {
			return err
		}
	}

	x := app.NewXConnect(a, b, c.batch)
	var far0 uint64
	if g != nil {
		far0 = g.far()
	}
	t0 := time.Now()
	if c.d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.d)
		defer cancel()
	}
	m := &meter{out: out, a: c.a, b: c.b, t0: t0, last: t0}
	counts := func() [2]uint64 { return [2]uint64{x.Fwd[0].Load(), x.Fwd[1].Load()} }
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		// Some batches between looks at the clock: a look costs less
		// than a batch, and 64 steps of up to two batches each take
		// milliseconds.
		for range 64 {
			if _, err := x.Step(); err != nil {
				return err
			}
		}
		select {
		case <-tick.C:
			// The counts over the time they were counted in: the
			// tick's own time may be well before this look.
			m.line(time.Now(), counts())
		default:
		}
	}
	// The run ends here: the rates cover it, not the drain below.
	end := time.Now()
	ran := counts()
	m.end(end, ran)
	var offered uint64
	if g != nil {
		// Forward what the generator sends until it has stopped, and
		// what is still on its way after that.
		stopped := make(chan uint64, 1)
		go func() { stopped <- g.stop() }()
		if offered, err = forwardUntil(x, stopped); err != nil {
			return err
		}
	}
	// What the RX rings still hold is forwarded too, once no more can
	// come (the sockets leave their XSKMAPs): without this, frames that
	// arrived just before the stop would be counted nowhere.
	if err := x.Finish(20*time.Millisecond, time.Now().Add(time.Second)); err != nil {
		return err
	}
	// What is still in the TX rings goes out now, so that the counts meet.
	deadline := time.Now().Add(time.Second)
	for _, s := range x.Socks {
		for {
			if err := s.Kick(); err != nil {
				return err
			}
			if _, err := s.Complete(); err != nil {
				return err
			}
			st, err := s.Stats()
			if err != nil {
				return err
			}
			if st.Completed >= st.TxPackets || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	m.summary(end.Sub(t0), ran, time.Since(end), counts(), g != nil)
	if u := [2]uint64{x.Unsent[0].Load(), x.Unsent[1].Load()}; u != [2]uint64{} {
		fmt.Fprintf(out, "received and not forwarded at the stop (the TX ring had no room): %d %s→%s, %d %s→%s\n",
			u[0], c.a, c.b, u[1], c.b, c.a)
	}
	if g != nil {
		fmt.Fprintf(out, "generator offered %d, the far end received %d\n", offered, g.far()-far0)
	}
	var empty []string
	for _, s := range x.Socks {
		st, err := s.Stats()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s ", s.Interface())
		app.PrintStats(out, st)
		if st.FillRingEmpty > 0 {
			empty = append(empty, s.Interface())
		}
	}
	if len(empty) > 0 {
		fillEmptyNote(out, strings.Join(empty, " and "), g != nil)
	}
	if fr := a.Frames(); fr.User() != 0 {
		return fmt.Errorf("frames still held after the run: %+v", fr)
	}
	return nil
}

// fillEmptyNote says what the fill ring empty drops of the sockets on
// ifnames mean, and how to have fewer: with gen, of the built-in
// topology's generator.
func fillEmptyNote(out io.Writer, ifnames string, gen bool) {
	fmt.Fprintf(out, "fill ring empty (%s): frames dropped by the kernel, before any copy, because the socket had no\n"+
		"free frame to receive into. A forwarded frame goes back to the fill ring once it has been sent, and the\n"+
		"kernel holds at most -ring receive frames per socket (copy mode): these are the frames that came while\n"+
		"the forwarder was behind the traffic, or off its CPU for longer than -ring frames last.\n", ifnames)
	if gen {
		fmt.Fprintf(out, "Unless paced (-gen-pps), the generator offers several times what the forwarder can take, and the\n"+
			"excess ends here: give -gen-pps below the forwarding rate, the forwarder a CPU of its own (-cpu), and a\n"+
			"larger -ring to ride out pauses.\n")
	} else {
		fmt.Fprintf(out, "Fewer come with a CPU of its own for the forwarder (-cpu) and a larger -ring to ride out pauses.\n")
	}
}

// meter prints the per-second lines: the frames forwarded each way since
// the previous line over the time since it, both read at the same look,
// labelled with the time since forwarding started.
type meter struct {
	out      io.Writer
	a, b     string
	t0, last time.Time
	prev     [2]uint64
	lines    int
}

func (m *meter) line(now time.Time, cur [2]uint64) {
	secs := now.Sub(m.last).Seconds()
	fmt.Fprintf(m.out, "%6.1fs  %s→%s %s  %s→%s %s\n", now.Sub(m.t0).Seconds(),
		m.a, m.b, app.FormatRate(float64(cur[0]-m.prev[0])/secs), m.b, m.a, app.FormatRate(float64(cur[1]-m.prev[1])/secs))
	m.prev, m.last = cur, now
	m.lines++
}

// end prints the line of a full second not yet reported, when forwarding
// stops: -d ends it with its last tick, which the loop may not have seen.
func (m *meter) end(now time.Time, cur [2]uint64) {
	if now.Sub(m.t0) >= time.Duration(m.lines+1)*time.Second {
		m.line(now, cur)
	}
}

// summary prints the closing lines. The first gives what was forwarded
// in the run (ran, counted when it ended) and its rates over the run alone,
// as the per-second lines do. The second gives what was forwarded after
// it (all is the final count), while the generator, with gen, finished
// its call and the rings drained, over drain: the rates leave it out, for
// the forwarder was then taking what had piled up, not keeping pace; the
// socket statistics count it.
func (m *meter) summary(run time.Duration, ran [2]uint64, drain time.Duration, all [2]uint64, gen bool) {
	rate := func(n uint64) string {
		if run <= 0 {
			return app.FormatRate(0)
		}
		return app.FormatRate(float64(n) / run.Seconds())
	}
	fmt.Fprintf(m.out, "\nforwarded %d packets %s→%s (%s) and %d %s→%s (%s) in the %.2fs run\n",
		ran[0], m.a, m.b, rate(ran[0]), ran[1], m.b, m.a, rate(ran[1]), run.Seconds())
	what := "the RX rings drained"
	if gen {
		what = "the generator stopped and the rings drained"
	}
	fmt.Fprintf(m.out, "after the run, while %s (%.2fs, not in the rates): %d more %s→%s and %d %s→%s, %d and %d in all\n",
		what, drain.Seconds(), all[0]-ran[0], m.a, m.b, all[1]-ran[1], m.b, m.a, all[0], all[1])
}

// forwardUntil forwards until stopped yields the generator's count, then
// until nothing has moved for a while (frames still in the veth pair's
// queues), or a second has passed; it returns the count.
func forwardUntil(x *app.XConnect, stopped <-chan uint64) (uint64, error) {
	var offered uint64
	for done := false; !done; {
		if _, err := x.Step(); err != nil {
			return 0, err
		}
		select {
		case offered = <-stopped:
			done = true
		default:
		}
	}
	const quiet = 20 * time.Millisecond
	deadline := time.Now().Add(time.Second)
	last := time.Now()
	for now := last; now.Sub(last) < quiet && now.Before(deadline); now = time.Now() {
		n, err := x.Step()
		if err != nil {
			return 0, err
		}
		if n > 0 {
			last = now
		}
	}
	return offered, nil
}
