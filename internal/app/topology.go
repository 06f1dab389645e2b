package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"golang.org/x/sys/unix"
)

// TopologyOptions configures [NewTopology].
type TopologyOptions struct {
	// PeerNS holds the peer end (where the program under test binds);
	// nil: a new anonymous namespace. A named one lets `ip netns exec`
	// run other programs (dpdk-testpmd) there.
	PeerNS *netenv.Netns
	// Generator makes a pktgen generator that sends FrameLen-byte UDP
	// frames from the host end, arriving at the peer end. FrameLen, in
	// bytes without FCS, must then be between packet.MinFrame (60) and
	// TopologyMTU plus the Ethernet header (1514); it is checked before
	// anything is built.
	Generator bool
	FrameLen  int
	GenBatch  int
	GenPPS    uint64
	// HostSink attaches an XDP_DROP program to the host end, so that what
	// the peer end sends is counted (rx_packets) and dropped cheaply.
	HostSink bool
	// PeerSink attaches an XDP program with this verdict to the peer end
	// (0: none): pktgen.Pass for receivers above XDP (kernel sockets,
	// AF_PACKET), which need some XDP program there for veth to take
	// generated frames; pktgen.Drop to measure the kernel's own XDP_DROP
	// rate, the ceiling for any receiver.
	PeerSink pktgen.Verdict
}

// genChunk is the generator's frames per BPF_PROG_RUN call. Each call
// costs two RCU grace periods (bpf_prog_test_run_xdp adds the program to
// the XDP dispatcher and removes it again: synchronize_rcu in
// bpf_dispatcher_change_prog), tens of milliseconds on a virtual machine
// during which the generator's CPU sits idle; with 2^16 frames a call the
// generator idled 40% of the time here. 2^20 frames make that a few
// percent, at the price of Offered moving only once per call.
const genChunk = 1 << 20

// TopologyMTU is the MTU of both ends of the topology's veth pair: frames
// longer than it plus the 14-byte Ethernet header do not get through.
const TopologyMTU = 1500

// Topology is a veth pair whose host end sits in a throwaway namespace and
// whose peer end is where the program under test binds, with a generator
// that feeds the peer and a sink that swallows what the peer sends.
type Topology struct {
	HostNS *netenv.Netns
	Veth   *netenv.Veth
	Gen    *pktgen.Generator
	Sink   *pktgen.Sink
	// PeerSink is the program on the peer end, if asked for.
	PeerSink *pktgen.Sink
	Frame    []byte // the generator's frame

	closeMu sync.Mutex
	closed  bool
	// closeFail, when set, is one more failure for Close to report: for
	// tests, since no part of a real topology fails to close on demand.
	closeFail error
}

