package umem

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/ring"
	"golang.org/x/sys/unix"
)

// Defaults for Options fields left zero.
const (
	DefaultNumFrames = 4096
	DefaultFrameSize = 2048
	DefaultRingSize  = 2048
)

// Options configures a UMEM. The zero value (or a nil *Options) gives 4096
// frames of 2048 bytes (8 MiB, which fits the usual 8 MiB RLIMIT_MEMLOCK of
// an unprivileged process), half of them for transmit, and rings of 2048.
type Options struct {
	// NumFrames is the number of frames. Default 4096.
	NumFrames int
	// FrameSize is the size of a frame in bytes: 2048 or 4096. Default 2048.
	FrameSize int
	// Headroom is the number of bytes the kernel leaves free before each
	// received packet, for the user to prepend headers. Default 0.
	Headroom int
	// FillRingSize and CompletionRingSize are ring sizes in entries, powers
	// of two. Default 2048 each, except that the default fill ring is no
	// larger than the receive frames can fill (the largest power of two
	// at most NumFrames-TxFrames): 1024 for 2048 frames split evenly.
	FillRingSize       int
	CompletionRingSize int
	// TxFrames is the number of frames reserved for transmit; the rest
	// receive. Default NumFrames/2. Set it to NumFrames for a transmit-only
	// socket; the receive side then has no frames.
	TxFrames int
	// RxOnly gives every frame to the receive side (TxFrames is ignored).
	RxOnly bool
	// NoFill is for a UMEM whose socket never receives: one in copy
	// mode that no XDP program redirects to (a transmit-only socket),
	// whose fill ring the kernel never reads. Register then makes a
	// fill ring of one entry (FillRingSize is ignored) that Refill
	// leaves empty, so that the receive frames (NumFrames-TxFrames),
	// if any, are all left for the fill rings of the sockets that share
	// the UMEM (AddRings).
	NoFill bool
	// HugePages asks for the area to be backed by huge pages. When the
	// system has none to give, the area falls back to normal pages and
	// [UMEM.HugePages] reports false.
	HugePages bool
}

// FillRingFor is the default fill ring size for rx receive frames:
// DefaultRingSize, or the largest power of two that rx frames can fill
// when they are fewer (1 when there are none).
func FillRingFor(rx int) int {
	if rx >= DefaultRingSize {
		return DefaultRingSize
	}
	if rx < 1 {
		return 1
	}
	return 1 << (bits.Len(uint(rx)) - 1)
}

// MaxNumFrames is the largest number of frames accepted.
const MaxNumFrames = 1 << 24

// Validate fills in defaults and checks the options, naming the field at
// fault in its error.
func (o *Options) Validate() error {
	if o.NumFrames == 0 {
		o.NumFrames = DefaultNumFrames
	}
	if o.FrameSize == 0 {
		o.FrameSize = DefaultFrameSize
	}
	if o.CompletionRingSize == 0 {
		o.CompletionRingSize = DefaultRingSize
	}
	switch {
	case o.RxOnly:
		o.TxFrames = 0
	case o.TxFrames == 0:
		o.TxFrames = o.NumFrames / 2
	}
	switch {
	case o.NoFill:
		o.FillRingSize = 1
	case o.FillRingSize == 0:
		o.FillRingSize = FillRingFor(o.NumFrames - o.TxFrames)
	}
	if o.NumFrames < 1 || o.NumFrames > MaxNumFrames {
		return fmt.Errorf("NumFrames %d: must be between 1 and %d", o.NumFrames, MaxNumFrames)
	}
	if o.FrameSize != 2048 && o.FrameSize != 4096 {
		return fmt.Errorf("FrameSize %d: must be 2048 or 4096", o.FrameSize)
	}
	// The kernel keeps XDP_PACKET_HEADROOM (256) bytes at the start of each
	// frame in zero-copy mode, and a frame must still hold a full
	// Ethernet frame.
	if max := o.FrameSize - unix.XDP_PACKET_HEADROOM - 1514; o.Headroom < 0 || o.Headroom > max {
		return fmt.Errorf("Headroom %d: must be between 0 and %d for %d-byte frames", o.Headroom, max, o.FrameSize)
	}
	for _, r := range []struct {
		name string
		size int
	}{{"FillRingSize", o.FillRingSize}, {"CompletionRingSize", o.CompletionRingSize}} {
		if r.size < 1 || r.size > ring.MaxSize || bits.OnesCount(uint(r.size)) != 1 {
			return fmt.Errorf("%s %d: must be a power of two", r.name, r.size)
		}
	}
	if o.TxFrames < 0 || o.TxFrames > o.NumFrames {
		return fmt.Errorf("TxFrames %d: must be between 0 and NumFrames (%d)", o.TxFrames, o.NumFrames)
	}
	if rx := o.NumFrames - o.TxFrames; rx > 0 && rx < o.FillRingSize {
		return fmt.Errorf("UMEM too small for the rings: %d receive frames cannot fill a FillRingSize of %d; raise NumFrames or lower FillRingSize",
			rx, o.FillRingSize)
	}
	return nil
}

