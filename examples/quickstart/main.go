// Command quickstart shows afxdp end to end with nothing but a Linux box:
// it makes a veth pair whose far end lives in a throwaway network
// namespace, sends a million UDP frames through an AF_XDP socket on one
// end and receives them through another on the other end, verifies every
// byte of every frame, prints packets per second and both sockets'
// statistics, and removes everything it made — also on Ctrl-C. If frames
// go missing, it stops waiting for them once nothing has arrived for two
// seconds after the sender finished, says how many of them arrived and
// exits with status 1.
//
// It needs root (or CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_BPF and
// CAP_IPC_LOCK: its two 8 MiB UMEMs exceed the usual 8 MiB RLIMIT_MEMLOCK)
// and Linux 5.11 or later.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -n 5000000 -size 1000
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/xsk"
)

func main() {
	count := flag.Uint64("n", 1_000_000, "frames to send and receive (at least 1)")
	size := flag.Int("size", 64, "frame size in bytes (64 to 1514)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *count, *size); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

const port = 9000

// idleTimeout is how long the receiver waits for the next frame once the
// sender has finished (or stalled: a window's worth of frames lost): a
// lost frame would otherwise keep it waiting forever.
const idleTimeout = 2 * time.Second

func run(ctx context.Context, w io.Writer, count uint64, size int) (err error) {
	if count == 0 {
		// Nothing sent, nothing received: a run that shows nothing
		// and would pass as a success.
		return errors.New("-n 0: must be at least 1")
	}
	if size < packet.HeadersLen+packet.SeqLen+14 || size > 1514 {
		return fmt.Errorf("-size %d: must be between %d and 1514", size, packet.HeadersLen+packet.SeqLen+14)
	}
	v, err := netenv.NewVeth(nil)
	if err != nil {
		return fmt.Errorf("make veth pair: %w", err)
	}
	defer func() {
		if cerr := v.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			fmt.Fprintln(w, "removed the veth pair and its namespace")
		}
	}()
	fmt.Fprintf(w, "veth pair %s <-> %s (in a throwaway namespace)\n", v.Host.Name, v.Peer.Name)

	// The receiver loads the XDP program on its end; only our UDP flow
	// is redirected, the rest still reaches the kernel.
	rx, err := xsk.Open(v.Host.Name, 0, &xsk.Options{
		Filter: bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: port},
	})
	if err != nil {
		return err
	}
	defer rx.Close()
	// The sender only transmits: it needs no XDP program. It is opened
	// inside the peer's namespace, where its interface lives.
	var tx *xsk.Socket
	if err := v.Peer.Do(func() error {
		tx, err = xsk.Open(v.Peer.Name, 0, &xsk.Options{NoXDP: true})
		return err
	}); err != nil {
		return err
	}
	defer tx.Close()
	fmt.Fprintf(w, "receiver %s: %s mode, %s XDP; sender %s: %s mode\n",
		v.Host.Name, rx.Mode(), rx.XDPMode(), v.Peer.Name, tx.Mode())

	hdr := packet.UDP{
		SrcMAC: v.Peer.MAC, DstMAC: v.Host.MAC,
		SrcIP: v.Peer.IP(), DstIP: v.Host.IP(),
		SrcPort: 40000, DstPort: port,
	}
	payloadLen := size - packet.HeadersLen

	var received, bad, sent atomic.Uint64
	var wg sync.WaitGroup
	interrupted := ctx.Err
	// The receiver ends the sender when it is done, or has given up.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	watch := newIdleWatch(idleTimeout, start)
	var rxErr, txErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer cancel()
		rxErr = receive(ctx, rx, count, size, &hdr, &received, &bad, watch)
	}()
	go func() {
		defer wg.Done()
		defer watch.senderDone(time.Now())
		txErr = send(ctx, tx, &hdr, payloadLen, count, &received, &sent, idleTimeout)
	}()
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(rxErr, txErr); err != nil {
		return err
	}

	got := received.Load()
	fmt.Fprintf(w, "sent %d, received %d, verified %d in %v: %.2f Mpps (%.2f Gbit/s of frames)\n",
		sent.Load(), got, got-bad.Load(), elapsed.Round(time.Millisecond),
		float64(got)/elapsed.Seconds()/1e6, float64(got)*float64(size)*8/elapsed.Seconds()/1e9)
	printStats(w, "receiver", rx)
	printStats(w, "sender", tx)
	if interrupted() != nil && got < count {
		return errors.New("interrupted")
	}
	return verdict(got, count, bad.Load(), watch)
}

