package app

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/xsk"
)

// Counters are a loop's running totals. The loop adds to them once per
// batch; any goroutine may read them.
type Counters struct {
	RxPackets, RxBytes atomic.Uint64
	// TxPackets counts the frames queued for transmit, sent or not: the
	// socket's Stats.TxDropped says how many of them the device dropped.
	TxPackets, TxBytes atomic.Uint64
	// Unsent counts the frames l2fwd received (in RxPackets) and gave
	// back without transmitting them, because it was stopped, or failed,
	// while the TX ring had no room for them: for l2fwd, RxPackets is
	// TxPackets plus Unsent (plus what a Sweep took afterwards).
	Unsent atomic.Uint64
	// Sleeps counts poll(2) calls made while idle.
	Sleeps atomic.Uint64
}

// Loop runs one socket's data path: rxdrop, txonly or l2fwd. Its methods
// allocate nothing; one goroutine runs them while others read C or set
// Stop.
type Loop struct {
	Sock  *xsk.Socket
	Batch int
	Wait  WaitMode
	Spin  time.Duration
	Nap   time.Duration
	// PacketLen is the length txonly sends (after PrepareTx).
	PacketLen int

	// Stop makes the running method return at its next iteration.
	Stop atomic.Bool
	C    Counters

	descs     []xsk.Desc
	pending   int // txonly: descs[:pending] allocated, not yet queued
	idleStart time.Time
	idles     uint32 // idle iterations that did not wait in Wait
}

// NewLoop makes a loop over sock with the config's batch and wait mode.
func NewLoop(sock *xsk.Socket, c *Config) *Loop {
	return &Loop{Sock: sock, Batch: c.Batch, Wait: c.Wait, Spin: c.Spin, Nap: c.Nap,
		PacketLen: c.PacketSize, descs: make([]xsk.Desc, c.Batch)}
}

// pollTimeout bounds each sleep, so that Stop is noticed.
const pollTimeout = 100 * time.Millisecond

// Every so many idle iterations that do not wait in Wait, a spinning or
// napping loop asks Wait, without waiting, whether the socket is still
// bound: Receive on a socket whose interface was deleted returns nothing,
// forever, and only Wait says why. About every 50 ms of spinning, and
// every tenth of a second of naps.
const (
	spinProbeMask = 1<<20 - 1
	napProbeMask  = 1<<10 - 1
)

// idle is called when an iteration did nothing; ev is what would let the
// loop go on.
func (l *Loop) idle(ev xsk.Events) error {
	switch l.Wait {
	case WaitSpin:
		if l.idles++; l.idles&spinProbeMask == 0 {
			return l.probe(ev)
		}
		return nil
	case WaitNap:
		l.C.Sleeps.Add(1)
		if l.idles++; l.idles&napProbeMask == 0 {
			if err := l.probe(ev); err != nil {
				return err
			}
		}
		return nap(l.Nap)
	case WaitHybrid:
		now := time.Now()
		if l.idleStart.IsZero() {
			l.idleStart = now
			return nil
		}
		if now.Sub(l.idleStart) < l.Spin {
			return nil
		}
	}
	l.C.Sleeps.Add(1)
	_, err := l.Sock.Wait(ev, pollTimeout)
	return err
}

// probe asks Wait, without waiting, for what fails the socket (its
// interface deleted, say).
func (l *Loop) probe(ev xsk.Events) error {
	_, err := l.Sock.Wait(ev, 0)
	return err
}

// busy resets the hybrid spin clock.
func (l *Loop) busy() { l.idleStart = time.Time{} }

// Idle does what the loop's wait mode says to do when an iteration of a
// loop of the caller's own over Sock (echo's) found nothing to do: spin,
// poll(2) for ev, spin for Spin and then poll, or nap. Call Busy after an
// iteration that did something.
func (l *Loop) Idle(ev xsk.Events) error { return l.idle(ev) }

// Busy tells the loop that an iteration did something (see Idle).
func (l *Loop) Busy() { l.busy() }

