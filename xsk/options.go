package xsk

import (
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/ring"
	"github.com/afxdp/afxdp/umem"
	"github.com/cilium/ebpf"
)

// BindMode selects how the socket binds to its queue.
type BindMode int

const (
	// BindAuto binds in zero-copy mode where the driver supports it and
	// in copy mode elsewhere. A driver that advertises no AF_XDP
	// zero-copy in its XDP features (Linux 6.3+) is not asked; otherwise
	// a failed zero-copy bind falls back. Socket.ZeroCopyErr says why a
	// socket ended in copy mode.
	BindAuto BindMode = iota
	// BindCopy forces copy mode, which every driver supports.
	BindCopy
	// BindZeroCopy forces zero-copy; Open fails where the driver lacks it.
	BindZeroCopy
)

// String returns "auto", "copy" or "zero-copy".
func (m BindMode) String() string {
	switch m {
	case BindAuto:
		return "auto"
	case BindCopy:
		return "copy"
	case BindZeroCopy:
		return "zero-copy"
	}
	return fmt.Sprintf("BindMode(%d)", int(m))
}

// Default ring size, in entries.
const DefaultRingSize = 2048

// Options configures a socket. The zero value (or a nil *Options) gives a
// socket that loads its own XDP program (driver mode, else generic), binds
// zero-copy where the driver can and copy mode elsewhere, uses need_wakeup,
// and has a UMEM of 4096 frames of 2048 bytes (8 MiB) split evenly between
// receive and transmit, with every ring 2048 entries.
type Options struct {
	// NumFrames is the number of UMEM frames. Default 4096.
	NumFrames int
	// FrameSize is the frame size in bytes, 2048 or 4096. Default 2048.
	FrameSize int
	// Headroom is the number of bytes kept free before each received
	// packet. Default 0; at most FrameSize-1770 (278 for 2048-byte
	// frames), so that a full Ethernet frame fits after the kernel's 256
	// bytes of zero-copy headroom and this.
	Headroom int
	// TxFrames is the number of frames reserved for transmit.
	// Default NumFrames/2, or NumFrames for a TxOnly socket that binds
	// in copy mode (in zero-copy mode the queue's receive buffers, for
	// the kernel's stack too, come from the socket's fill ring). A
	// TxOnly socket in copy mode that other sockets are to receive
	// through (ShareUMEM) needs it below NumFrames: the rest are their
	// receive frames.
	TxFrames int
	// HugePages backs the UMEM with huge pages where the system has them.
	HugePages bool

	// Ring sizes in entries, powers of two. Default 2048 each, but a
	// FillRingSize left zero is no larger than the receive frames can
	// fill: NumFrames-TxFrames, or with ShareUMEM the receive frames no
	// other fill ring holds (rounded down to a power of two).
	//
	// In copy mode the kernel holds at most RxRingSize receive frames at
	// a time, in the fill and RX rings together: it fills a frame from
	// the fill ring before it looks for room in the RX ring, so more
	// frames would never let more packets in, and would only make the
	// packets that come while the RX ring is full cost a copy before
	// they are dropped (Stats.RxRingFull) instead of being dropped
	// without one (Stats.FillRingEmpty). A FillRingSize above RxRingSize
	// buys nothing there, and RxRingSize is what rides out a receiver's
	// pause: at 4 Mpps, 4096 entries last 1 ms.
	RxRingSize, TxRingSize, FillRingSize, CompletionRingSize int

	// Bind selects zero-copy or copy mode. Default BindAuto.
	Bind BindMode
	// NoNeedWakeup turns off need_wakeup (XDP_USE_NEED_WAKEUP), making the
	// kernel poll the rings instead of waiting to be kicked.
	NoNeedWakeup bool
	// ManualRings stops Receive from refilling the fill ring and Alloc and
	// Transmit from reaping the completion ring: the caller calls Refill
	// and Complete itself. Open still primes the fill ring.
	ManualRings bool

	// BusyPoll turns on preferred busy polling (SO_PREFER_BUSY_POLL and
	// SO_BUSY_POLL, in microseconds): the kernel runs the driver's NAPI
	// loop in the context of the program's wakeup calls instead of in a
	// softirq, and Receive makes such a call whenever it finds nothing.
	// It works only where the driver's NAPI instance has an ID, which
	// Socket.NAPIID reports once packets have arrived (veth: none).
	// Needs CAP_NET_ADMIN. Default 0: off.
	BusyPoll time.Duration
	// BusyPollBudget is the most packets one busy-poll round processes
	// (SO_BUSY_POLL_BUDGET). Default 64 when BusyPoll is set.
	BusyPollBudget int
	// TxBudget is the most frames one kick sends in copy mode
	// (XDP_MAX_TX_SKB_BUDGET, Linux 6.17 and later), from 32 to
	// TxRingSize. Default 0: the kernel's own (32).
	TxBudget int

	// XDPMode selects the attach mode of the XDP program Open loads.
	// Default bpf.AttachAuto: driver mode, else generic.
	XDPMode bpf.AttachMode
	// Filter restricts which frames the program redirects; the rest go to
	// the kernel's stack. Default: all frames.
	Filter bpf.Filter
	// ReplaceXDP lets Open replace an XDP program that someone else
	// attached. Without it Open fails with an error matching bpf.ErrBusy.
	ReplaceXDP bool
	// MaxQueues is the size of the XSKMAP of the program Open loads.
	// Default bpf.DefaultMaxQueues (64), raised to cover queue.
	MaxQueues int

	// XSKMap, when set, is an XSKMAP that someone else's program
	// redirects into (an agent's, received over a Unix socket or opened
	// from a pinned path). Open registers the socket at its queue there
	// and loads no program.
	XSKMap *ebpf.Map
	// NoXDP makes Open load no program and register the socket nowhere:
	// someone else puts FD into their XSKMAP.
	NoXDP bool
	// TxOnly is for a socket that only transmits: Open registers it in no
	// XSKMAP, so the queue's frames keep going to the kernel's stack (ARP,
	// SSH and the rest) instead of to a socket that never reads them. In
	// zero-copy mode Open makes sure an XDP program is attached, since
	// drivers such as i40e, ice and mlx5 transmit from a zero-copy socket
	// only while one is: any program already on the interface will do
	// (this process's own is then held, as a receiving socket holds it,
	// so that it stays attached while the socket is open); otherwise Open
	// attaches its own, with the socket nowhere in its map, which passes
	// every frame on. In copy mode it loads no program, and its fill
	// ring (of one entry; FillRingSize is not used) stays empty, since
	// the kernel never reads it: the UMEM's receive frames are left for
	// the sockets that share it. There are none unless TxFrames is set
	// below NumFrames, and a receiving socket cannot share the UMEM
	// without them (Open says so); a TxOnly socket can share any UMEM
	// in copy mode, also one whose receive frames other fill rings
	// hold. The options that shape a program (Filter, XDPMode) are not
	// checked against one already there.
	TxOnly bool

	// ShareUMEM makes the new socket use the UMEM of this open socket
	// (XDP_SHARED_UMEM) instead of one of its own, so that a frame
	// received on one may be transmitted on the other without a copy:
	// forwarding between interfaces, or between queues. Any open socket
	// on the UMEM will do: the one that made it, or one sharing it, also
	// after the first has closed. The new socket must be on another
	// interface or queue than that socket; it gets fill and completion
	// rings of its own (FillRingSize, CompletionRingSize), and the UMEM
	// must have receive frames enough to fill every sharing socket's fill
	// ring (see the package doc; a TxOnly socket in copy mode fills
	// none). The UMEM fields above (NumFrames,
	// FrameSize, Headroom, TxFrames, HugePages) are that socket's: leave
	// them zero or the same. The bind mode and need_wakeup follow that
	// socket's (Bind may be BindAuto or its mode, NoNeedWakeup must
	// match).
	//
	// Sockets sharing a UMEM are driven as one: one goroutine makes the
	// receive-side calls of all of them and one goroutine, which may be
	// the same, their transmit-side calls; Open with ShareUMEM counts as
	// a receive-side call. The UMEM's area is unmapped when the last of
	// them closes. The receive frames a closed socket's fill and RX rings
	// held are lost to the others (Frames().Lost counts them, and they
	// leave no room for another fill ring).
	ShareUMEM *Socket
}