// verdict is the run's error when not every frame arrived intact: how many
// of them arrived, and, when the receiver gave up, after how long.
func verdict(got, count, bad uint64, watch *idleWatch) error {
	if got == count && bad == 0 {
		return nil
	}
	var why string
	if watch.gaveUp() {
		why = fmt.Sprintf(" (none for %v after the sender finished)", watch.idle)
	}
	return fmt.Errorf("%d of %d frames arrived%s, %d of them wrong", got, count, why, bad)
}

// idleWatch tells the receiver when to stop waiting for frames that will
// not come: once the sender has finished and nothing has arrived for idle
// since the later of the last frame and the sender's end. The receiver
// calls arrived and expired; the sender's goroutine calls senderDone.
type idleWatch struct {
	idle   time.Duration
	last   time.Time    // the last frame's arrival, or the start; receiver only
	doneAt atomic.Int64 // the sender's end in Unix nanoseconds; 0 while it sends
	given  atomic.Bool  // expired returned true
}

func newIdleWatch(idle time.Duration, start time.Time) *idleWatch {
	return &idleWatch{idle: idle, last: start}
}

// arrived records that frames arrived at now.
func (w *idleWatch) arrived(now time.Time) { w.last = now }

// senderDone records that the sender finished at now.
func (w *idleWatch) senderDone(now time.Time) { w.doneAt.Store(now.UnixNano()) }

// expired reports whether the receiver should give up at now.
func (w *idleWatch) expired(now time.Time) bool {
	d := w.doneAt.Load()
	if d == 0 {
		return false
	}
	since := w.last
	if done := time.Unix(0, d); done.After(since) {
		since = done
	}
	if now.Sub(since) < w.idle {
		return false
	}
	w.given.Store(true)
	return true
}

// gaveUp reports whether expired has said to give up.
func (w *idleWatch) gaveUp() bool { return w.given.Load() }