func bytesOf(descs []xsk.Desc) uint64 {
	var b uint64
	for i := range descs {
		b += uint64(descs[i].Len)
	}
	return b
}

// RxDrop receives and releases packets until it has received at least n
// (0: no limit) or Stop is set, and returns how many it received.
func (l *Loop) RxDrop(n uint64) (uint64, error) {
	var got uint64
	descs := l.descs[:l.Batch]
	for (n == 0 || got < n) && !l.Stop.Load() {
		k, err := l.Sock.Receive(descs)
		if err != nil {
			return got, err
		}
		if k == 0 {
			if err := l.idle(xsk.Readable); err != nil {
				return got, err
			}
			continue
		}
		l.busy()
		l.C.RxBytes.Add(bytesOf(descs[:k]))
		if err := l.Sock.Release(descs[:k]); err != nil {
			return got, err
		}
		l.C.RxPackets.Add(uint64(k))
		got += uint64(k)
	}
	return got, nil
}

// Sweep receives and releases what the RX ring still holds, counting it
// as RxDrop does, until the ring is empty, and returns how many frames it
// took. It is for after the loop has stopped: a loop that stops with
// frames in the RX ring would leave them counted nowhere, neither
// received nor dropped.
func (l *Loop) Sweep() (uint64, error) {
	var got uint64
	descs := l.descs[:l.Batch]
	for {
		k, err := l.Sock.Receive(descs)
		if err != nil || k == 0 {
			return got, err
		}
		l.C.RxBytes.Add(bytesOf(descs[:k]))
		if err := l.Sock.Release(descs[:k]); err != nil {
			return got, err
		}
		l.C.RxPackets.Add(uint64(k))
		got += uint64(k)
	}
}

// PrepareTx writes frame into every transmit frame of the UMEM, so that
// TxOnly only has to set lengths, as libxdp's and DPDK's txonly do.
func (l *Loop) PrepareTx(frame []byte) error {
	if len(frame) > l.Sock.UMEM().FrameSize() {
		return fmt.Errorf("prepare tx: frame of %d bytes: longer than a UMEM frame", len(frame))
	}
	l.PacketLen = len(frame)
	var all []xsk.Desc
	buf := make([]xsk.Desc, 256)
	for {
		k, err := l.Sock.Alloc(buf)
		if err != nil {
			return err
		}
		if k == 0 {
			break
		}
		for _, d := range buf[:k] {
			copy(l.Sock.Frame(xsk.Desc{Addr: d.Addr, Len: uint32(len(frame))}), frame)
		}
		all = append(all, buf[:k]...)
	}
	if len(all) == 0 {
		return errors.New("prepare tx: the socket has no transmit frames")
	}
	return l.Sock.Release(all)
}

// TxOnly transmits the prepared frame until it has queued at least n
// frames (0: no limit) or Stop is set, and returns how many it queued.
func (l *Loop) TxOnly(n uint64) (uint64, error) {
	var sent uint64
	plen := uint32(l.PacketLen)
	for (n == 0 || sent < n) && !l.Stop.Load() {
		if l.pending < l.Batch {
			k, err := l.Sock.Alloc(l.descs[l.pending:l.Batch])
			if err != nil {
				return sent, err
			}
			for i := l.pending; i < l.pending+k; i++ {
				l.descs[i].Len = plen
			}
			l.pending += k
		}
		if l.pending == 0 {
			if err := l.wait(xsk.Writable); err != nil {
				return sent, err
			}
			continue
		}
		// The k queued are the kernel's even when Transmit fails
		// after queuing them: count them, and keep only the rest.
		k, err := l.Sock.Transmit(l.descs[:l.pending])
		if k < l.pending {
			copy(l.descs, l.descs[k:l.pending])
		}
		l.pending -= k
		l.C.TxPackets.Add(uint64(k))
		l.C.TxBytes.Add(uint64(k) * uint64(plen))
		sent += uint64(k)
		if err != nil {
			return sent, err
		}
		if k == 0 {
			if err := l.wait(xsk.Writable); err != nil {
				return sent, err
			}
			continue
		}
		l.busy()
	}
	return sent, nil
}

