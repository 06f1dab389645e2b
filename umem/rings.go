package umem

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/ring"
	"golang.org/x/sys/unix"
)

// Rings are a fill ring and a completion ring, through which the kernel
// takes frames of the UMEM to receive into and returns frames it has sent.
// [UMEM.Register] makes the first socket's. A socket that shares the UMEM
// on another interface or queue (XDP_SHARED_UMEM) needs its own, from
// [UMEM.AddRings]; the frames they carry come from the one UMEM.
//
// Refill is a receive-side call and Alloc and Complete are transmit-side
// calls, in the sense of the package documentation: when sockets share a
// UMEM, one goroutine makes the receive-side calls of all of them, and one
// goroutine (which may be the same) the transmit-side calls.
type Rings struct {
	u                *UMEM
	fillMem, compMem []byte
	fill             *ring.Producer[uint64]
	comp             *ring.Consumer[uint64]
	fillSize         int
	// noFill: the socket never receives, and Refill leaves its fill
	// ring empty (Options.NoFill, AddRingsNoFill).
	noFill bool
	// completed counts the frames Complete took off the completion
	// ring; Stats read it from other goroutines.
	completed atomic.Uint64
	// held counts the receive frames Refill put in the fill ring that
	// have not come back through Received or Unfill: the kernel holds
	// them, in the fill ring, the RX ring or in between. Receive side.
	held int
	// inflight counts the frames Send handed the kernel through this
	// socket's TX ring that Complete has not taken off its completion
	// ring, inflightRx the receive frames (forwarded) among them.
	// Transmit side.
	inflight, inflightRx int
	// added: made by AddRings, holding the area for its socket.
	added  bool
	closed bool
}

// newRings creates the fill and completion rings of the AF_XDP socket fd
// and maps them; noFill says Refill is to leave the fill ring empty.
func (u *UMEM) newRings(fd, fillSize, compSize int, noFill bool) (_ *Rings, err error) {
	if err := sys.SetRingSize(fd, unix.XDP_UMEM_FILL_RING, fillSize); err != nil {
		return nil, fmt.Errorf("create fill ring of %d: %w", fillSize, err)
	}
	if err := sys.SetRingSize(fd, unix.XDP_UMEM_COMPLETION_RING, compSize); err != nil {
		return nil, fmt.Errorf("create completion ring of %d: %w", compSize, err)
	}
	off, err := sys.MmapOffsets(fd)
	if err != nil {
		return nil, fmt.Errorf("register umem: %w", err)
	}
	r := &Rings{u: u, fillSize: fillSize, noFill: noFill}
	defer func() {
		if err != nil {
			r.unmap()
		}
	}()
	r.fillMem, r.fill, err = mapRing(fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, fillSize, 8, ring.NewProducer[uint64])
	if err != nil {
		return nil, fmt.Errorf("map fill ring: %w", err)
	}
	r.compMem, r.comp, err = mapRing(fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, compSize, 8, ring.NewConsumer[uint64])
	if err != nil {
		return nil, fmt.Errorf("map completion ring: %w", err)
	}
	return r, nil
}

// fillShare is how many receive frames the fill ring holds when full: the
// share of the receive frames set aside for it.
func (r *Rings) fillShare() int {
	if r.noFill {
		return 0
	}
	return r.fillSize
}

// SpareRxFrames is how many receive frames no fill ring holds: what
// another AddRings may have, at most.
func (u *UMEM) SpareRxFrames() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return max(int(u.frames.rxFrames)-u.fillFrames-u.goneRx(), 0)
}

// goneRx is the receive frames lost with closed rings: those counted, and
// those that closed rings' orphans will add when the transmit side takes
// them back (adopt), which may not have happened yet. It reads no frame
// state, which is the transmit side's: an address says whether a frame is
// a receive frame. The caller holds u.mu.
func (u *UMEM) goneRx() int {
	gone := u.lost + u.txLostRx
	for _, o := range u.orphans {
		back := 0
		for _, addr := range o.completed {
			if addr>>u.shift < uint64(u.frames.rxFrames) {
				back++
			}
		}
		gone += max(o.inflightRx-back, 0)
	}
	return gone
}

// AddRings creates fill and completion rings of fillSize and compSize
// entries (powers of two) on fd, an AF_XDP socket that will bind to
// another interface or queue sharing this UMEM (XDP_SHARED_UMEM), and maps
// them. The UMEM must have been registered, and a socket must still use
// it: the one it was registered with, or one that shares it, so that
// sharing goes on after the first socket closes. It must have receive
// frames enough to fill every fill ring at once, not counting the receive
// frames lost with closed sockets (in Counts.Lost). The area stays mapped
// until both Close and the Close of every Rings from AddRings; unmap the
// rings before closing fd. Once the area is unmapped, or no socket uses the
// UMEM any more, AddRings fails with an error matching net.ErrClosed.
func (u *UMEM) AddRings(fd, fillSize, compSize int) (*Rings, error) {
	return u.addRings(fd, fillSize, compSize, false)
}

// AddRingsNoFill is AddRings for a socket that never receives, as
// Options.NoFill is for the socket that registers the UMEM: its fill ring
// has one entry that Refill leaves empty, and takes no receive frames, so
// that it may share a UMEM that has none to spare.
func (u *UMEM) AddRingsNoFill(fd, compSize int) (*Rings, error) {
	return u.addRings(fd, 1, compSize, true)
}

