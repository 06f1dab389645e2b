package umem

import (
	"errors"
	"fmt"
	"math"

	"github.com/afxdp/afxdp/ring"
)

// Frame states. Each frame is in exactly one.
const (
	stateFree    uint8 = iota
	stateFill          // in the fill or RX ring: the kernel holds it to receive into
	stateRxUser        // received, held by the user
	stateTxUser        // allocated for transmit, held by the user
	stateTx            // in the TX or completion ring
	stateRecycle       // a receive frame completed by TX, on its way back
)

var stateNames = [...]string{"free", "in the fill ring", "held by the user (received)",
	"held by the user (allocated)", "in the transmit path", "being recycled"}

// ErrInvalidDesc is returned (wrapped) for a descriptor that does not name
// a frame the user holds, or whose length does not fit the frame.
var ErrInvalidDesc = errors.New("invalid descriptor")

// Counts says where the frames are. The fields add up to the number of
// frames.
type Counts struct {
	// Free frames, on either side.
	Free int
	// Fill frames are held by the kernel for receive (fill and RX rings).
	Fill int
	// Tx frames are held by the kernel for transmit (TX and completion
	// rings), including received frames being forwarded. When a socket
	// on the UMEM closes (its rings are unmapped), the frames its
	// completion ring had returned come back at the next Complete of
	// the transmit side, or the next Counts; until then they are
	// counted here. The rest it had sent move to Lost then.
	Tx int
	// RxUser frames were received and not yet released or transmitted.
	RxUser int
	// TxUser frames were allocated and not yet transmitted or released.
	TxUser int
	// Recycling frames were received, transmitted and completed, and are
	// on their way back to the receive side.
	Recycling int
	// Lost frames were in the fill or RX ring of a socket when its rings
	// were unmapped (it closed), or sent through its TX ring and not
	// returned by its completion ring by then. They are out of use for
	// good: the sockets that share the UMEM and stay open cannot have
	// them back, since the kernel lets go of them only once it has
	// released the closed socket (in zero-copy mode in a deferred work
	// item, after close returns; a packet still queued in the kernel may
	// read its frame later still), and Close may run on any goroutine
	// while the receiving one uses the free frames.
	Lost int
}

// Kernel is the number of frames the kernel holds.
func (c Counts) Kernel() int { return c.Fill + c.Tx }

// User is the number of frames the user holds.
func (c Counts) User() int { return c.RxUser + c.TxUser }

// Total is the number of frames accounted for.
func (c Counts) Total() int { return c.Free + c.Kernel() + c.User() + c.Recycling + c.Lost }