// UMEM is a registered packet area with its rings and frame bookkeeping.
// See the package documentation for which goroutine may call what.
type UMEM struct {
	opts Options
	// area is the mapping, which huge pages round up to 2 MiB; size is
	// the part of it registered with the kernel, NumFrames*FrameSize
	// bytes, where the frames are.
	area []byte
	size uint64
	huge bool
	// hugeErr says why huge pages were asked for and not used.
	hugeErr error
	shift   uint
	mask    uint64

	// own are the rings Register made, on the first socket's fd.
	own *Rings

	frames frames

	// mu guards what sockets sharing the UMEM change from their own
	// goroutines: the rings added for them and the end of the area.
	mu sync.Mutex
	// shared counts the Rings from AddRings not yet closed; fillFrames
	// is the frames all fill rings hold when full; lost is the receive
	// frames that rings held when they were closed (see Counts.Lost).
	shared, fillFrames, lost int
	// orphans are what closed rings held for transmit, for the transmit
	// side to take back (adopt); orphaned says there are some, and is
	// all the transmit side reads until then. txLost is the frames
	// that the kernel never returned from closed rings' transmit path,
	// txLostRx the receive frames among them.
	orphans          []orphans
	orphaned         atomic.Bool
	txLost, txLostRx int
	// registered: Register succeeded once.
	registered bool
	// closed: Close was called. The area goes with the last of Close
	// and the shared Rings' Close.
	closed bool

	closeOnce sync.Once
}

// New maps the packet area. The UMEM is not usable for packets until
// [UMEM.Register] attaches it to a socket.
func New(opts *Options) (_ *UMEM, err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("create umem: %w", err)
	}
	size := o.NumFrames * o.FrameSize
	var area []byte
	var hugeErr error
	if o.HugePages {
		// Huge pages come in 2 MiB: the mapping may be longer than
		// the frames.
		area, err = sys.MmapAnon(roundUp(size, 2<<20), true)
		if err != nil {
			hugeErr = fmt.Errorf("huge pages unavailable, using normal pages (reserve some in /proc/sys/vm/nr_hugepages): %w", err)
		}
	}
	huge := area != nil
	if area == nil {
		area, err = sys.MmapAnon(size, false)
		if err != nil {
			return nil, fmt.Errorf("create umem of %d bytes: %w", size, err)
		}
	}
	u := newUMEM(o, area)
	u.huge, u.hugeErr = huge, hugeErr
	return u, nil
}