// NewTopology builds the topology; nil options are the zero value: a
// veth pair, with neither generator nor sinks.
func NewTopology(o *TopologyOptions) (_ *Topology, err error) {
	if o == nil {
		o = &TopologyOptions{}
	}
	if o.Generator && (o.FrameLen < packet.MinFrame || o.FrameLen > TopologyMTU+packet.EthLen) {
		return nil, fmt.Errorf("build topology: FrameLen %d: must be between %d and %d (MTU %d plus the Ethernet header)",
			o.FrameLen, packet.MinFrame, TopologyMTU+packet.EthLen, TopologyMTU)
	}
	t := &Topology{}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.HostNS, err = netenv.NewNetns(""); err != nil {
		return nil, err
	}
	if t.Veth, err = netenv.NewVeth(&netenv.VethOptions{HostNS: t.HostNS, PeerNS: o.PeerNS, MTU: TopologyMTU}); err != nil {
		return nil, err
	}
	if err := pktgen.AddNeighbors(t.Veth); err != nil {
		return nil, err
	}
	if o.HostSink {
		if t.Sink, err = pktgen.AttachSink(t.Veth.Host, pktgen.Drop); err != nil {
			return nil, err
		}
	}
	if o.PeerSink != 0 {
		if t.PeerSink, err = pktgen.AttachSink(t.Veth.Peer, o.PeerSink); err != nil {
			return nil, err
		}
	}
	if o.Generator {
		n := o.FrameLen
		t.Frame = make([]byte, n)
		h := packet.UDP{SrcMAC: t.Veth.Host.MAC, DstMAC: t.Veth.Peer.MAC,
			SrcIP: t.Veth.Host.IP(), DstIP: t.Veth.Peer.IP(), SrcPort: 40000, DstPort: 9000}
		packet.FillPayload(t.Frame[packet.HeadersLen:], 0)
		if _, err := h.Write(t.Frame, n-packet.HeadersLen); err != nil {
			return nil, err
		}
		t.Gen, err = pktgen.NewFor(t.Veth.Host, &pktgen.Options{Frame: t.Frame, BatchSize: o.GenBatch, PPS: o.GenPPS,
			Chunk: genChunk})
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Close removes everything the topology made, in reverse order, and
// reports every failure. A second Close returns nil: the first one's
// failures are reported once, by the first.
func (t *Topology) Close() error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.Gen != nil {
		errs = append(errs, t.Gen.Close())
	}
	if t.Sink != nil {
		errs = append(errs, t.Sink.Close())
	}
	if t.PeerSink != nil {
		errs = append(errs, t.PeerSink.Close())
	}
	if t.Veth != nil {
		errs = append(errs, t.Veth.Close())
	}
	if t.HostNS != nil {
		errs = append(errs, t.HostNS.Close())
	}
	return errors.Join(append(errs, t.closeFail)...)
}

// HostReceived is the host end's rx_packets: what the peer end sent that
// arrived.
func (t *Topology) HostReceived() (uint64, error) {
	c, err := pktgen.ReadCounters(t.Veth.Host)
	return c.RxPackets, err
}

// PeerReceived is the peer end's rx_packets.
func (t *Topology) PeerReceived() (uint64, error) {
	c, err := pktgen.ReadCounters(t.Veth.Peer)
	return c.RxPackets, err
}

// GenRun is a generator running in the background.
type GenRun struct {
	g      *pktgen.Generator
	cancel context.CancelFunc
	done   chan struct{}
	tid    int           // the generator's thread, locked to it until done
	cpu0   time.Duration // that thread's CPU time at the start
	start  time.Time
	// Set by the generator's goroutine before done is closed.
	end  time.Time
	sent uint64
	cpu  time.Duration // the thread's CPU time over the run
	err  error
}

// StartGenerator sends as fast as the generator can (or at its PPS) on a
// thread pinned to cpu (-1: unpinned) until Stop.
func (t *Topology) StartGenerator(cpu int) (*GenRun, error) {
	if t.Gen == nil {
		return nil, errors.New("start generator: the topology has none")
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &GenRun{g: t.Gen, cancel: cancel, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		unpin, err := PinThread(cpu)
		if err != nil {
			close(r.done)
			ready <- err
			return
		}
		r.tid, r.cpu0, r.start = unix.Gettid(), ThreadCPU(), time.Now()
		ready <- nil
		// Calls of genChunk frames: SendContext keeps a chunk that big
		// when ctx has no deadline, and Stop's cancel ends a paced send
		// (PPS) in its sleep; an unpaced chunk runs to its end.
		for ctx.Err() == nil {
			n, err := t.Gen.SendContext(ctx, genChunk)
			r.sent += n
			if err != nil {
				if !errors.Is(err, context.Canceled) || ctx.Err() == nil {
					r.err = fmt.Errorf("generator: %w", err)
				}
				break
			}
		}
		r.end = time.Now()
		r.cpu = ThreadCPU() - r.cpu0
		// Done before the thread is unlocked, so that CPU never reads a
		// thread that has gone on to run other goroutines.
		close(r.done)
		unpin()
	}()
	if err := <-ready; err != nil {
		cancel()
		return nil, err
	}
	return r, nil
}

// Offered is the number of frames offered so far by the calls that have
// ended: it moves once per call of 2^20 frames (genChunk) when unpaced.
func (r *GenRun) Offered() uint64 { return r.g.Total() }

// CPU is the CPU time the generator's thread has used since it started,
// to the nanosecond and on the same clock as [ProcessCPU], so that the
// difference of the two is the rest of the process's.
func (r *GenRun) CPU() time.Duration {
	select {
	case <-r.done:
		return r.cpu
	default:
	}
	d, err := ThreadCPUOf(r.tid)
	if err != nil {
		return 0
	}
	return d - r.cpu0
}

// Stop stops the generator, ending a paced wait at once and an unpaced
// call at its end, and returns its thread's CPU time and its error, if it
// failed. It may be called more than once.
func (r *GenRun) Stop() (time.Duration, error) {
	r.cancel()
	<-r.done
	return r.cpu, r.err
}

// Sent is the number of frames this run offered; call it after Stop.
func (r *GenRun) Sent() uint64 {
	<-r.done
	return r.sent
}

// Rate is the generator's average rate over its whole run, in frames per
// second; call it after Stop.
func (r *GenRun) Rate() float64 {
	<-r.done
	return float64(r.sent) / r.end.Sub(r.start).Seconds()
}