// wait is idle for the transmit side: spinning kicks the kernel, so that
// frames the TX ring still holds get sent and completed.
func (l *Loop) wait(ev xsk.Events) error {
	if l.Wait == WaitSpin || l.Wait == WaitNap || l.Wait == WaitHybrid && (l.idleStart.IsZero() || time.Since(l.idleStart) < l.Spin) {
		if err := l.Sock.Kick(); err != nil {
			return err
		}
	}
	return l.idle(ev)
}

// ReleaseTx gives back the frames TxOnly allocated and did not queue.
func (l *Loop) ReleaseTx() error {
	err := l.Sock.Release(l.descs[:l.pending])
	l.pending = 0
	return err
}

// L2Fwd receives packets, swaps their Ethernet addresses and transmits
// them back out of the same queue, until it has forwarded at least n (0:
// no limit) or Stop is set, and returns how many it forwarded.
func (l *Loop) L2Fwd(n uint64) (uint64, error) {
	var fwd uint64
	descs := l.descs[:l.Batch]
	for (n == 0 || fwd < n) && !l.Stop.Load() {
		k, err := l.Sock.Receive(descs)
		if err != nil {
			return fwd, err
		}
		if k == 0 {
			if err := l.idle(xsk.Readable); err != nil {
				return fwd, err
			}
			continue
		}
		l.busy()
		b := bytesOf(descs[:k])
		l.C.RxPackets.Add(uint64(k))
		l.C.RxBytes.Add(b)
		for i := range descs[:k] {
			SwapMACs(l.Sock.Frame(descs[i]))
		}
		sent, err := TransmitAll(l.Sock, descs[:k], l.waitWritable, &l.Stop)
		if sent < k {
			b = bytesOf(descs[:sent])
		}
		l.C.TxPackets.Add(uint64(sent))
		l.C.TxBytes.Add(b)
		fwd += uint64(sent)
		if sent < k {
			// Stopped or failed with these still unqueued: give them
			// back, counted.
			l.C.Unsent.Add(uint64(k - sent))
			return fwd, errors.Join(err, l.Sock.Release(descs[sent:k]))
		}
		if err != nil {
			return fwd, err
		}
	}
	return fwd, nil
}

func (l *Loop) waitWritable() error { return l.wait(xsk.Writable) }

// Transmitter queues frames for transmission, as [xsk.Socket.Transmit].
type Transmitter interface {
	Transmit(descs []xsk.Desc) (int, error)
}

// TransmitAll queues descs with tx, in order, calling wait whenever the TX
// ring has no room, until all are queued, or stop is set while the ring
// has no room, or tx or wait fails. It returns how many it queued, those
// before a failure included: descs[:n] are the kernel's, and the caller
// still holds the rest.
func TransmitAll(tx Transmitter, descs []xsk.Desc, wait func() error, stop *atomic.Bool) (n int, err error) {
	for n < len(descs) {
		m, err := tx.Transmit(descs[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			if stop.Load() {
				return n, nil
			}
			if err := wait(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// SwapMACs exchanges the destination and source addresses of an Ethernet
// frame in place.
func SwapMACs(f []byte) {
	if len(f) < 12 {
		return
	}
	var t [6]byte
	copy(t[:], f[0:6])
	copy(f[0:6], f[6:12])
	copy(f[6:12], t[:])
}

// nap sleeps for d in nanosleep(2): the thread itself sleeps in the
// kernel, so a loop locked to a thread pinned to a CPU wakes there, on
// time, rather than waiting for a runtime timer to reschedule its
// goroutine.
func nap(d time.Duration) error {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for {
		err := unix.Nanosleep(&ts, &ts)
		if err != unix.EINTR {
			if err != nil {
				return os.NewSyscallError("nanosleep", err)
			}
			return nil
		}
	}
}