// receive takes frames until count have arrived, checking that each comes
// later in sequence than the one before it and is, byte for byte, the
// frame of size bytes that send built from hdr for its sequence number, or
// until watch says to stop waiting. A frame lost on the way is missing
// from the count, and does not make the intact frames after it wrong.
func receive(ctx context.Context, s *xsk.Socket, count uint64, size int, hdr *packet.UDP, received, bad *atomic.Uint64, watch *idleWatch) error {
	want, err := newFrameCheck(hdr, size)
	if err != nil {
		return err
	}
	descs := make([]xsk.Desc, 64)
	// got frames have arrived; next is the lowest sequence number the
	// next intact frame may carry.
	got, next := uint64(0), uint64(0)
	for got < count && next < count && ctx.Err() == nil {
		n, err := s.Receive(descs)
		if err != nil {
			return err
		}
		if n == 0 {
			if watch.expired(time.Now()) {
				return nil
			}
			if _, err := s.Wait(xsk.Readable, 100*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		watch.arrived(time.Now())
		for _, d := range descs[:n] {
			if seq, ok := want.check(s.Frame(d)); ok && seq >= next && seq < count {
				next = seq + 1
			} else {
				bad.Add(1)
			}
			got++
		}
		if err := s.Release(descs[:n]); err != nil {
			return err
		}
		received.Store(got)
	}
	return nil
}

// frameCheck knows the frames that send builds, so as to check every byte
// of one: the headers against a template, but for the IP ID, which is
// the sequence number's low 16 bits, and the checksums, which
// packet.Parse checks; the payload with packet.CheckPayload.
type frameCheck struct {
	tmpl []byte // the headers of a frame with ID 0
	size int
}

// Offsets in the frame of the IPv4 ID and of the two checksums.
const (
	ipID   = packet.EthLen + 4
	ipSum  = packet.EthLen + 10
	udpSum = packet.HeadersLen - 2
)

func newFrameCheck(hdr *packet.UDP, size int) (*frameCheck, error) {
	b := make([]byte, size)
	h := *hdr
	h.ID = 0
	if _, err := h.Write(b, size-packet.HeadersLen); err != nil {
		return nil, err
	}
	return &frameCheck{tmpl: b[:packet.HeadersLen], size: size}, nil
}

// check returns the sequence number in frame's payload and whether frame
// is the one send built for it.
func (c *frameCheck) check(frame []byte) (seq uint64, ok bool) {
	if len(frame) != c.size {
		return 0, false
	}
	p, err := packet.Parse(frame) // both checksums
	if err != nil {
		return 0, false
	}
	seq, ok = packet.CheckPayload(p.Payload)
	t := c.tmpl
	return seq, ok &&
		bytes.Equal(frame[:ipID], t[:ipID]) &&
		binary.BigEndian.Uint16(frame[ipID:]) == uint16(seq) &&
		bytes.Equal(frame[ipID+2:ipSum], t[ipID+2:ipSum]) &&
		bytes.Equal(frame[ipSum+2:udpSum], t[ipSum+2:udpSum]) &&
		binary.BigEndian.Uint16(frame[udpSum:]) != 0 // send always sets it
}

// send transmits count frames, staying at most a ring's worth ahead of the
// receiver so that none is dropped. It stops early, without error, when
// the receiver has taken nothing for idle while the window is full: frames
// were lost, and waiting longer would wait forever.
func send(ctx context.Context, s *xsk.Socket, hdr *packet.UDP, payloadLen int, count uint64, received, sent *atomic.Uint64, idle time.Duration) error {
	const window = 1536
	descs := make([]xsk.Desc, 64)
	seq := uint64(0)
	var stalled time.Time // when the window filled up; zero while it has room
	for seq < count && ctx.Err() == nil {
		if seq-received.Load() >= window {
			now := time.Now()
			switch {
			case stalled.IsZero():
				stalled = now
			case now.Sub(stalled) >= idle:
				return nil
			}
			time.Sleep(10 * time.Microsecond)
			continue
		}
		stalled = time.Time{}
		n, err := s.Alloc(descs[:min(uint64(len(descs)), count-seq)])
		if err != nil {
			return err
		}
		for i := range descs[:n] {
			b := s.Frame(descs[i])
			packet.FillPayload(b[packet.HeadersLen:packet.HeadersLen+payloadLen], seq+uint64(i))
			h := *hdr
			h.ID = uint16(seq + uint64(i))
			l, err := h.Write(b, payloadLen)
			if err != nil {
				return err
			}
			descs[i].Len = uint32(l)
		}
		k, err := s.Transmit(descs[:n])
		if err != nil {
			return err
		}
		if err := s.Release(descs[k:n]); err != nil {
			return err
		}
		seq += uint64(k)
		sent.Store(seq)
	}
	return nil
}

func printStats(w io.Writer, name string, s *xsk.Socket) {
	st, err := s.Stats()
	if err != nil {
		fmt.Fprintf(w, "%s stats: %v\n", name, err)
		return
	}
	fmt.Fprintf(w, "%s: rx %d packets in %d batches, tx %d packets in %d batches, %d completed (%d of them dropped by the device); kernel: rx dropped %d, rx ring full %d, fill ring empty %d, invalid descs rx %d tx %d; wakeups rx %d tx %d\n",
		name, st.RxPackets, st.RxBatches, st.TxPackets, st.TxBatches, st.Completed, st.TxDropped,
		st.RxDropped, st.RxRingFull, st.FillRingEmpty, st.RxInvalidDescs, st.TxInvalidDescs,
		st.RxWakeups, st.TxWakeups)
}
