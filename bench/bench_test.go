package bench

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

const (
	// genCPU runs the generator (and, on veth, the receiving end's NAPI
	// poll, which happens in its softirqs); loopCPU the code under test.
	genCPU  = 0
	loopCPU = 1
	// perIter is the number of packets per b.Loop iteration.
	perIter = 4096
	// frameLen is the frame length in bytes without FCS: DPDK testpmd's
	// txonly default ("64-byte packets").
	frameLen = 64
	// watchdog ends a benchmark whose packets stopped coming.
	watchdog = 2 * time.Minute
)

var (
	batches = []int{16, 64, 256}
	rings   = []int{512, 2048}
)

func topology(tb testing.TB, o app.TopologyOptions) *app.Topology {
	tb.Helper()
	testenv.RequirePrivileged(tb)
	if o.FrameLen == 0 {
		o.FrameLen = frameLen
	}
	t, err := app.NewTopology(&o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Error(err)
		}
	})
	return t
}

func config(batch, ring int) *app.Config {
	var c app.Config
	c.Defaults()
	c.Batch, c.RingSize, c.PacketSize = batch, ring, frameLen
	return &c
}

func openSocket(b *testing.B, t *app.Topology, c *app.Config) *xsk.Socket {
	b.Helper()
	var s *xsk.Socket
	err := t.Veth.Peer.Do(func() error {
		var err error
		s, err = xsk.Open(t.Veth.Peer.Name, 0, c.XSKOptions())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return s
}

// xskDrops counts what the kernel dropped on the way into a socket: no
// room in the RX ring, no frame in the fill ring.
func xskDrops(b testing.TB, s *xsk.Socket) func() uint64 {
	return func() uint64 {
		st, err := s.Stats()
		if err != nil {
			b.Fatal(err)
		}
		return st.RxRingFull + st.RxDropped
	}
}

// recvPath is a receiver under test: recv takes at least n packets (or
// fails), drops reads its drop counter.
type recvPath struct {
	recv  func(n uint64) (uint64, error)
	drops func() uint64
	stop  func() // makes recv return early (watchdog)
	// peer, when set, counts what arrived at the far end (l2fwd).
	peer func() uint64
	// mark, when set, is called at the start of the timed loop's first
	// iteration: a recv that counts a counter's movement counts from
	// there (see counterRecv).
	mark func() error
}

// benchRecv measures p while t's generator sends as fast as it can.
func benchRecv(b *testing.B, t *app.Topology, p recvPath) {
	b.Helper()
	gen, err := t.StartGenerator(genCPU)
	if err != nil {
		b.Fatal(err)
	}
	unpin, err := app.PinThread(loopCPU)
	if err != nil {
		gen.Stop()
		b.Fatal(err)
	}
	defer unpin()
	measureRecv(b, vethFeed{run: gen, host: t.Veth.Host}, p)
}

// feeder is the running generator as measureRecv sees it: a vethFeed.
type feeder interface {
	Stop() (time.Duration, error)
	CPU() time.Duration
	// Offered is the number of frames offered so far and the time it
	// was read at.
	Offered() (uint64, time.Time, error)
}

// vethFeed is a generator running on a topology's host end.
type vethFeed struct {
	run  *app.GenRun
	host netenv.Endpoint
}

func (f vethFeed) Stop() (time.Duration, error) { return f.run.Stop() }
func (f vethFeed) CPU() time.Duration           { return f.run.CPU() }

// Offered counts what the host end put on the peer end's ring (its
// tx_packets) and what veth dropped for want of room there (its
// tx_dropped): frame by frame, where the generator's own count moves once
// per call of 2^20 frames, seconds at the rates of a loaded machine.
func (f vethFeed) Offered() (uint64, time.Time, error) {
	c, err := pktgen.ReadCounters(f.host)
	return c.TxPackets + c.TxDropped, time.Now(), err
}

// measureRecv runs p's timed loop while gen feeds it, stops gen and
// reports the metrics.
func measureRecv(b *testing.B, gen feeder, p recvPath) {
	b.Helper()
	stopped := false
	stopGen := func() {
		if !stopped {
			stopped = true
			if _, err := gen.Stop(); err != nil {
				b.Error(err)
			}
		}
	}
	defer stopGen()
	dog := time.AfterFunc(watchdog, p.stop)
	defer dog.Stop()

	// Warm up: the first packets show that the path works before the
	// clock starts.
	if n, err := p.recv(1); err != nil || n == 0 {
		b.Fatalf("no packet arrived (err %v)", err)
	}
	var p0 uint64
	if p.peer != nil {
		p0 = p.peer()
	}
	// What the generator offers is read (by netlink, tens of
	// microseconds) just before the timed loop and just after it, not in
	// it: the generator goes on at its rate through b.Loop's pauses.
	o0, t0, err := gen.Offered()
	if err != nil {
		b.Fatal(err)
	}
	// Drops and CPU time are read inside the timed loop, at the start of
	// its first iteration and at the end of each: b.Loop stops the world
	// (to read memory statistics) as it starts and stops the timer, and
	// what happens in those pauses, which can be longer than a whole
	// iteration, is not the loop's doing (the ring overflows while the
	// loop waits). The process's CPU time and the generator thread's are
	// on one clock (the scheduler's); read so that the process's span
	// holds the generator's, and the difference cannot go negative.
	var (
		got            uint64
		d0, d1         uint64
		c0, c1, g0, g1 time.Duration
	)
	// allocs/op counts the whole process's allocations over the loop,
	// the generator's goroutine's among them (see the package doc).
	b.ReportAllocs()
	for b.Loop() {
		if got == 0 {
			if p.mark != nil {
				if err := p.mark(); err != nil {
					b.Fatal(err)
				}
			}
			d0, c0 = p.drops(), app.ProcessCPU()
			g0 = gen.CPU()
		}
		n, err := p.recv(perIter)
		if err != nil {
			b.Fatal(err)
		}
		if n < perIter {
			b.Fatalf("watchdog: received %d of %d packets in %v", n, perIter, watchdog)
		}
		got += n
		g1 = gen.CPU()
		c1, d1 = app.ProcessCPU(), p.drops()
	}
	// The timed loop's span, the one ns/op is over.
	elapsed := b.Elapsed()
	o1, t1, err := gen.Offered()
	if err != nil {
		b.Fatal(err)
	}
	stopGen()
	if d1 < d0 {
		b.Fatalf("drops went back from %d to %d over the timed loop", d0, d1)
	}
	if p.peer != nil {
		time.Sleep(10 * time.Millisecond) // let the last frames land
		b.ReportMetric(float64(p.peer()-p0)/elapsed.Seconds(), "peer-pps")
	}
	cpu := max(c1-c0-(g1-g0), 0)
	b.ReportMetric(float64(got)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(got), "ns/pkt")
	b.ReportMetric(float64(o1-o0)/t1.Sub(t0).Seconds(), "offered-pps")
	b.ReportMetric(float64(d1-d0), "drops")
	b.ReportMetric(cpu.Seconds()/(float64(got)/1e6), "cpu-s/Mpkt")
}

// benchSend measures send while t's host end counts what arrives. drain,
// when not nil, pushes out what send queued and did not get sent (an
// AF_XDP TX ring that was not kicked again): it runs after the warm-up
// and after the timed loop, so that "lost" counts only frames that were
// sent and did not arrive, not frames still waiting in a ring.
func benchSend(b *testing.B, t *app.Topology, send func(n uint64) (uint64, error), drain func() error) {
	b.Helper()
	unpin, err := app.PinThread(loopCPU)
	if err != nil {
		b.Fatal(err)
	}
	defer unpin()
	measureSend(b, t.HostReceived, send, drain)
}

// measureSend runs benchSend's timed loop over send and reports the
// metrics; arrived counts the frames that reached the far end.
func measureSend(b *testing.B, arrived func() (uint64, error), send func(n uint64) (uint64, error), drain func() error) {
	b.Helper()
	if drain == nil {
		drain = func() error { return nil }
	}
	if _, err := send(perIter); err != nil { // warm up
		b.Fatal(err)
	}
	if err := drain(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	p0, err := arrived()
	if err != nil {
		b.Fatal(err)
	}
	// CPU time is read inside the timed loop, as in measureRecv.
	var (
		sent   uint64
		c0, c1 time.Duration
	)
	b.ReportAllocs()
	for b.Loop() {
		if sent == 0 {
			c0 = app.ProcessCPU()
		}
		n, err := send(perIter)
		if err != nil {
			b.Fatal(err)
		}
		sent += n
		c1 = app.ProcessCPU()
	}
	elapsed := b.Elapsed()
	cpu := c1 - c0
	if err := drain(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // let the last frames land
	p1, err := arrived()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(sent), "ns/pkt")
	b.ReportMetric(float64(p1-p0)/elapsed.Seconds(), "peer-pps")
	lost := int64(sent) - int64(p1-p0)
	b.ReportMetric(float64(max(lost, 0)), "lost")
	b.ReportMetric(cpu.Seconds()/(float64(sent)/1e6), "cpu-s/Mpkt")
}

// sweep runs fn for every ring and batch size.
func sweep(b *testing.B, fn func(b *testing.B, c *app.Config)) {
	for _, ring := range rings {
		for _, batch := range batches {
			b.Run(fmt.Sprintf("ring=%d/batch=%d", ring, batch), func(b *testing.B) {
				fn(b, config(batch, ring))
			})
		}
	}
}

func rxDrop(b *testing.B, t *app.Topology, c *app.Config) {
	s := openSocket(b, t, c)
	l := app.NewLoop(s, c)
	benchRecv(b, t, recvPath{recv: l.RxDrop, drops: xskDrops(b, s), stop: func() { l.Stop.Store(true) }})
}

// BenchmarkRxDrop receives and drops 64-byte frames on an AF_XDP socket
// (copy mode, spinning) fed at full speed.
func BenchmarkRxDrop(b *testing.B) {
	t := topology(b, app.TopologyOptions{Generator: true})
	sweep(b, func(b *testing.B, c *app.Config) { rxDrop(b, t, c) })
}

// BenchmarkRxDropWait compares the ways of idling: spin, poll(2) whenever
// the RX ring is empty, spin-then-poll, and a fixed nap; and busy polling.
func BenchmarkRxDropWait(b *testing.B) {
	t := topology(b, app.TopologyOptions{Generator: true})
	for _, w := range []struct {
		name string
		set  func(c *app.Config)
	}{
		{"spin", func(c *app.Config) { c.Wait = app.WaitSpin }},
		{"poll", func(c *app.Config) { c.Wait = app.WaitPoll }},
		{"hybrid", func(c *app.Config) { c.Wait = app.WaitHybrid }},
		{"nap", func(c *app.Config) { c.Wait = app.WaitNap }},
		{"spin/busy-poll", func(c *app.Config) { c.Wait = app.WaitSpin; c.BusyPoll = 20 * time.Microsecond }},
		{"spin/no-wakeup", func(c *app.Config) { c.Wait = app.WaitSpin; c.NeedWakeup = false }},
	} {
		b.Run("wait="+w.name, func(b *testing.B) {
			c := config(64, 2048)
			w.set(c)
			rxDrop(b, t, c)
		})
	}
}

func txOnly(b *testing.B, t *app.Topology, c *app.Config) {
	s := openSocket(b, t, c)
	l := app.NewLoop(s, c)
	frame := make([]byte, c.PacketSize)
	h := packet.UDP{SrcMAC: t.Veth.Peer.MAC, DstMAC: t.Veth.Host.MAC, SrcIP: t.Veth.Peer.IP(), DstIP: t.Veth.Host.IP(),
		SrcPort: 40000, DstPort: 9000}
	if _, err := h.Write(frame, len(frame)-packet.HeadersLen); err != nil {
		b.Fatal(err)
	}
	if err := l.PrepareTx(frame); err != nil {
		b.Fatal(err)
	}
	benchSend(b, t, l.TxOnly, func() error { return drainTx(s, time.Second) })
	if err := l.ReleaseTx(); err != nil {
		b.Fatal(err)
	}
}

// drainTx kicks s until every frame queued on its TX ring has been sent
// and completed, or timeout passes. In copy mode the kernel sends inside
// the kick; a loop that stops queuing leaves whatever its last kick did
// not get to in the ring.
func drainTx(s *xsk.Socket, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := s.Complete(); err != nil {
			return err
		}
		st, err := s.Stats()
		if err != nil {
			return err
		}
		if st.Completed >= st.TxPackets {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drain tx: %d of %d queued frames completed after %v", st.Completed, st.TxPackets, timeout)
		}
		if err := s.Kick(); err != nil {
			return err
		}
	}
}

// BenchmarkTxOnly sends 64-byte frames from an AF_XDP socket (copy mode)
// to the other end of the veth pair, which drops them in XDP and counts
// them (peer-pps).
func BenchmarkTxOnly(b *testing.B) {
	t := topology(b, app.TopologyOptions{HostSink: true})
	sweep(b, func(b *testing.B, c *app.Config) { txOnly(b, t, c) })
}

// BenchmarkTxOnlyKnobs measures what the library controls on the transmit
// side of copy mode: need_wakeup, the TX budget per kick, busy polling.
func BenchmarkTxOnlyKnobs(b *testing.B) {
	t := topology(b, app.TopologyOptions{HostSink: true})
	for _, k := range []struct {
		name string
		set  func(c *app.Config)
	}{
		{"default", func(c *app.Config) {}},
		{"no-wakeup", func(c *app.Config) { c.NeedWakeup = false }},
		{"tx-budget=64", func(c *app.Config) { c.TxBudget = 64 }},
		{"tx-budget=256", func(c *app.Config) { c.TxBudget = 256 }},
		{"busy-poll", func(c *app.Config) { c.BusyPoll = 20 * time.Microsecond }},
		{"batch=32", func(c *app.Config) { c.Batch = 32 }},
	} {
		b.Run(k.name, func(b *testing.B) {
			c := config(256, 2048)
			k.set(c)
			txOnly(b, t, c)
		})
	}
	// Threaded NAPI on the receiving end moves its work (veth's NAPI
	// poll, XDP) off the sending CPU into a kernel thread.
	if err := app.SetThreadedNAPI(t.Veth.Host, true); err != nil {
		b.Fatal(err)
	}
	defer app.SetThreadedNAPI(t.Veth.Host, false)
	b.Run("peer-threaded-napi", func(b *testing.B) { txOnly(b, t, config(256, 2048)) })
	b.Run("peer-threaded-napi/tx-budget=256", func(b *testing.B) {
		c := config(256, 2048)
		c.TxBudget = 256
		txOnly(b, t, c)
	})
}

// BenchmarkL2Fwd forwards 64-byte frames back out of the queue they came
// in on, MAC addresses swapped: fed by the generator at full speed,
// counted at the far end (peer-pps; drops are the socket's).
func BenchmarkL2Fwd(b *testing.B) {
	t := topology(b, app.TopologyOptions{Generator: true, HostSink: true})
	sweep(b, func(b *testing.B, c *app.Config) {
		s := openSocket(b, t, c)
		l := app.NewLoop(s, c)
		benchRecv(b, t, recvPath{recv: l.L2Fwd, drops: xskDrops(b, s), stop: func() { l.Stop.Store(true) },
			peer: func() uint64 {
				n, err := t.HostReceived()
				if err != nil {
					b.Fatal(err)
				}
				return n
			}})
	})
}

// BenchmarkXDPDrop is the ceiling for any receiver on this veth pair: the
// kernel dropping the generator's frames in XDP on the peer end, nothing
// else (pps is what the peer end took off its ring).
func BenchmarkXDPDrop(b *testing.B) {
	t := topology(b, app.TopologyOptions{Generator: true, PeerSink: pktgen.Drop})
	benchRecv(b, t, counterRecv(t.PeerReceived))
}

// counterRecv is a receiver that the kernel runs by itself, counted by
// read (the peer end's rx_packets): recv waits until the counter has moved
// by at least n since the last reading of the call before it (or of mark,
// or, the first time, of its own start) and returns by how much. Each
// call counts from where the last one stopped, so that what arrives
// between two calls (a reading takes tens of microseconds) is counted,
// and once.
func counterRecv(read func() (uint64, error)) recvPath {
	var (
		stop  atomic.Bool // set by the watchdog's goroutine
		last  uint64
		based bool
	)
	mark := func() (err error) {
		last, err = read()
		based = err == nil
		return err
	}
	return recvPath{
		recv: func(n uint64) (uint64, error) {
			if !based {
				if err := mark(); err != nil {
					return 0, err
				}
			}
			p0 := last
			for !stop.Load() {
				p, err := read()
				if err != nil {
					return 0, err
				}
				if p-p0 >= n {
					last = p
					return p - p0, nil
				}
				time.Sleep(100 * time.Microsecond)
			}
			return 0, nil
		},
		drops: func() uint64 { return 0 },
		stop:  func() { stop.Store(true) },
		mark:  mark,
	}
}

func baselineRecv(b *testing.B, r baseline.Receiver) recvPath {
	b.Cleanup(func() { r.Close() })
	var deadline atomic.Int64 // set to 0 by the watchdog's goroutine
	deadline.Store(int64(watchdog))
	return recvPath{
		recv: func(n uint64) (uint64, error) {
			c, err := r.Receive(n, time.Now().Add(time.Duration(deadline.Load())))
			return c.Packets, err
		},
		drops: func() uint64 {
			st, err := r.Stats()
			if err != nil {
				b.Fatal(err)
			}
			return st.Drops
		},
		stop: func() { deadline.Store(0) },
	}
}

// BenchmarkUDPRecv is the kernel's UDP receive path with recvmmsg, 64
// datagrams a call, fed like BenchmarkRxDrop (an XDP_PASS program on the
// peer end lets generated frames in).
func BenchmarkUDPRecv(b *testing.B) {
	t := topology(b, app.TopologyOptions{Generator: true, PeerSink: pktgen.Pass})
	var r *baseline.UDPReceiver
	err := t.Veth.Peer.Do(func() (err error) {
		r, err = baseline.NewUDPReceiver(netip.AddrPortFrom(t.Veth.Peer.IP(), 9000), nil)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	benchRecv(b, t, baselineRecv(b, r))
}

// BenchmarkAFPacketRecv is AF_PACKET with a TPACKET_V3 receive ring.
func BenchmarkAFPacketRecv(b *testing.B) {
	t := topology(b, app.TopologyOptions{Generator: true, PeerSink: pktgen.Pass})
	var r *baseline.AFPacketReceiver
	err := t.Veth.Peer.Do(func() (err error) {
		r, err = baseline.NewAFPacketReceiver(t.Veth.Peer.Index, nil)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	benchRecv(b, t, baselineRecv(b, r))
}

// BenchmarkUDPSend is the kernel's UDP send path with sendmmsg, 64
// datagrams a call, to the host end (XDP_DROP there, as for TxOnly).
func BenchmarkUDPSend(b *testing.B) {
	t := topology(b, app.TopologyOptions{HostSink: true})
	var s *baseline.UDPSender
	err := t.Veth.Peer.Do(func() (err error) {
		s, err = baseline.NewUDPSender(netip.AddrPort{}, netip.AddrPortFrom(t.Veth.Host.IP(), 9000),
			&baseline.UDPOptions{PayloadLen: frameLen - packet.HeadersLen})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	benchSend(b, t, func(n uint64) (uint64, error) {
		c, err := s.Send(n)
		return c.Packets, err
	}, nil)
}

// BenchmarkAFPacketSend is AF_PACKET with a TPACKET_V2 transmit ring,
// bypassing the qdisc.
func BenchmarkAFPacketSend(b *testing.B) {
	t := topology(b, app.TopologyOptions{HostSink: true})
	var s *baseline.AFPacketSender
	err := t.Veth.Peer.Do(func() (err error) {
		s, err = baseline.NewAFPacketSender(t.Veth.Peer.Index, &baseline.AFPacketTxOptions{QdiscBypass: true})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	frame := make([]byte, frameLen)
	h := packet.UDP{SrcMAC: t.Veth.Peer.MAC, DstMAC: t.Veth.Host.MAC, SrcIP: t.Veth.Peer.IP(), DstIP: t.Veth.Host.IP(),
		SrcPort: 40000, DstPort: 9000}
	if _, err := h.Write(frame, frameLen-packet.HeadersLen); err != nil {
		b.Fatal(err)
	}
	benchSend(b, t, func(n uint64) (uint64, error) {
		c, err := s.Send(frame, n)
		return c.Packets, err
	}, nil)
}

// openRaw opens a socket on t's peer end; the caller is inside its
// namespace and closes it.
func openRaw(t *app.Topology, c *app.Config) (*xsk.Socket, error) {
	return xsk.Open(t.Veth.Peer.Name, 0, c.XSKOptions())
}