func (o *Options) validate(queue int) error {
	if o.RxRingSize == 0 {
		o.RxRingSize = DefaultRingSize
	}
	if o.TxRingSize == 0 {
		o.TxRingSize = DefaultRingSize
	}
	for _, r := range []struct {
		name string
		size int
	}{{"RxRingSize", o.RxRingSize}, {"TxRingSize", o.TxRingSize}} {
		if r.size < 1 || r.size > ring.MaxSize || bits.OnesCount(uint(r.size)) != 1 {
			return fmt.Errorf("%s %d: must be a power of two", r.name, r.size)
		}
	}
	if o.Bind < BindAuto || o.Bind > BindZeroCopy {
		return fmt.Errorf("Bind %d: unknown bind mode", int(o.Bind))
	}
	if o.XDPMode < bpf.AttachAuto || o.XDPMode > bpf.AttachGeneric {
		return fmt.Errorf("XDPMode %d: unknown attach mode", int(o.XDPMode))
	}
	if o.XSKMap != nil && o.NoXDP {
		return fmt.Errorf("XSKMap and NoXDP: set at most one")
	}
	if o.TxOnly && (o.XSKMap != nil || o.NoXDP) {
		return fmt.Errorf("TxOnly with XSKMap or NoXDP: TxOnly registers the socket nowhere and decides itself whether to attach a program; set only one")
	}
	if o.XSKMap != nil && o.XSKMap.Type() != ebpf.XSKMap {
		return fmt.Errorf("XSKMap: map type %s, want XSKMap", o.XSKMap.Type())
	}
	if o.XSKMap != nil && uint32(queue) >= o.XSKMap.MaxEntries() {
		return fmt.Errorf("XSKMap: queue %d beyond the map's %d entries", queue, o.XSKMap.MaxEntries())
	}
	if o.BusyPoll < 0 || o.BusyPoll > time.Duration(math.MaxInt32)*time.Microsecond {
		return fmt.Errorf("BusyPoll %v: must be between 0 and %v", o.BusyPoll, time.Duration(math.MaxInt32)*time.Microsecond)
	}
	if o.BusyPollBudget < 0 || o.BusyPollBudget > math.MaxUint16 {
		return fmt.Errorf("BusyPollBudget %d: must be between 0 and %d", o.BusyPollBudget, math.MaxUint16)
	}
	if o.BusyPollBudget > 0 && o.BusyPoll == 0 {
		return fmt.Errorf("BusyPollBudget %d: needs BusyPoll", o.BusyPollBudget)
	}
	if o.TxBudget != 0 && (o.TxBudget < 32 || o.TxBudget > o.TxRingSize) {
		// The kernel refuses budgets below its default of 32 (EPERM).
		return fmt.Errorf("TxBudget %d: must be 0 or between 32 and TxRingSize (%d)", o.TxBudget, o.TxRingSize)
	}
	if o.MaxQueues < 0 {
		return fmt.Errorf("MaxQueues %d: must not be negative", o.MaxQueues)
	}
	if sh := o.ShareUMEM; sh != nil && sh.umem != nil {
		u := sh.umem.Options()
		for _, f := range []struct {
			name      string
			v, shared int
		}{{"NumFrames", o.NumFrames, u.NumFrames}, {"FrameSize", o.FrameSize, u.FrameSize},
			{"Headroom", o.Headroom, u.Headroom}, {"TxFrames", o.TxFrames, u.TxFrames}} {
			if f.v != 0 && f.v != f.shared {
				return fmt.Errorf("%s %d with ShareUMEM: the shared UMEM has %d; leave it zero or the same", f.name, f.v, f.shared)
			}
		}
		if o.HugePages && !sh.umem.HugePages() {
			return fmt.Errorf("HugePages with ShareUMEM: the shared UMEM is not on huge pages")
		}
		if o.FillRingSize == 0 {
			// As large as the receive frames left can fill, up to
			// the default; with none left, AddRings says so.
			o.FillRingSize = DefaultRingSize
			if spare := sh.umem.SpareRxFrames(); spare > 0 {
				o.FillRingSize = umem.FillRingFor(spare)
			}
		}
		if o.CompletionRingSize == 0 {
			o.CompletionRingSize = DefaultRingSize
		}
	}
	return nil
}
