package matrix

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
)

// Sample is one measurement of one cell.
type Sample struct {
	// Seconds is the length of the measured window.
	Seconds float64 `json:"seconds"`
	// Sent is what the generator, sender or client offered and Received
	// what the far end counted of it, so that Sent-Received is what was
	// lost. Sent, Received, Lost and Drops cover one span, with nothing in
	// flight at either edge: for rx and tx the whole measurement, from
	// before the first frame to the end of the drain (warm-up included);
	// for rr the requests of the measured window, until replies stop
	// coming in and both ends have taken what their sockets hold.
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"received"`
	// PPS is packets received per second in the window (for rr: round
	// trips per second).
	PPS float64 `json:"pps"`
	// OfferedPPS is what the sender offered per second in the window; for
	// rx, whose generator's count moves a call of frames at a time, over
	// the span of its calls that encloses the window.
	OfferedPPS float64 `json:"offered_pps"`
	// CPU per packet, in nanoseconds: AppNs of the thread that does the
	// measured work (receiver, sender, echo), from getrusage; SoftirqNs and
	// KernelNs (system + softirq + irq) machine-wide from /proc/stat.
	AppNs     float64 `json:"app_ns_per_pkt"`
	SoftirqNs float64 `json:"softirq_ns_per_pkt"`
	KernelNs  float64 `json:"kernel_ns_per_pkt"`
	// Round-trip percentiles in microseconds (rr only), by nearest rank,
	// within 1/4096 of the exact ones (see rttHist).
	P50  float64 `json:"p50_us,omitempty"`
	P99  float64 `json:"p99_us,omitempty"`
	P999 float64 `json:"p999_us,omitempty"`
	// Lost is Sent - Received. Received above Sent fails the
	// measurement: something other than the sender's frames was counted.
	Lost uint64 `json:"lost"`
	// Drops are the counters that say where packets were dropped: the
	// receiving sockets' own (rx's receiver; rr's client and echo) and
	// every interface's rx/tx_dropped and
	// errors that moved, named by role ("B's veth rx_dropped"), over the
	// span of Sent and Received.
	Drops map[string]uint64 `json:"drops,omitempty"`
}

// cellInfo describes how a cell was measured.
type cellInfo struct {
	Generator string
	xdpInfo
	// Counter is the XDP mode of tx's counting program.
	Counter string
}

// lost is what of sent did not arrive. More received than sent means the
// count took in frames that were not the sender's, and the measurement is
// wrong, not lossless.
func lost(sent, received uint64) (uint64, error) {
	if received > sent {
		return 0, fmt.Errorf("B counted %d packets, more than the %d sent: it counted something else", received, sent)
	}
	return sent - received, nil
}

// slice is how long a measurement waits, sends or receives without
// looking at its context: an interrupted run stops within about that.
const slice = 50 * time.Millisecond

const drainTime = 50 * time.Millisecond

// rr waits for late replies until none has come for stragglerQuiet, or
// for stragglerMax at most, before it stops the echo, and again before it
// stops the receiver.
const (
	stragglerQuiet = 4 * drainTime
	stragglerMax   = 3 * time.Second
)

// sleepCtx sleeps for d, or until ctx ends, and then returns its error.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

type measurer struct {
	cfg Config
	// read takes the readings at a window's ends; nil is readNow. Tests
	// replace it to see which moment each reading was taken at.
	read func() (reading, error)
	// wrapEcho and wrapClient, if set, wrap rr's echo and client as they
	// are opened. Tests use them to starve one end.
	wrapEcho   func(rrEcho) rrEcho
	wrapClient func(rrClient) rrClient
}

func (m *measurer) measure(ctx context.Context, t *topo, path, mode string, size int) (Sample, cellInfo, error) {
	switch mode {
	case "rx":
		return m.rx(ctx, t, path, size)
	case "tx":
		return m.tx(ctx, t, path, size)
	case "rr":
		return m.rr(ctx, t, path, size)
	}
	return Sample{}, cellInfo{}, fmt.Errorf("unknown mode %q", mode)
}

// reading is the clock and the CPU times at one moment.
type reading struct {
	at time.Time
	// thread is the calling thread's CPU time; sys the machine's.
	thread time.Duration
	sys    sysCPU
}

// readNow takes a reading now, on the calling thread.
func readNow() (reading, error) {
	r := reading{at: time.Now(), thread: threadCPU()}
	var err error
	r.sys, err = readSysCPU()
	return r, err
}

// window holds the reading taken at the start of a measured window.
type window struct {
	start reading
	read  func() (reading, error)
}

func (m *measurer) open() (window, error) {
	read := m.read
	if read == nil {
		read = readNow
	}
	r, err := read()
	return window{start: r, read: read}, err
}

// span is what a window covered, from its start to its end: time, the
// thread's CPU and the machine's.
type span struct {
	el     time.Duration
	thread time.Duration
	sys    sysCPU
}

// end takes the window's end reading, at the moment the measured work
// ends: what happens after it (a wait for late replies, say) is not the
// window's.
func (w window) end() (span, error) {
	r, err := w.read()
	if err != nil {
		return span{}, err
	}
	return span{el: r.at.Sub(w.start.at), thread: r.thread - w.start.thread, sys: r.sys.sub(w.start.sys)}, nil
}

// finish fills s from the span: its length, packets per second and CPU
// per packet over pkts.
func (sp span) finish(s *Sample, pkts uint64) {
	s.Seconds = sp.el.Seconds()
	s.PPS = float64(pkts) / sp.el.Seconds()
	if pkts > 0 {
		d := sp.sys
		s.AppNs = float64(sp.thread.Nanoseconds()) / float64(pkts)
		s.SoftirqNs = float64(d.Softirq.Nanoseconds()) / float64(pkts)
		s.KernelNs = float64((d.System + d.Softirq + d.Irq).Nanoseconds()) / float64(pkts)
	}
}

// close ends the window now and finishes s from it over pkts.
func (w window) close(s *Sample, pkts uint64) error {
	sp, err := w.end()
	if err != nil {
		return err
	}
	sp.finish(s, pkts)
	return nil
}

// counters are the drop counters of a topology at one moment: every
// interface's, by role, and the receiving socket's, if any, by name.
type counters map[string]uint64

// counters reads t's interface counters and, unless socket is nil, the
// socket's.
func (t *topo) counters(socket func() (map[string]uint64, error)) (counters, error) {
	links, err := t.linkCounters()
	if err != nil {
		return nil, err
	}
	c := counters{}
	for name, l := range links {
		c[name+" rx_dropped"] = l.RxDropped
		c[name+" tx_dropped"] = l.TxDropped
		c[name+" rx_errors"] = l.RxErrors
		c[name+" tx_errors"] = l.TxErrors
	}
	if socket != nil {
		sk, err := socket()
		if err != nil {
			return nil, err
		}
		for k, v := range sk {
			c[k] = v
		}
	}
	return c, nil
}

// drops are the counters that moved from before to after; a counter that
// did not exist before (a link made in between) counts from zero.
func drops(before, after counters) map[string]uint64 {
	var out map[string]uint64
	for k, a := range after {
		if a > before[k] {
			if out == nil {
				out = map[string]uint64{}
			}
			out[k] = a - before[k]
		}
	}
	return out
}

// recvFor receives with rcv until it has n packets (0: no limit) or
// deadline passes, looking at ctx between slices.
func recvFor(ctx context.Context, rcv receiver, n uint64, deadline time.Time) (uint64, error) {
	var got uint64
	for n == 0 || got < n {
		if err := ctx.Err(); err != nil {
			return got, err
		}
		now := time.Now()
		if !now.Before(deadline) {
			break
		}
		want := uint64(0)
		if n > 0 {
			want = n - got
		}
		k, err := rcv.recv(want, earlier(deadline, now.Add(slice)))
		got += k
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// sendFor sends with snd until deadline, looking at ctx between slices.
func sendFor(ctx context.Context, snd sender, deadline time.Time) (uint64, error) {
	var sent uint64
	for {
		if err := ctx.Err(); err != nil {
			return sent, err
		}
		now := time.Now()
		if !now.Before(deadline) {
			return sent, nil
		}
		k, err := snd.send(earlier(deadline, now.Add(slice)))
		sent += k
		if err != nil {
			return sent, err
		}
	}
}

// rx: pktgen sends into the topology; path's receiver in B takes it.
func (m *measurer) rx(ctx context.Context, t *topo, path string, size int) (s Sample, info cellInfo, err error) {
	// Sinks first: the kernel refuses an XDP program on a device whose
	// upper device (a macvlan or VXLAN on it) already has one, but not the
	// other way round.
	if !t.genSender {
		for _, ep := range t.passSinks {
			if path == "afxdp" && ep.NS == t.B.NS && ep.Index == t.B.Index {
				continue // the socket's own program opens the way
			}
			sink, err := pktgen.AttachSink(ep, pktgen.Pass)
			if err != nil {
				return s, info, err
			}
			defer sink.Close()
		}
	}
	var rcv receiver
	if err := t.B.Do(func() (err error) {
		rcv, info.xdpInfo, err = newReceiver(path, t.B)
		return err
	}); err != nil {
		return s, info, fmt.Errorf("open %s receiver on B: %w", path, err)
	}
	defer func() { err = errors.Join(err, rcv.close()) }()
	g, err := newGenerator(t, size)
	if err != nil {
		return s, info, err
	}
	defer g.close()
	info.Generator = g.name

	// Every counter from here, before the first frame, to the end of the
	// drain.
	c0, err := t.counters(rcv.drops)
	if err != nil {
		return s, info, err
	}
	gctx, stopGen := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var genErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		genErr = g.run(gctx)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopGen()
			wg.Wait()
		}
	}
	defer stop()

	unpin := pinThread(1)
	defer unpin()
	total, err := recvFor(ctx, rcv, 1, time.Now().Add(m.cfg.Warmup))
	if err != nil {
		return s, info, fmt.Errorf("receive: %w", err)
	}
	if total == 0 {
		stop()
		return s, info, fmt.Errorf("no frame reached B's %s receiver within %v (generator: %v, offered %d)", path, m.cfg.Warmup, genErr, g.total())
	}
	w, err := m.open()
	if err != nil {
		return s, info, err
	}
	n, err := recvFor(ctx, rcv, 0, w.start.at.Add(m.cfg.Duration))
	total += n
	if err != nil {
		return s, info, fmt.Errorf("receive: %w", err)
	}
	if err := w.close(&s, n); err != nil {
		return s, info, err
	}
	end := time.Now()
	stop()
	s.OfferedPPS = g.rate(w.start.at, end)
	if genErr != nil && !errors.Is(genErr, context.Canceled) {
		return s, info, fmt.Errorf("generator: %w", genErr)
	}
	more, err := rcv.recv(0, time.Now().Add(drainTime))
	total += more
	if err != nil {
		return s, info, fmt.Errorf("receive: %w", err)
	}
	s.Sent, s.Received = g.total(), total
	if s.Lost, err = lost(s.Sent, s.Received); err != nil {
		return s, info, err
	}
	c1, err := t.counters(rcv.drops)
	if err != nil {
		return s, info, err
	}
	s.Drops = drops(c0, c1)
	return s, info, nil
}

// tx: path's sender in A sends as fast as it can; a counting XDP program
// on B's interface takes what arrives.
func (m *measurer) tx(ctx context.Context, t *topo, path string, size int) (s Sample, info cellInfo, err error) {
	sink, err := attachCountSink(t.B, sinkMatch{DstMAC: t.B.MAC, DstIP: t.B.IP()})
	if err != nil {
		return s, info, err
	}
	defer func() { err = errors.Join(err, sink.close()) }()
	frame := make([]byte, frameLen(size))
	if _, err := t.requestFrame(frame, payloadLen(size)); err != nil {
		return s, info, err
	}
	var snd sender
	if err := t.A.Do(func() (err error) {
		snd, info.xdpInfo, err = newSender(path, t, frame, payloadLen(size))
		return err
	}); err != nil {
		return s, info, fmt.Errorf("open %s sender on A: %w", path, err)
	}
	defer func() { err = errors.Join(err, snd.close()) }()
	info.Generator = "sender in A; XDP counter (" + sink.mode + ") on B"
	info.Counter = sink.mode

	unpin := pinThread(0)
	defer unpin()
	// Every counter from here, before the first frame, to the end of the
	// drain.
	c0, err := t.counters(nil)
	if err != nil {
		return s, info, err
	}
	var sent uint64
	warmEnd := time.Now().Add(m.cfg.Warmup)
	for {
		if err := ctx.Err(); err != nil {
			return s, info, err
		}
		n, err := snd.send(time.Now().Add(5 * time.Millisecond))
		sent += n
		if err != nil {
			return s, info, fmt.Errorf("send: %w", err)
		}
		got, err := sink.total()
		if err != nil {
			return s, info, err
		}
		if got > 0 {
			break
		}
		if time.Now().After(warmEnd) {
			return s, info, fmt.Errorf("none of the %d frames A sent by %s reached B (as UDP to %s port %d, to MAC %s) within %v",
				sent, path, t.B.IP(), serverPort, t.B.MAC, m.cfg.Warmup)
		}
	}
	k0, err := sink.total()
	if err != nil {
		return s, info, err
	}
	w, err := m.open()
	if err != nil {
		return s, info, err
	}
	n, err := sendFor(ctx, snd, w.start.at.Add(m.cfg.Duration))
	sent += n
	if err != nil {
		return s, info, fmt.Errorf("send: %w", err)
	}
	k1, err := sink.total()
	if err != nil {
		return s, info, err
	}
	// CPU per packet sent: the sender's work is the measured work.
	if err := w.close(&s, n); err != nil {
		return s, info, err
	}
	s.OfferedPPS = s.PPS
	s.PPS = float64(k1-k0) / s.Seconds
	time.Sleep(drainTime)
	if s.Received, err = sink.total(); err != nil {
		return s, info, err
	}
	s.Sent = sent
	if s.Lost, err = lost(s.Sent, s.Received); err != nil {
		return s, info, err
	}
	c1, err := t.counters(nil)
	if err != nil {
		return s, info, err
	}
	s.Drops = drops(c0, c1)
	return s, info, nil
}

// rr: A's client sends requests at cfg.Rate to the echo in B, both on
// path, and times the round trips.
func (m *measurer) rr(ctx context.Context, t *topo, path string, size int) (s Sample, info cellInfo, err error) {
	pl := payloadLen(size)
	var echo rrEcho
	var ex xdpInfo
	if err := t.B.Do(func() (err error) {
		echo, ex, err = newEcho(path, t.B)
		return err
	}); err != nil {
		return s, info, fmt.Errorf("open %s echo on B: %w", path, err)
	}
	defer func() { err = errors.Join(err, echo.close()) }()
	if m.wrapEcho != nil {
		echo = m.wrapEcho(echo)
	}
	var cl rrClient
	if err := t.A.Do(func() (err error) {
		cl, _, err = newClient(path, t, pl)
		return err
	}); err != nil {
		return s, info, fmt.Errorf("open %s client on A: %w", path, err)
	}
	defer func() { err = errors.Join(err, cl.close()) }()
	if m.wrapClient != nil {
		cl = m.wrapClient(cl)
	}
	info.xdpInfo = ex
	info.Generator = fmt.Sprintf("%s client in A at %d/s", path, m.cfg.Rate)

	// The echo, on its own thread, whose CPU time is the cell's.
	stopEcho := make(chan struct{})
	var wg sync.WaitGroup
	var echoErr error
	var echoCPU time.Duration
	var echoN uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		unpin := pinThread(1)
		defer unpin()
		c0 := threadCPU()
		echoN, echoErr = echo.serve(stopEcho)
		echoCPU = threadCPU() - c0
	}()
	stopEchoing := func() {
		select {
		case <-stopEcho:
		default:
			close(stopEcho)
		}
		wg.Wait()
	}
	defer stopEchoing()

	// The client's receiver collects round trips of requests from
	// measureFrom on.
	epoch := time.Now()
	var mu sync.Mutex
	var replies, measured uint64
	var measureFrom uint64 = 1 << 63
	// Round-trip times go into a histogram, whose memory does not grow
	// with the rate or the duration.
	rtts := new(rttHist)
	stopRecv := make(chan struct{})
	var rwg sync.WaitGroup
	var recvErr error
	onReply := func(p []byte) {
		seq, sent, ok := unstamp(p)
		if !ok {
			return
		}
		rtt := time.Since(epoch) - sent
		mu.Lock()
		replies++
		if seq >= measureFrom {
			measured++
			rtts.add(rtt)
		}
		mu.Unlock()
	}
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for {
			select {
			case <-stopRecv:
				// The replies A's socket already holds are
				// the window's too.
				recvErr = cl.recv(0, onReply)
				return
			default:
			}
			if err := cl.recv(pollSlice, onReply); err != nil {
				recvErr = err
				return
			}
		}
	}()
	stopReceiver := func() {
		select {
		case <-stopRecv:
		default:
			close(stopRecv)
		}
		rwg.Wait()
	}
	defer stopReceiver()

	unpin := pinThread(0)
	defer unpin()
	payload := make([]byte, pl)
	var seq uint64
	// Warm up: one request every millisecond until one comes back.
	warmEnd := time.Now().Add(m.cfg.Warmup)
	for {
		if err := ctx.Err(); err != nil {
			return s, info, err
		}
		stamp(payload, seq, epoch)
		seq++
		if err := cl.send(payload); err != nil {
			return s, info, fmt.Errorf("send request: %w", err)
		}
		time.Sleep(time.Millisecond)
		mu.Lock()
		r := replies
		mu.Unlock()
		if r > 0 {
			break
		}
		if time.Now().After(warmEnd) {
			// Their errors are theirs to write until they have stopped.
			stopReceiver()
			stopEchoing()
			err := fmt.Errorf("no %s reply from B within %v (%d requests)", path, m.cfg.Warmup, seq)
			if echoErr != nil {
				err = fmt.Errorf("%w: echo: %w", err, echoErr)
			}
			if recvErr != nil {
				err = fmt.Errorf("%w: client receive: %w", err, recvErr)
			}
			return s, info, err
		}
	}
	time.Sleep(5 * time.Millisecond) // let warm-up replies pass
	mu.Lock()
	measureFrom = seq
	mu.Unlock()

	// The sockets' own counters too: the client's and the echo's
	// receive buffers are where rr loses most.
	sockets := func() (map[string]uint64, error) {
		a, err := cl.drops()
		if err != nil {
			return nil, err
		}
		b, err := echo.drops()
		if err != nil {
			return nil, err
		}
		for k, v := range b {
			a[k] = v
		}
		return a, nil
	}
	c0, err := t.counters(sockets)
	if err != nil {
		return s, info, err
	}
	w, err := m.open()
	if err != nil {
		return s, info, err
	}
	interval := time.Second / time.Duration(m.cfg.Rate)
	var n uint64
	for {
		due := w.start.at.Add(time.Duration(n) * interval)
		now := time.Now()
		if now.Sub(w.start.at) >= m.cfg.Duration {
			break
		}
		if err := ctx.Err(); err != nil {
			return s, info, err
		}
		if err := sleepCtx(ctx, due.Sub(now)); err != nil {
			return s, info, err
		}
		stamp(payload, seq, epoch)
		seq++
		n++
		if err := cl.send(payload); err != nil {
			return s, info, fmt.Errorf("send request: %w", err)
		}
	}
	// The window ends with the sending: the CPU the machine spends
	// while the stragglers come in is not the window's.
	sp, err := w.end()
	if err != nil {
		return s, info, err
	}
	// Stragglers: wait while replies still come in, then stop the echo,
	// which answers what B's socket holds, wait for those answers, and
	// stop the receiver, which takes what A's socket holds. What is lost
	// then is what a drop counter counts, not what a starved end had not
	// yet taken.
	settle := func() error {
		start := time.Now()
		var last uint64
		lastAt := start
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			mu.Lock()
			r, got := replies, measured
			mu.Unlock()
			if got >= n {
				return nil
			}
			now := time.Now()
			if r != last {
				last, lastAt = r, now
			}
			if now.Sub(lastAt) >= stragglerQuiet || now.Sub(start) >= stragglerMax {
				return nil
			}
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
	}
	if err := settle(); err != nil {
		return s, info, err
	}
	stopEchoing()
	if err := settle(); err != nil {
		return s, info, err
	}
	stopReceiver()
	if echoErr != nil {
		return s, info, fmt.Errorf("echo: %w", echoErr)
	}
	if recvErr != nil {
		return s, info, fmt.Errorf("client receive: %w", recvErr)
	}
	mu.Lock()
	got := measured
	mu.Unlock()
	sp.finish(&s, got)
	s.OfferedPPS = float64(n) / s.Seconds
	// The echo's CPU over its whole life (warm-up included) per reply.
	if echoN > 0 {
		s.AppNs = float64(echoCPU.Nanoseconds()) / float64(echoN)
	}
	s.Sent, s.Received = n, got
	if s.Lost, err = lost(s.Sent, s.Received); err != nil {
		return s, info, err
	}
	if got == 0 {
		return s, info, fmt.Errorf("no %s reply in the measured window (%d requests)", path, n)
	}
	s.P50 = rtts.pct(0.50)
	s.P99 = rtts.pct(0.99)
	s.P999 = rtts.pct(0.999)
	c1, err := t.counters(sockets)
	if err != nil {
		return s, info, err
	}
	s.Drops = drops(c0, c1)
	return s, info, nil
}