// recycleLayout places the recycle ring's words on separate cache lines.
var recycleLayout = ring.Offsets{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

type frames struct {
	rxFrames uint32
	state    []uint8

	// Receive side: touched only by the receiving goroutine.
	rxFree    []uint64
	rxFill    int
	rxUser    int
	recycleIn *ring.Consumer[uint64]
	recycled  int // frames taken off the recycle ring

	// Transmit side: touched only by the transmitting goroutine.
	txFree     []uint64
	tx         int
	txUser     int
	recycleOut *ring.Producer[uint64]
	recycling  int // frames put on the recycle ring
	compBuf    [64]uint64
	backBuf    [64]uint64
}

func (f *frames) init(num, rx int, shift uint) {
	f.rxFrames = uint32(rx)
	f.state = make([]uint8, num)
	f.rxFree = make([]uint64, rx)
	for i := range rx {
		// Lowest addresses on top of the stack.
		f.rxFree[i] = uint64(rx-1-i) << shift
	}
	f.txFree = make([]uint64, num-rx)
	for i := range num - rx {
		f.txFree[i] = uint64(num-1-i) << shift
	}
	if rx > 0 {
		size := uint32(1)
		for size < uint32(rx) {
			size <<= 1
		}
		mem := make([]byte, int(recycleLayout.Desc)+8*int(size))
		// The layout is valid by construction: errors cannot happen.
		f.recycleOut, _ = ring.NewProducer[uint64](mem, recycleLayout, size)
		f.recycleIn, _ = ring.NewConsumer[uint64](mem, recycleLayout, size)
	}
}

// Refill moves free receive frames into the fill ring, first taking back
// frames that transmit completed. It returns the number added. Receive side.
func (r *Rings) Refill() int { return r.RefillUpTo(math.MaxInt) }

// RefillUpTo is Refill adding at most limit frames. Receive side.
func (r *Rings) RefillUpTo(limit int) int {
	if r.fill == nil {
		return 0
	}
	u := r.u
	f := &u.frames
	if f.recycleIn == nil {
		return 0
	}
	if room := uint32(cap(f.rxFree) - len(f.rxFree)); room > 0 {
		if idx, n := f.recycleIn.Peek(room); n > 0 {
			for i := range n {
				addr := f.recycleIn.At(idx + i)
				f.state[addr>>u.shift] = stateFree
				f.rxFree = append(f.rxFree, addr)
			}
			f.recycleIn.Release(n)
			f.recycled += int(n)
		}
	}
	want := uint32(min(len(f.rxFree), limit))
	if limit <= 0 || want == 0 || r.noFill {
		return 0
	}
	idx, n := r.fill.Reserve(want)
	if n == 0 {
		return 0
	}
	top := len(f.rxFree)
	for i := range n {
		addr := f.rxFree[top-1-int(i)]
		f.state[addr>>u.shift] = stateFill
		r.fill.Set(idx+i, addr)
	}
	f.rxFree = f.rxFree[:top-int(n)]
	r.fill.Submit(n)
	f.rxFill += int(n)
	r.held += int(n)
	return int(n)
}

// Received records that the kernel handed descs to the user through the RX
// ring of the socket these rings belong to, and returns their total length
// in bytes. Receive side.
func (r *Rings) Received(descs []ring.Desc) uint64 {
	if r.u == nil {
		return 0
	}
	r.held -= len(descs)
	return r.u.received(descs)
}

// Received is Rings.Received for the rings Register made: the kernel handed
// descs to the user through the RX ring of the socket the UMEM was
// registered with. Receive side.
func (u *UMEM) Received(descs []ring.Desc) uint64 {
	if u.own != nil {
		return u.own.Received(descs)
	}
	return u.received(descs)
}

func (u *UMEM) received(descs []ring.Desc) (bytes uint64) {
	f := &u.frames
	for i := range descs {
		if idx := descs[i].Addr >> u.shift; idx < uint64(len(f.state)) {
			f.state[idx] = stateRxUser
		}
		bytes += uint64(descs[i].Len)
	}
	f.rxFill -= len(descs)
	f.rxUser += len(descs)
	return bytes
}

// Release returns a frame the user holds to its free pool: a received
// frame (by the receiving goroutine) or an allocated one that will not be
// sent (by the transmitting goroutine). addr may point anywhere inside the
// frame. An address that names no frame the user holds gives an error
// wrapping ErrInvalidDesc.
func (u *UMEM) Release(addr uint64) error {
	f := &u.frames
	i := addr >> u.shift
	if i >= uint64(len(f.state)) {
		return fmt.Errorf("release frame at %#x: outside the %d-byte UMEM: %w", addr, u.size, ErrInvalidDesc)
	}
	base := addr &^ u.mask
	switch f.state[i] {
	case stateRxUser:
		f.state[i] = stateFree
		f.rxFree = append(f.rxFree, base)
		f.rxUser--
	case stateTxUser:
		f.state[i] = stateFree
		f.txFree = append(f.txFree, base)
		f.txUser--
	default:
		return fmt.Errorf("release frame at %#x: frame is %s, not held by the user: %w",
			addr, stateNames[f.state[i]], ErrInvalidDesc)
	}
	return nil
}

// Alloc fills dst with free transmit frames, reaping this completion ring
// first when too few are free, and returns how many it got. Each
// descriptor's Addr is where the packet starts (after Headroom) and Len the
// room there. Transmit side.
func (r *Rings) Alloc(dst []ring.Desc) int {
	if r.u == nil {
		return 0
	}
	if len(r.u.frames.txFree) < len(dst) {
		r.Complete()
	}
	return r.u.alloc(dst)
}

// alloc takes free transmit frames without reaping completions.
func (u *UMEM) alloc(dst []ring.Desc) int {
	f := &u.frames
	n := min(len(dst), len(f.txFree))
	top := len(f.txFree)
	room := u.capacity()
	for i := range n {
		base := f.txFree[top-1-i]
		f.state[base>>u.shift] = stateTxUser
		dst[i] = ring.Desc{Addr: u.payloadStart(base), Len: room}
	}
	f.txFree = f.txFree[:top-n]
	f.txUser += n
	return n
}

// Send checks descs in order and marks them as handed to the kernel for
// transmit, through the TX ring of the socket the UMEM was registered with
// (see [Rings.Send]). It stops at the first descriptor that does not name a
// frame the user holds or whose length does not fit, and returns how many
// it accepted and an error wrapping ErrInvalidDesc for that one. Transmit
// side.
func (u *UMEM) Send(descs []ring.Desc) (int, error) {
	if r := u.own; r != nil {
		return r.Send(descs)
	}
	k, _, err := u.send(descs)
	return k, err
}

// Send is UMEM.Send for the socket these rings belong to: the frames it
// accepts count as in flight on these rings until their completion ring
// returns them, so that Close knows what the kernel still held. Transmit
// side.
func (r *Rings) Send(descs []ring.Desc) (int, error) {
	if r.u == nil {
		return 0, fmt.Errorf("transmit: rings that neither Register nor AddRings made: %w", ErrInvalidDesc)
	}
	k, rx, err := r.u.send(descs)
	r.inflight += k
	r.inflightRx += rx
	return k, err
}

// send is Send, also returning how many of the accepted frames are receive
// frames (forwarded).
func (u *UMEM) send(descs []ring.Desc) (accepted, rx int, err error) {
	f := &u.frames
	for k := range descs {
		d := &descs[k]
		i := d.Addr >> u.shift
		switch {
		case i >= uint64(len(f.state)):
			return k, rx, fmt.Errorf("transmit descriptor %d {addr %#x, len %d}: outside the %d-byte UMEM: %w",
				k, d.Addr, d.Len, u.size, ErrInvalidDesc)
		case d.Len == 0:
			return k, rx, fmt.Errorf("transmit descriptor %d {addr %#x}: len 0: an empty packet: %w", k, d.Addr, ErrInvalidDesc)
		case uint64(d.Len) > u.frameEnd(d.Addr)-d.Addr:
			return k, rx, fmt.Errorf("transmit descriptor %d {addr %#x, len %d}: runs past the end of its %d-byte frame at %#x: %w",
				k, d.Addr, d.Len, u.opts.FrameSize, u.frameEnd(d.Addr), ErrInvalidDesc)
		}
		switch f.state[i] {
		case stateTxUser:
			f.txUser--
		case stateRxUser:
			f.rxUser--
			rx++
		default:
			return k, rx, fmt.Errorf("transmit descriptor %d {addr %#x}: frame is %s, not held by the user: %w",
				k, d.Addr, stateNames[f.state[i]], ErrInvalidDesc)
		}
		f.state[i] = stateTx
		f.tx++
	}
	return len(descs), rx, nil
}

// Complete takes finished transmissions off the completion ring: transmit
// frames become free, forwarded receive frames start back to the receive
// side. It returns the number completed. An address that names no frame
// in the transmit path is dropped. Transmit side.
func (r *Rings) Complete() int {
	if r.comp == nil {
		return 0
	}
	u := r.u
	f := &u.frames
	if u.orphaned.Load() {
		u.adopt()
	}
	total, totalBack := 0, 0
	for {
		n := r.comp.Consume(f.compBuf[:])
		if n == 0 {
			break
		}
		back, done := 0, 0
		for _, addr := range f.compBuf[:n] {
			i := addr >> u.shift
			if i >= uint64(len(f.state)) || f.state[i] != stateTx {
				// Not a frame in flight. Linux 6.18 in copy mode
				// completes a descriptor that it refuses with
				// EINVAL on every retry (XDP_TX_METADATA without
				// tx metadata): taking it again would free the
				// frame twice.
				continue
			}
			done++
			base := addr &^ u.mask
			if uint32(i) < f.rxFrames {
				f.state[i] = stateRecycle
				f.backBuf[back] = base
				back++
			} else {
				f.state[i] = stateFree
				f.txFree = append(f.txFree, base)
			}
		}
		if back > 0 {
			// The recycle ring holds every receive frame: it cannot
			// be full.
			f.recycleOut.Produce(f.backBuf[:back])
			f.recycling += back
		}
		f.tx -= done
		total += done
		totalBack += back
		if n < len(f.compBuf) {
			break
		}
	}
	if total > 0 {
		r.inflight -= total
		r.inflightRx -= totalBack
		r.completed.Add(uint64(total))
	}
	return total
}

// completeOne takes back the frame at addr, which the kernel completed:
// a transmit frame becomes free, a receive frame starts back to the
// receive side. It reports whether the frame was in flight (else it is
// left alone, see Complete) and whether it is a receive frame. Transmit
// side.
func (u *UMEM) completeOne(addr uint64) (done, rx bool) {
	f := &u.frames
	i := addr >> u.shift
	if i >= uint64(len(f.state)) || f.state[i] != stateTx {
		return false, false
	}
	base := addr &^ u.mask
	f.tx--
	if uint32(i) < f.rxFrames {
		f.state[i] = stateRecycle
		f.recycleOut.Produce([]uint64{base})
		f.recycling++
		return true, true
	}
	f.state[i] = stateFree
	f.txFree = append(f.txFree, base)
	return true, false
}

// orphans are what the rings of a closed socket held for transmit: the
// frames its completion ring had returned when it closed (the kernel is
// done with them), and how many frames, and receive frames among them,
// it had sent and not had back.
type orphans struct {
	completed            []uint64
	inflight, inflightRx int
}

// orphan hands the transmit side what r holds for transmit, as r closes:
// the completion ring's entries, and the count of frames sent through r
// that it has not returned, which the transmit side counts as lost once
// it has taken back the completed ones (adopt). Close may run on any
// goroutine, and the frames' states are the transmit side's. The caller
// holds u.mu, and no transmit-side call on r runs.
func (r *Rings) orphan() {
	if r.comp == nil || r.u == nil {
		return
	}
	u := r.u
	o := orphans{inflight: r.inflight, inflightRx: r.inflightRx}
	// A ring holds at most Size entries: more would be the kernel's
	// fault, not frames.
	if n := min(r.comp.Available(r.comp.Size()), r.comp.Size()); n > 0 {
		o.completed = make([]uint64, n)
		o.completed = o.completed[:r.comp.Consume(o.completed)]
	}
	r.inflight, r.inflightRx = 0, 0
	if o.inflight == 0 && len(o.completed) == 0 {
		return
	}
	u.orphans = append(u.orphans, o)
	u.orphaned.Store(true)
}

// adopt takes back what closed rings left (see orphan): the frames their
// completion rings returned are free again, or on their way back to the
// receive side; the rest that they had sent are lost. Transmit side.
func (u *UMEM) adopt() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, o := range u.orphans {
		done, doneRx := 0, 0
		for _, addr := range o.completed {
			if ok, rx := u.completeOne(addr); ok {
				done++
				if rx {
					doneRx++
				}
			}
		}
		lost, lostRx := max(o.inflight-done, 0), max(o.inflightRx-doneRx, 0)
		lost = min(lost, u.frames.tx)
		u.frames.tx -= lost
		u.txLost += lost
		u.txLostRx += min(lostRx, lost)
	}
	u.orphans = nil
	u.orphaned.Store(false)
}

// Counts says where the frames are. Call it only when no other goroutine
// is using the UMEM: it first takes back, as the transmit side's next
// Complete would, the frames that rings closed since returned (see
// [Rings.Close]).
func (u *UMEM) Counts() Counts {
	if u.orphaned.Load() {
		// No transmit-side call runs: take back what closed rings
		// left, as the next one would.
		u.adopt()
	}
	u.mu.Lock()
	lost, txLost := u.lost, u.txLost
	u.mu.Unlock()
	f := &u.frames
	return Counts{
		Free:      len(f.rxFree) + len(f.txFree),
		Fill:      f.rxFill - lost,
		Tx:        f.tx,
		RxUser:    f.rxUser,
		TxUser:    f.txUser,
		Recycling: f.recycling - f.recycled,
		Lost:      lost + txLost,
	}
}
