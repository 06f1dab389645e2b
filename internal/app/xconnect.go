package app

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/afxdp/afxdp/xsk"
)

// XConnect forwards between two sockets that share a UMEM
// (xsk.Options.ShareUMEM): what one receives the other transmits, from the
// frame it arrived in. Its methods allocate nothing; one goroutine runs
// them while others read Fwd or set Stop.
type XConnect struct {
	Socks [2]*xsk.Socket
	// Stop makes Run return at its next iteration.
	Stop atomic.Bool
	// Fwd counts the frames queued for transmit in each direction:
	// Fwd[0] from Socks[0] to Socks[1], Fwd[1] the other way.
	Fwd [2]atomic.Uint64
	// Unsent counts the frames received on Socks[i] that Drain gave
	// back without queuing them on the other: what Socks[i] received
	// (its Stats.RxPackets) is Fwd[i] plus Unsent[i].
	Unsent [2]atomic.Uint64

	// buf[i][off[i]:n[i]] were received on Socks[i] and are not yet
	// queued on the other.
	buf    [2][]xsk.Desc
	off, n [2]int
}

// NewXConnect makes a forwarder between a and b that moves up to batch
// frames at a time.
func NewXConnect(a, b *xsk.Socket, batch int) *XConnect {
	return &XConnect{Socks: [2]*xsk.Socket{a, b},
		buf: [2][]xsk.Desc{make([]xsk.Desc, batch), make([]xsk.Desc, batch)}}
}

// Step receives a batch on each socket whose previous batch is all queued,
// and queues what fits on the other socket. It returns how many frames it
// queued.
func (x *XConnect) Step() (int, error) {
	moved := 0
	for i, from := range x.Socks {
		if x.off[i] == x.n[i] {
			k, err := from.Receive(x.buf[i])
			if err != nil {
				return moved, err
			}
			x.off[i], x.n[i] = 0, k
		}
		if x.off[i] == x.n[i] {
			continue
		}
		k, err := x.Socks[1-i].Transmit(x.buf[i][x.off[i]:x.n[i]])
		x.off[i] += k
		x.Fwd[i].Add(uint64(k))
		moved += k
		if err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// Run forwards until at least n frames (both directions together; 0: no
// limit) are queued or Stop is set, and returns how many it queued.
func (x *XConnect) Run(n uint64) (uint64, error) {
	var fwd uint64
	for (n == 0 || fwd < n) && !x.Stop.Load() {
		k, err := x.Step()
		fwd += uint64(k)
		if err != nil {
			return fwd, err
		}
	}
	return fwd, nil
}

// Drain gives back the frames received and not yet queued, counting them
// in Unsent.
func (x *XConnect) Drain() error {
	var errs []error
	for i, s := range x.Socks {
		errs = append(errs, s.Release(x.buf[i][x.off[i]:x.n[i]]))
		x.Unsent[i].Add(uint64(x.n[i] - x.off[i]))
		x.off[i], x.n[i] = 0, 0
	}
	return errors.Join(errs...)
}

// Finish ends the forwarding so that every frame given to either socket
// is counted: received (and forwarded, or given back in Unsent) or in
// the socket's own drops. It takes both sockets out of their XDP
// programs' XSKMAPs, so that the interfaces' frames go to the kernel's
// network stack from then on and none arrives later; forwards what the
// RX rings still hold, until nothing has moved for quiet (a frame the
// program redirected just before is still on its way for a few
// microseconds), or until deadline; and then Drains what is left. A
// socket without a program of its own (an XSKMAP that someone else owns)
// stays registered: its ring is forwarded until quiet, and frames may
// still arrive after Finish. Without Finish, frames in an RX ring at the
// stop would be counted nowhere: neither received nor dropped.
func (x *XConnect) Finish(quiet time.Duration, deadline time.Time) error {
	var errs []error
	for _, s := range x.Socks {
		if p := s.Program(); p != nil {
			if err := p.Unregister(s.Queue()); err != nil {
				errs = append(errs, fmt.Errorf("stop %s queue %d: %w", s.Interface(), s.Queue(), err))
			}
		}
	}
	if len(errs) == 0 {
		last := time.Now()
		for now := last; now.Before(deadline); now = time.Now() {
			n, err := x.Step()
			if err != nil {
				errs = append(errs, err)
				break
			}
			if n > 0 || x.off != x.n {
				last = now
			} else if now.Sub(last) >= quiet {
				break
			}
		}
	}
	return errors.Join(append(errs, x.Drain())...)
}