// newUMEM makes the UMEM of the validated options o on area, which holds
// at least NumFrames*FrameSize bytes.
func newUMEM(o Options, area []byte) *UMEM {
	u := &UMEM{
		opts:  o,
		area:  area,
		size:  uint64(o.NumFrames) * uint64(o.FrameSize),
		shift: uint(bits.TrailingZeros(uint(o.FrameSize))),
		mask:  uint64(o.FrameSize - 1),
	}
	u.frames.init(o.NumFrames, o.NumFrames-o.TxFrames, u.shift)
	return u
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// memlockError explains the ENOBUFS err of XDP_UMEM_REG, which the kernel
// returns when the UMEM's pages would take the user's locked memory beyond
// RLIMIT_MEMLOCK. It charges them only to a process without CAP_IPC_LOCK,
// and over all of the user's locked memory, including UMEMs of sockets
// closed a moment ago (released some time after the socket).
func memlockError(size uint64, err error) error {
	limit := "unknown"
	if cur, lerr := sys.MemlockLimit(); lerr == nil {
		limit = fmt.Sprintf("%d bytes", cur)
		if cur == unix.RLIM_INFINITY {
			limit = "unlimited"
		}
	}
	return fmt.Errorf("UMEM of %d bytes exceeds the locked-memory limit (RLIMIT_MEMLOCK %s, shared with this user's other locked memory); CAP_IPC_LOCK or a higher limit lifts it: %w",
		size, limit, err)
}

// checkFD refuses what cannot be a file descriptor. The kernel takes
// descriptors as 32-bit ints: without this, fd+1<<32 would name fd.
func checkFD(fd int) error {
	if fd < 0 || fd > math.MaxInt32 {
		return fmt.Errorf("fd %d: not a file descriptor: %w", fd, unix.EBADF)
	}
	return nil
}

// Register registers the area with the AF_XDP socket fd (XDP_UMEM_REG) and
// creates and maps its fill and completion rings. The socket must outlive
// the mappings: call [UMEM.UnmapRings] before closing fd. After Close it
// fails with an error matching net.ErrClosed; kernel errors wrap the errno.
func (u *UMEM) Register(fd int) (err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.area == nil || u.closed {
		return fmt.Errorf("register umem: %w", errClosed)
	}
	if u.own != nil {
		return errors.New("register umem: already registered")
	}
	if err := checkFD(fd); err != nil {
		return fmt.Errorf("register umem: %w", err)
	}
	o := &u.opts
	if err := sys.RegisterUMEM(fd, sys.Addr(u.area), u.size, uint32(o.FrameSize), uint32(o.Headroom)); err != nil {
		if errors.Is(err, unix.ENOBUFS) {
			err = memlockError(u.size, err)
		}
		return fmt.Errorf("register umem: %w", err)
	}
	r, err := u.newRings(fd, o.FillRingSize, o.CompletionRingSize, o.NoFill)
	if err != nil {
		return err
	}
	u.own = r
	u.registered = true
	u.fillFrames += r.fillShare()
	return nil
}

// MapRing maps the ring at pgoff of fd, whose entries are entrySize bytes,
// and makes a view of it with newView. It serves the xsk package's RX and
// TX rings too.
func MapRing[V any](fd int, pgoff int64, off unix.XDPRingOffset, size, entrySize int,
	newView func([]byte, ring.Offsets, uint32) (*V, error)) ([]byte, *V, error) {
	return mapRing(fd, pgoff, off, size, entrySize, newView)
}

func mapRing[V any](fd int, pgoff int64, off unix.XDPRingOffset, size, entrySize int,
	newView func([]byte, ring.Offsets, uint32) (*V, error)) ([]byte, *V, error) {
	if err := checkFD(fd); err != nil {
		return nil, nil, err
	}
	length := int(off.Desc) + size*entrySize
	mem, err := sys.Mmap(fd, pgoff, length)
	if err != nil {
		return nil, nil, err
	}
	v, err := newView(mem, ring.Offsets{Producer: off.Producer, Consumer: off.Consumer, Flags: off.Flags, Desc: off.Desc}, uint32(size))
	if err != nil {
		sys.Munmap(mem)
		return nil, nil, err
	}
	return mem, v, nil
}

// UnmapRings unmaps the fill and completion rings that Register made. The
// mappings hold a reference to the socket, so they go before the socket
// is closed. The receive frames the kernel held through them are lost
// (see [Counts]), and so are the frames sent through the socket that the
// completion ring had not returned; those it had returned go back as
// [Rings.Close] says. No transmit-side call on the rings may be running.
func (u *UMEM) UnmapRings() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.own
	if r == nil {
		return nil
	}
	u.own = nil
	u.fillFrames -= r.fillShare()
	u.lost += r.held
	r.orphan()
	return r.unmap()
}