func (u *UMEM) addRings(fd, fillSize, compSize int, noFill bool) (*Rings, error) {
	for _, r := range []struct {
		name string
		size int
	}{{"FillRingSize", fillSize}, {"CompletionRingSize", compSize}} {
		if r.size < 1 || r.size > ring.MaxSize || bits.OnesCount(uint(r.size)) != 1 {
			return nil, fmt.Errorf("share umem: %s %d: must be a power of two", r.name, r.size)
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.area == nil:
		return nil, fmt.Errorf("share umem: %w", errClosed)
	case !u.registered:
		return nil, errors.New("share umem: not registered with a socket yet")
	case u.own == nil && u.shared == 0:
		// The kernel's UMEM went with the last socket that used it.
		return nil, fmt.Errorf("share umem: no socket uses it any more: %w", errClosed)
	}
	if err := checkFD(fd); err != nil {
		return nil, fmt.Errorf("share umem: %w", err)
	}
	share := fillSize
	if noFill {
		share = 0
	}
	if rx := int(u.frames.rxFrames); rx == 0 && share > 0 {
		return nil, fmt.Errorf("share umem: the UMEM has no receive frames for a fill ring of %d: all %d frames transmit (TxFrames %d); give the socket that made the UMEM TxFrames below NumFrames",
			fillSize, u.opts.NumFrames, u.opts.TxFrames)
	}
	if rx, gone := int(u.frames.rxFrames), u.goneRx(); u.fillFrames+gone+share > rx {
		var lost string
		if gone > 0 {
			lost = fmt.Sprintf(", and %d went with closed sockets", gone)
		}
		return nil, fmt.Errorf("share umem: UMEM too small for another fill ring of %d: its %d receive frames already fill rings of %d in all%s; give the socket that made the UMEM more receive frames (raise its NumFrames, or lower its TxFrames or FillRingSize), or this one a smaller FillRingSize",
			fillSize, rx, u.fillFrames, lost)
	}
	r, err := u.newRings(fd, fillSize, compSize, noFill)
	if err != nil {
		return nil, fmt.Errorf("share umem: %w", err)
	}
	r.added = true
	u.shared++
	u.fillFrames += share
	return r, nil
}

// unmap unmaps the rings.
func (r *Rings) unmap() error {
	err := errors.Join(sys.Munmap(r.compMem), sys.Munmap(r.fillMem))
	r.fillMem, r.compMem, r.fill, r.comp = nil, nil, nil, nil
	return err
}

// Close unmaps rings from AddRings, and the UMEM's area if the UMEM was
// closed and these were the last. The receive frames that the kernel held
// through their fill ring are lost to the UMEM (see Counts.Lost); so are
// the frames sent through the socket's TX ring that the completion ring
// had not returned by now, while those it had returned go back to the
// UMEM at the next Complete on the transmit side (or Counts). No
// transmit-side call on these rings may be running. Close the socket
// after. A second Close returns nil.
func (r *Rings) Close() error {
	if !r.added {
		return nil
	}
	u := r.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.orphan()
	errs := []error{r.unmap()}
	u.shared--
	u.fillFrames -= r.fillShare()
	u.lost += r.held
	if u.shared == 0 && u.closed {
		errs = append(errs, u.unmapArea())
	}
	return errors.Join(errs...)
}

// Unfill takes back the frames in the fill ring that the kernel has not
// taken and returns how many: for a socket whose bind failed, so that the
// frames Refill gave it are not lost to the UMEM. Receive side.
func (r *Rings) Unfill() int {
	if r.fill == nil {
		return 0
	}
	u := r.u
	f := &u.frames
	n := r.fill.Withdraw(func(addr uint64) {
		f.state[addr>>u.shift] = stateFree
		f.rxFree = append(f.rxFree, addr)
	})
	f.rxFill -= int(n)
	r.held -= int(n)
	return int(n)
}

// Held is the number of receive frames the kernel holds through these
// rings: put in the fill ring by Refill and not yet handed back through
// Received. Receive side.
func (r *Rings) Held() int { return r.held }

// FillRing is the fill ring itself, nil after Close.
func (r *Rings) FillRing() *ring.Producer[uint64] { return r.fill }

// CompletionRing is the completion ring itself, nil after Close.
func (r *Rings) CompletionRing() *ring.Consumer[uint64] { return r.comp }

// Completed is the number of frames Complete has taken off the completion
// ring. It may be read from any goroutine.
func (r *Rings) Completed() uint64 { return r.completed.Load() }

// Refill, Received, Alloc and Complete of the UMEM work on the rings
// Register made.

// Refill moves free receive frames into the fill ring, first taking back
// frames that transmit completed. It returns the number added. Receive side.
func (u *UMEM) Refill() int {
	if u.own == nil {
		return 0
	}
	return u.own.Refill()
}

// Alloc fills dst with free transmit frames, reaping completions first when
// too few are free, and returns how many it got. Each descriptor's Addr is
// where the packet starts (after Headroom) and Len the room there.
// Transmit side.
func (u *UMEM) Alloc(dst []ring.Desc) int {
	if u.own == nil {
		return u.alloc(dst)
	}
	return u.own.Alloc(dst)
}

// AllocFree is Alloc that takes only frames already free and never reaps a
// completion ring: for callers that reap themselves. Transmit side.
func (u *UMEM) AllocFree(dst []ring.Desc) int { return u.alloc(dst) }

// Complete takes finished transmissions off the completion ring: transmit
// frames become free, forwarded receive frames start back to the receive
// side. It returns the number completed. Transmit side.
func (u *UMEM) Complete() int {
	if u.own == nil {
		return 0
	}
	return u.own.Complete()
}