// Close unmaps the rings Register made and the area. The socket it was
// registered with should be closed first. While sockets that share the
// UMEM (AddRings) remain, the area stays mapped for them, more may join
// them through AddRings, and the last [Rings.Close] unmaps it. The first
// Close reports what failed; later ones return nil.
func (u *UMEM) Close() (err error) {
	u.closeOnce.Do(func() {
		errs := []error{u.UnmapRings()}
		u.mu.Lock()
		u.closed = true
		if u.shared == 0 {
			errs = append(errs, u.unmapArea())
		}
		u.mu.Unlock()
		err = errors.Join(errs...)
	})
	return err
}

// unmapArea unmaps the packet area. u.mu is held.
func (u *UMEM) unmapArea() error {
	err := sys.Munmap(u.area)
	u.area = nil
	if err != nil {
		return fmt.Errorf("unmap umem: %w", err)
	}
	return nil
}

// Options returns the options in force, defaults filled in.
func (u *UMEM) Options() Options { return u.opts }

// HugePages reports whether the area is backed by huge pages.
func (u *UMEM) HugePages() bool { return u.huge }

// HugePagesErr says why huge pages were asked for and not used: nil when
// they were used or not asked for.
func (u *UMEM) HugePagesErr() error { return u.hugeErr }

// Area is the packet area: the NumFrames*FrameSize bytes registered with
// the kernel, without what rounding the mapping up to huge pages added. It
// is valid until the area is unmapped (see Close), nil after.
func (u *UMEM) Area() []byte {
	if u.area == nil {
		return nil
	}
	return u.area[:u.size:u.size]
}

// FrameSize is the size of one frame in bytes.
func (u *UMEM) FrameSize() int { return u.opts.FrameSize }

// Rings are the fill and completion rings Register made, nil before.
func (u *UMEM) Rings() *Rings { return u.own }

// FillRing is the fill ring Register made, nil before.
func (u *UMEM) FillRing() *ring.Producer[uint64] {
	if u.own == nil {
		return nil
	}
	return u.own.fill
}

// CompletionRing is the completion ring Register made, nil before.
func (u *UMEM) CompletionRing() *ring.Consumer[uint64] {
	if u.own == nil {
		return nil
	}
	return u.own.comp
}

func (u *UMEM) frameBase(addr uint64) uint64    { return addr &^ u.mask }
func (u *UMEM) inArea(addr uint64) bool         { return addr < u.size }
func (u *UMEM) frameEnd(addr uint64) uint64     { return u.frameBase(addr) + uint64(u.opts.FrameSize) }
func (u *UMEM) payloadStart(base uint64) uint64 { return base + uint64(u.opts.Headroom) }
func (u *UMEM) capacity() uint32                { return uint32(u.opts.FrameSize - u.opts.Headroom) }

// Frame returns the d.Len bytes at d.Addr, with capacity to the end of
// their frame, or nil when they are not inside one of the NumFrames
// frames (or the area is unmapped).
func (u *UMEM) Frame(d ring.Desc) []byte { return u.slice(d.Addr, d.Len) }

func (u *UMEM) slice(addr uint64, n uint32) []byte {
	// The last test fails only once the area is unmapped.
	end := u.frameEnd(addr)
	if !u.inArea(addr) || uint64(n) > end-addr || end > uint64(len(u.area)) {
		return nil
	}
	return u.area[addr : addr+uint64(n) : end]
}

// errClosed is the error for a UMEM that is closed; it matches
// net.ErrClosed.
var errClosed = fmt.Errorf("the UMEM is closed: %w", net.ErrClosed)
