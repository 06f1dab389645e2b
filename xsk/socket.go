package xsk

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/ring"
	"github.com/afxdp/afxdp/umem"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Desc describes a packet in a frame: where it starts in the UMEM and how
// long it is.
type Desc = ring.Desc

// Socket is an AF_XDP socket bound to one queue of one interface, with its
// UMEM and rings. See the package documentation for its concurrency rules.
// A Socket that Open did not return, such as the zero value, fails every
// call that returns an error, except Close (nil), with an error matching
// unix.EINVAL.
type Socket struct {
	fd      int
	evfd    int
	ifname  string
	ifindex int
	queue   int
	// netns is the inode of the network namespace Open ran in, where
	// ifindex names the interface; 0 when it could not be read.
	netns uint64

	umem   *umem.UMEM
	rings  *umem.Rings // the fill and completion rings this socket uses
	shared bool        // the UMEM is another socket's (Options.ShareUMEM)
	// group are the open sockets on the UMEM, this one among them once
	// Open has succeeded: Alloc reaps and kicks the others (see Alloc).
	group  *shareGroup
	rxMem  []byte
	txMem  []byte
	rx     *ring.Consumer[Desc]
	tx     *ring.Producer[Desc]
	fill   *ring.Producer[uint64]
	zc     bool
	zcErr  error // why BindAuto ended in copy mode
	wakeup bool
	manual bool
	// busyPoll makes Receive call into the kernel whenever it finds
	// nothing, to drive the driver's polling.
	busyPoll bool
	txBudget int
	// rxCap, when not 0, caps the receive frames the kernel holds
	// through this socket's fill ring (in it, and in the RX ring behind
	// it), which rings.Held counts. Receive side. See refill.
	rxCap int

	prog     *sharedProg // the process's program, when this socket uses it
	xskmap   *ebpf.Map   // where the socket is registered, when it is
	xdpMode  bpf.AttachMode
	external bool

	closed  atomic.Bool
	waiters atomic.Int32
	_       [64]byte
	rxSide  sideCounters
	txSide  sideCounters

	closeOnce sync.Once
}

// sideCounters are written by one side; the padding keeps the receiving and
// transmitting goroutines off each other's cache line.
type sideCounters struct {
	busy    atomic.Uint32
	packets atomic.Uint64
	bytes   atomic.Uint64
	batches atomic.Uint64
	wakeups atomic.Uint64
	dropped atomic.Uint64 // transmit side: see Stats.TxDropped
	// idle counts the Receives in a row that found nothing: receive
	// side, read and written by the receiving goroutine only.
	idle uint32
	_    [12]byte
}

// Open creates an AF_XDP socket on queue of the interface ifname, with its
// UMEM and rings, binds it, and (unless opts say otherwise) loads and
// attaches the XDP program that redirects the queue's frames to it.
//
// Open must run in the network namespace of the interface: the socket and
// the program belong to the namespace of the calling thread.
//
// With Options.ShareUMEM, Open puts frames of the shared UMEM in the new
// socket's fill ring: a receive-side call on the sockets sharing it (see
// the package documentation), to be made on the goroutine that receives
// on them or while that goroutine is not receiving.
func Open(ifname string, queue int, opts *Options) (_ *Socket, err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	s := &Socket{fd: -1, evfd: -1, ifname: ifname, queue: queue}
	defer func() {
		if err != nil {
			err = s.opErr("open", err)
		}
	}()
	if ifname == "" {
		return nil, errors.New("interface name is empty")
	}
	if queue < 0 {
		return nil, fmt.Errorf("queue %d: must not be negative", queue)
	}
	if err := o.validate(queue); err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, lookupError(err)
	}
	s.ifindex = ifi.Index
	// An ifindex names an interface only within its namespace: sockets
	// sharing a UMEM may be in two, with equal indexes.
	s.netns, _ = currentNetns()
	q, err := sys.QueryLinkQueues(s.ifindex)
	if err != nil {
		return nil, err
	}
	if q.RX > 0 && queue >= q.RX {
		return nil, fmt.Errorf("queue %d: the interface has at most %d receive queues: %w", queue, q.RX, unix.EINVAL)
	}

	defer func() {
		if err != nil {
			s.teardown()
		}
	}()
	if o.ShareUMEM != nil {
		if err := s.bindShared(&o, o.ShareUMEM); err != nil {
			return nil, err
		}
	} else {
		txFrames := o.TxFrames
		// In copy mode the kernel reads the fill ring only for a
		// socket that a program redirects to, which a TxOnly socket
		// never is: its fill ring stays empty, and the receive frames
		// are left for the sockets that share its UMEM. By default
		// there are none: every frame transmits. In zero-copy mode
		// the queue's receive buffers come from the fill ring, also
		// for the frames that go on to the kernel's stack, so there
		// the default split stays.
		noFill := o.TxOnly && copyOnly(&o, s.ifindex)
		if noFill && txFrames == 0 {
			txFrames = cmp.Or(o.NumFrames, umem.DefaultNumFrames)
		}
		s.umem, err = umem.New(&umem.Options{
			NumFrames:          o.NumFrames,
			FrameSize:          o.FrameSize,
			Headroom:           o.Headroom,
			TxFrames:           txFrames,
			HugePages:          o.HugePages,
			FillRingSize:       o.FillRingSize,
			CompletionRingSize: o.CompletionRingSize,
			NoFill:             noFill,
		})
		if err != nil {
			return nil, err
		}
		if err := s.bind(&o); err != nil {
			return nil, err
		}
	}
	if s.evfd, err = sys.Eventfd(); err != nil {
		return nil, err
	}

	switch {
	case o.NoXDP, o.TxOnly && !s.zc:
		s.external = true
	case o.TxOnly:
		// Zero-copy transmit needs a program on the interface, any
		// program. The socket stays out of every map.
		if s.prog, err = txOnlyProgram(s.ifindex, queue, &o); err != nil {
			return nil, err
		}
		if s.prog == nil {
			s.external = true
			break
		}
		s.xdpMode = s.prog.att.Mode()
	case o.XSKMap != nil:
		s.external = true
		if err := o.XSKMap.Update(uint32(queue), uint32(s.fd), ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("register in xskmap: %w", err)
		}
		s.xskmap = o.XSKMap
	default:
		s.prog, err = acquireProgram(s.ifindex, queue, &o)
		if err != nil {
			return nil, err
		}
		s.xdpMode = s.prog.att.Mode()
		if err := s.prog.prog.Register(queue, s.fd); err != nil {
			return nil, err
		}
		s.xskmap = s.prog.prog.XSKMap()
	}
	if s.group == nil {
		s.group = new(shareGroup)
	}
	s.group.join(s)
	if s.shared {
		// Nothing can fail any more: only now does the new socket get
		// frames of the shared UMEM. Had Open failed with frames in
		// its fill ring, the kernel could hold some of them after the
		// socket's close returned (a zero-copy driver until a
		// deferred work item detaches the socket from the queue), so
		// they could not be given back. Packets that come before
		// this find no fill frame and are dropped.
		s.refill()
	}
	return s, nil
}

// noSuchInterface is the text of the error net.InterfaceByName returns for
// a name that no interface has (its errNoSuchInterface, unexported).
const noSuchInterface = "no such network interface"

// lookupError says why net.InterfaceByName failed: an unknown interface
// (ENODEV) only when no interface has the name; any other failure, such as
// EMFILE from the netlink socket that reads the interface table, wrapped
// as it is.
func lookupError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil && oe.Err.Error() == noSuchInterface {
		return fmt.Errorf("unknown interface: %w", unix.ENODEV)
	}
	return fmt.Errorf("look up interface: %w", err)
}

// bind creates the socket, registers the UMEM, maps the rings and binds,
// falling back from zero-copy to copy mode in BindAuto. A socket whose
// zero-copy bind failed is made anew for the copy-mode attempt.
func (s *Socket) bind(o *Options) error {
	modes := []BindMode{o.Bind}
	if o.Bind == BindAuto {
		modes = []BindMode{BindZeroCopy, BindCopy}
		// A driver that says it has no AF_XDP zero-copy (veth, for
		// one) is not asked: a failed zero-copy bind costs a second
		// UMEM registration, and the kernel returns the first one's
		// memlock charge only later, so that without CAP_IPC_LOCK the
		// copy-mode registration could fail under RLIMIT_MEMLOCK.
		// Where the kernel cannot tell (before Linux 6.3), the bind
		// finds out.
		if feats, err := sys.QueryXDPFeatures(s.ifindex); err == nil && feats&sys.XDPActXSKZeroCopy == 0 {
			modes = []BindMode{BindCopy}
			s.zcErr = fmt.Errorf("the driver does not advertise AF_XDP zero-copy (no NETDEV_XDP_ACT_XSK_ZEROCOPY in its XDP features): %w", ErrNotSupported)
		}
	}
	if err := s.checkXDP(o); err != nil {
		return err
	}
	for _, mode := range modes {
		// Nothing in setup depends on the mode.
		if err := s.setup(o); err != nil {
			return err
		}
		err := s.bindOnce(o, mode)
		if err == nil {
			break
		}
		if mode == BindZeroCopy && len(modes) > 1 && zeroCopyUnsupported(err) {
			s.zcErr = fmt.Errorf("bind in zero-copy mode: %w: %w", ErrNotSupported, err)
			// Start over with a fresh socket in copy mode.
			if err := s.unsetup(); err != nil {
				return err
			}
			continue
		}
		if mode == BindZeroCopy && zeroCopyUnsupported(err) {
			return fmt.Errorf("%w: the driver does not support AF_XDP zero-copy (%w)", err, ErrNotSupported)
		}
		return err
	}
	if err := s.learnMode(); err != nil {
		return err
	}
	s.wakeup = !o.NoNeedWakeup
	s.manual = o.ManualRings
	return nil
}

// checkXDP fails as Open would after binding when the process's program on
// the interface cannot take the socket (another Filter or XDPMode, a queue
// beyond its XSKMAP), so that Open fails before the kernel has the socket.
func (s *Socket) checkXDP(o *Options) error {
	if o.NoXDP || o.XSKMap != nil || o.TxOnly {
		return nil
	}
	return checkProgram(s.ifindex, s.queue, o)
}

// learnMode reads the mode the bound socket got. Zero-copy lifts the cap
// on the frames refill lends the kernel (see refill).
func (s *Socket) learnMode() error {
	flags, err := sys.XDPOptions(s.fd)
	if err != nil {
		return err
	}
	s.zc = flags&unix.XDP_OPTIONS_ZEROCOPY != 0
	if s.zc {
		s.rxCap = 0
	}
	return nil
}

// tune sets the socket options that change how the kernel serves it. The
// TX ring must exist (XDP_MAX_TX_SKB_BUDGET is checked against it); the
// socket need not be bound, and Open tunes it before, so that a refusal
// (busy polling needs CAP_NET_ADMIN) comes before the kernel has frames.
func (s *Socket) tune(o *Options) error {
	if o.BusyPoll > 0 {
		budget := o.BusyPollBudget
		if budget == 0 {
			budget = 64
		}
		for _, opt := range []struct {
			name     string
			opt, val int
		}{
			{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1},
			{"SO_BUSY_POLL", unix.SO_BUSY_POLL, int(o.BusyPoll / time.Microsecond)},
			{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, budget},
		} {
			if err := sys.SetsockoptInt(s.fd, unix.SOL_SOCKET, opt.opt, opt.val); err != nil {
				return fmt.Errorf("set busy polling: %s %d: %w", opt.name, opt.val, err)
			}
		}
		s.busyPoll = true
	}
	if o.TxBudget > 0 {
		err := sys.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, o.TxBudget)
		if errors.Is(err, unix.ENOPROTOOPT) {
			return fmt.Errorf("set TxBudget %d: XDP_MAX_TX_SKB_BUDGET: %w by this kernel (Linux 6.17+): %w", o.TxBudget, ErrNotSupported, err)
		}
		if err != nil {
			return fmt.Errorf("set TxBudget %d: XDP_MAX_TX_SKB_BUDGET: %w", o.TxBudget, err)
		}
		s.txBudget = o.TxBudget
	}
	return nil
}

// errnoENOTSUPP is the kernel-internal ENOTSUPP (524), which some drivers
// let reach user space.
const errnoENOTSUPP = unix.Errno(524)

func zeroCopyUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) || errors.Is(err, errnoENOTSUPP)
}

// newXSKFD creates the AF_XDP socket. The kernel refuses it (EPERM) to a
// thread without CAP_NET_RAW, and the bare errno does not say so.
func newXSKFD() (int, error) {
	fd, err := sys.XSKSocket()
	if errors.Is(err, unix.EPERM) {
		return -1, fmt.Errorf("create AF_XDP socket: needs CAP_NET_RAW: %w", err)
	}
	return fd, err
}

// setup creates the socket and everything up to bind.
func (s *Socket) setup(o *Options) (err error) {
	if s.fd, err = newXSKFD(); err != nil {
		return err
	}
	if err := s.umem.Register(s.fd); err != nil {
		return err
	}
	s.rings = s.umem.Rings()
	if err := s.mapRxTx(o); err != nil {
		return err
	}
	return s.tune(o)
}

// mapRxTx creates the socket's RX and TX rings and maps them.
func (s *Socket) mapRxTx(o *Options) (err error) {
	if err := sys.SetRingSize(s.fd, unix.XDP_RX_RING, o.RxRingSize); err != nil {
		return fmt.Errorf("create rx ring of %d: %w", o.RxRingSize, err)
	}
	if err := sys.SetRingSize(s.fd, unix.XDP_TX_RING, o.TxRingSize); err != nil {
		return fmt.Errorf("create tx ring of %d: %w", o.TxRingSize, err)
	}
	off, err := sys.MmapOffsets(s.fd)
	if err != nil {
		return err
	}
	s.rxMem, s.rx, err = umem.MapRing(s.fd, unix.XDP_PGOFF_RX_RING, off.Rx, o.RxRingSize, 16, ring.NewConsumer[Desc])
	if err != nil {
		return fmt.Errorf("map rx ring: %w", err)
	}
	s.txMem, s.tx, err = umem.MapRing(s.fd, unix.XDP_PGOFF_TX_RING, off.Tx, o.TxRingSize, 16, ring.NewProducer[Desc])
	if err != nil {
		return fmt.Errorf("map tx ring: %w", err)
	}
	s.fill = s.rings.FillRing()
	s.rxCap = o.RxRingSize
	return nil
}

func (s *Socket) bindOnce(o *Options, mode BindMode) error {
	var flags uint16
	if !o.NoNeedWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	switch mode {
	case BindZeroCopy:
		flags |= unix.XDP_ZEROCOPY
	case BindCopy:
		flags |= unix.XDP_COPY
	}
	// Prime the fill ring so that the first packets have frames.
	s.refill()
	err := bindRetry(fmt.Sprintf("%s mode", mode), func() error {
		return sys.Bind(s.fd, s.ifindex, s.queue, flags)
	})
	return queueHint(err, s.ifname, s.queue)
}

// copyOnly reports whether the socket will bind in copy mode: asked to,
// or in auto mode on a driver that says it has no AF_XDP zero-copy.
func copyOnly(o *Options, ifindex int) bool {
	switch o.Bind {
	case BindCopy:
		return true
	case BindAuto:
		feats, err := sys.QueryXDPFeatures(ifindex)
		return err == nil && feats&sys.XDPActXSKZeroCopy == 0
	}
	return false
}

// queueHint adds to a bind's EINVAL on a queue other than 0 the likeliest
// cause: the kernel binds only to the queues in use, which may be fewer
// than the interface has room for (what Open checks against).
func queueHint(err error, ifname string, queue int) error {
	if queue == 0 || !errors.Is(err, unix.EINVAL) {
		return err
	}
	return fmt.Errorf("%w (queue %d may be beyond the queues %s has in use: ethtool -l %s shows them, ethtool -L sets them)", err, queue, ifname, ifname)
}

// bindRetry calls bind until it succeeds, fails with another error than
// EBUSY, or busyRetry has passed. A socket that was bound to the queue and
// just closed still holds it until a deferred kernel work item
// (xp_release_deferred) clears it, so EBUSY is retried for a while before
// it is believed.
func bindRetry(what string, bind func() error) error {
	deadline := time.Now().Add(busyRetry)
	for {
		err := bind()
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.EBUSY) {
			if time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
				continue
			}
			return fmt.Errorf("bind in %s: another AF_XDP socket holds the queue: %w", what, err)
		}
		return fmt.Errorf("bind in %s: %w", what, err)
	}
}

// bindShared creates the socket with fill and completion rings of its own
// on the UMEM of sh, and binds it with XDP_SHARED_UMEM. The kernel gives it
// sh's bind mode and need_wakeup. sh may be any open socket on the UMEM,
// the one that made it or one that shares it. The fill ring stays empty:
// Open fills it last.
func (s *Socket) bindShared(o *Options, sh *Socket) (err error) {
	if sh.umem == nil {
		return fmt.Errorf("ShareUMEM: %w", errNotOpen)
	}
	// Binding uses sh's descriptor: sh's Close, which may run on any
	// goroutine, waits for this call as it does for Wait.
	sh.waiters.Add(1)
	defer sh.waiters.Add(-1)
	switch {
	case sh.closed.Load():
		return fmt.Errorf("ShareUMEM: the socket on %s queue %d is closed: %w", sh.ifname, sh.queue, net.ErrClosed)
	case sh.ifindex == s.ifindex && sh.queue == s.queue && sh.netns == s.netns:
		// The kernel would have the two sockets share sh's fill and
		// completion rings too, and the program could not tell them
		// apart: the queue would feed only the newer one.
		return fmt.Errorf("ShareUMEM: the socket it shares with is on the same queue; sockets sharing a UMEM must be on different interfaces or queues: %w", unix.EINVAL)
	case o.Bind != BindAuto && o.Bind != sh.Mode():
		return fmt.Errorf("Bind %s with ShareUMEM: the UMEM's socket is bound in %s mode, which a socket sharing it gets", o.Bind, sh.Mode())
	case o.NoNeedWakeup == sh.wakeup:
		return fmt.Errorf("NoNeedWakeup %v with ShareUMEM: the UMEM's socket has need_wakeup %v, which a socket sharing it gets", o.NoNeedWakeup, sh.wakeup)
	}
	// In copy mode a TxOnly socket's fill ring stays empty (see Open).
	noFill := o.TxOnly && !sh.zc
	if u := sh.umem.Options(); !noFill && u.TxFrames == u.NumFrames {
		return fmt.Errorf("ShareUMEM: the UMEM of the socket on %s queue %d has no receive frames for this socket: all %d transmit (TxFrames is NumFrames, as it is by default for a TxOnly socket in copy mode); open that socket with TxFrames below NumFrames to leave receive frames for the sockets that share its UMEM, or this one TxOnly",
			sh.ifname, sh.queue, u.NumFrames)
	}
	s.umem, s.shared, s.group = sh.umem, true, sh.group
	if s.fd, err = newXSKFD(); err != nil {
		return err
	}
	if noFill {
		s.rings, err = s.umem.AddRingsNoFill(s.fd, o.CompletionRingSize)
	} else {
		s.rings, err = s.umem.AddRings(s.fd, o.FillRingSize, o.CompletionRingSize)
	}
	if err != nil {
		return err
	}
	if err := s.mapRxTx(o); err != nil {
		return err
	}
	if err := s.tune(o); err != nil {
		return err
	}
	if err := s.checkXDP(o); err != nil {
		return err
	}
	err = bindRetry(fmt.Sprintf("%s mode, sharing the UMEM of %s queue %d", sh.Mode(), sh.ifname, sh.queue), func() error {
		return sys.BindShared(s.fd, s.ifindex, s.queue, sh.fd)
	})
	if err != nil {
		return err
	}
	if err := s.learnMode(); err != nil {
		return err
	}
	s.wakeup = sh.wakeup
	s.manual = o.ManualRings
	return nil
}

// busyRetry is how long bind retries EBUSY.
const busyRetry = 2 * time.Second

// unsetup undoes setup, leaving the UMEM mapped but unregistered and its
// frames free.
func (s *Socket) unsetup() error {
	errs := []error{sys.Munmap(s.txMem), sys.Munmap(s.rxMem), s.umem.UnmapRings()}
	s.txMem, s.rxMem, s.tx, s.rx, s.fill, s.rings = nil, nil, nil, nil, nil, nil
	if s.fd >= 0 {
		errs = append(errs, sys.Close(s.fd))
		s.fd = -1
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// The kernel let go of the frames with the socket: start afresh.
	old := s.umem.Options()
	nu, err := umem.New(&old)
	if err != nil {
		return err
	}
	s.umem.Close()
	s.umem = nu
	return nil
}

// teardown releases everything in the reverse order of Open.
func (s *Socket) teardown() error {
	var errs []error
	if s.group != nil {
		s.group.leave(s)
	}
	// The kernel removes the socket from every XSKMAP that holds it when
	// the socket is released below (xsk_delete_from_maps). Deleting the
	// entry here instead could remove a newer socket's entry at the same
	// queue of a map that someone else owns.
	s.xskmap = nil
	if s.prog != nil {
		errs = append(errs, s.prog.release())
		s.prog = nil
	}
	if s.evfd >= 0 {
		errs = append(errs, sys.Close(s.evfd))
		s.evfd = -1
	}
	errs = append(errs, sys.Munmap(s.txMem), sys.Munmap(s.rxMem))
	s.txMem, s.rxMem, s.tx, s.rx, s.fill = nil, nil, nil, nil, nil
	switch {
	case s.shared && s.rings != nil:
		// Unmaps the area too if this was the last socket on it.
		errs = append(errs, s.rings.Close())
	case !s.shared && s.umem != nil:
		errs = append(errs, s.umem.UnmapRings())
	}
	if s.fd >= 0 {
		errs = append(errs, sys.Close(s.fd))
		s.fd = -1
	}
	if s.umem != nil && !s.shared {
		errs = append(errs, s.umem.Close())
	}
	return errors.Join(errs...)
}

// Close unregisters the socket, detaches the XDP program if this was the
// last socket using it, and releases the rings, the socket and the UMEM.
// It interrupts Wait, waits for calls in flight on other goroutines to
// return, and makes later calls fail with net.ErrClosed. Slices returned by
// Frame must not be used after Close. The first Close reports what failed;
// later ones return nil.
func (s *Socket) Close() (err error) {
	if s.umem == nil {
		// A zero Socket: its fd and evfd are 0, not its own.
		return nil
	}
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.evfd >= 0 {
			sys.Signal(s.evfd)
		}
		for s.rxSide.busy.Load() != 0 || s.txSide.busy.Load() != 0 || s.waiters.Load() != 0 {
			runtime.Gosched()
		}
		if terr := s.teardown(); terr != nil {
			err = s.opErr("close", terr)
		}
	})
	return err
}

func (s *Socket) opErr(op string, err error) error {
	return &OpError{Op: op, Interface: s.ifname, Queue: s.queue, Err: err}
}

// errNotOpen is the error of a call on a Socket that Open did not return,
// such as a zero Socket.
var errNotOpen = fmt.Errorf("not a socket that Open returned: %w", unix.EINVAL)

// enter marks a side busy, or says why the socket cannot be used. The
// store to busy and the load of closed pair with Close's store to closed
// and load of busy, so that one of the two sees the other.
func (s *Socket) enter(c *sideCounters) error {
	if s.umem == nil {
		return errNotOpen
	}
	c.busy.Store(1)
	if s.closed.Load() {
		c.busy.Store(0)
		return net.ErrClosed
	}
	return nil
}

// Receive takes up to len(descs) received packets off the RX ring into
// descs and returns how many. It does not block: 0 means none are waiting.
// Unless ManualRings is set it first refills the fill ring. The frames are
// the caller's until Release (or Transmit). Once the socket's interface
// is deleted, which unbinds the socket, Receive fails with an error
// matching unix.ENXIO, as Wait does: not at once, but within
// unboundProbe calls that find nothing.
func (s *Socket) Receive(descs []Desc) (int, error) {
	if err := s.enter(&s.rxSide); err != nil {
		return 0, s.opErr("receive", err)
	}
	if !s.manual {
		s.refill()
	}
	n := s.rx.Consume(descs)
	if n == 0 {
		// The RX ring of an unbound socket just stays empty. The
		// recvfrom(2) that wakes the kernel tells, so Receive asks
		// with one after a run of empty calls when it makes none:
		// one system call in unboundProbe idle ones.
		var e unix.Errno
		if s.busyPoll || s.wakeup && s.fill.NeedWakeup() {
			e = sys.WakeRx(s.fd)
			s.rxSide.wakeups.Add(1)
		} else if s.rxSide.idle++; s.rxSide.idle >= unboundProbe {
			// Held at the mark while unbound: each later empty
			// call asks again, and fails again.
			e = sys.WakeRx(s.fd)
			s.rxSide.wakeups.Add(1)
			if e == unix.ENXIO {
				s.rxSide.idle = unboundProbe
			} else {
				s.rxSide.idle = 0
			}
		}
		s.rxSide.busy.Store(0)
		if e == unix.ENXIO {
			return 0, s.opErr("receive", errUnbound)
		}
		return 0, nil
	}
	s.rxSide.idle = 0
	bytes := s.rings.Received(descs[:n])
	s.rxSide.packets.Add(uint64(n))
	s.rxSide.bytes.Add(bytes)
	s.rxSide.batches.Add(1)
	s.rxSide.busy.Store(0)
	return n, nil
}

// refill moves free receive frames into the fill ring. In copy mode it
// stops once the kernel holds as many as the RX ring has entries: the
// kernel takes a frame from the fill ring and copies the packet into it
// before it looks for room in the RX ring, so a frame beyond that count
// cannot make a packet arrive; when the RX ring is full it only turns a
// drop before the copy (no fill frame) into one after it (RX ring full),
// on the CPU that runs the driver. In zero-copy mode the driver keeps
// frames of its own ring posted besides, and the cap is off.
func (s *Socket) refill() int {
	limit := math.MaxInt
	if s.rxCap > 0 {
		limit = s.rxCap - s.rings.Held()
	}
	return s.rings.RefillUpTo(limit)
}

// Frame returns the bytes of the packet d describes: the frame's memory in
// the UMEM, valid until the frame is released or transmitted (and never
// after Close). Its capacity reaches the end of the frame, so a frame from
// Alloc may be written up to cap. It returns nil for a descriptor outside
// the UMEM.
func (s *Socket) Frame(d Desc) []byte {
	// A closed socket's UMEM stays mapped while a socket sharing it is
	// open: the closed flag, not the mapping, says the slice is gone.
	if s.umem == nil || s.closed.Load() {
		return nil
	}
	return s.umem.Frame(d)
}

// Release gives frames back: received ones (on the receiving goroutine),
// or allocated ones that will not be transmitted (on the transmitting
// goroutine). It stops at the first descriptor that names no frame the
// caller holds and returns an error matching ErrInvalidDesc.
func (s *Socket) Release(descs []Desc) error {
	if s.umem == nil {
		return s.opErr("release", errNotOpen)
	}
	if s.closed.Load() {
		return s.opErr("release", net.ErrClosed)
	}
	for i := range descs {
		if err := s.umem.Release(descs[i].Addr); err != nil {
			return s.opErr("release", err)
		}
	}
	return nil
}

// Refill moves free receive frames into the fill ring and returns how many.
// Receive does this itself unless ManualRings is set. In copy mode it gives
// the kernel no more frames than the RX ring holds (see [Options]).
func (s *Socket) Refill() (int, error) {
	if err := s.enter(&s.rxSide); err != nil {
		return 0, s.opErr("refill", err)
	}
	n := s.refill()
	s.rxSide.busy.Store(0)
	return n, nil
}

// Alloc fills descs with free transmit frames and returns how many it got
// (0 when all are in flight). Unless ManualRings is set it first reaps the
// completion ring, and when that leaves too few free frames while the TX
// ring still holds frames the kernel has not taken, it kicks the kernel to
// send them (see Transmit) and reaps again. The transmit frames are the
// UMEM's, shared by every socket on it (Options.ShareUMEM), so when it
// still finds too few it does the same for each other socket on the UMEM
// that is open and not set to ManualRings: it reaps that socket's
// completion ring and sends what its TX ring holds. A sender that
// allocates on one socket and transmits on another thus gets its frames
// back from Alloc alone. When a kick fails and no frame is free, Alloc
// returns the kick's error, naming the socket for another's. With
// ManualRings it takes only frames already free. Each descriptor's Addr is
// where a packet may start and Len the room there; write the packet into
// Frame(d) and set Len to its length before Transmit.
func (s *Socket) Alloc(descs []Desc) (int, error) {
	if err := s.enter(&s.txSide); err != nil {
		return 0, s.opErr("alloc", err)
	}
	if s.manual {
		n := s.umem.AllocFree(descs)
		s.txSide.busy.Store(0)
		return n, nil
	}
	s.rings.Complete()
	n := s.umem.AllocFree(descs)
	var kerr error
	if n < len(descs) && s.needPush() {
		kerr = s.kick()
		s.rings.Complete()
		n += s.umem.AllocFree(descs[n:])
	}
	if n < len(descs) {
		if err := s.pushOthers(); err != nil && kerr == nil {
			kerr = err
		}
		n += s.umem.AllocFree(descs[n:])
	}
	s.txSide.busy.Store(0)
	if n == 0 && kerr != nil {
		return 0, s.opErr("alloc", kerr)
	}
	return n, nil
}

// pushOthers reaps the completion rings of the other open sockets on the
// UMEM, and kicks those whose TX rings hold frames the kernel has not
// taken, as their own Alloc would: a transmit-side call, which the
// concurrency rules let the transmitting goroutine make on every socket
// sharing the UMEM. Sockets set to ManualRings reap their own. It returns
// the first kick's error.
func (s *Socket) pushOthers() error {
	p := s.group.socks.Load()
	if p == nil || len(*p) < 2 {
		return nil
	}
	var first error
	for _, o := range *p {
		if o == s || o.manual || o.enter(&o.txSide) != nil {
			// A socket that is closing is no longer to be
			// touched: its Close waits for no call of ours.
			continue
		}
		o.rings.Complete()
		if o.needPush() {
			if err := o.kick(); err != nil && first == nil {
				first = fmt.Errorf("socket sharing the UMEM on %s queue %d: %w", o.ifname, o.queue, err)
			}
			o.rings.Complete()
		}
		o.txSide.busy.Store(0)
	}
	return first
}

// shareGroup lists the open sockets on one UMEM, for Alloc to reap and
// kick (pushOthers). Open and Close change the list, on any goroutine;
// Alloc reads it without a lock.
type shareGroup struct {
	mu    sync.Mutex
	socks atomic.Pointer[[]*Socket]
}

// join adds s to the group.
func (g *shareGroup) join(s *Socket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var socks []*Socket
	if p := g.socks.Load(); p != nil {
		socks = append(socks, *p...)
	}
	socks = append(socks, s)
	g.socks.Store(&socks)
}

// leave takes s out of the group, if it is there.
func (g *shareGroup) leave(s *Socket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.socks.Load()
	if p == nil {
		return
	}
	socks := make([]*Socket, 0, len(*p))
	for _, o := range *p {
		if o != s {
			socks = append(socks, o)
		}
	}
	g.socks.Store(&socks)
}

// Transmit puts as many of descs on the TX ring as fit, in order, kicks
// the kernel if it asks to be (always in copy mode, where the sending
// happens in the kick), and returns how many it queued. The frames are the
// kernel's from then on. In copy mode a frame the device drops instead of
// sending (no carrier, a full queue) still comes back on the completion
// ring, and is counted in Stats.TxDropped; the kick goes on with the
// frames after it. A kick may leave frames in the TX ring (the completion
// ring is full, or the device is busy): a later Transmit that queues
// frames, Kick, Complete, an Alloc that finds too few free frames (on
// this socket or another sharing its UMEM), or, in copy mode with
// need_wakeup, a Wait sends them. A descriptor naming no frame the caller
// holds, or with Options other than 0 (the socket is bound without
// multi-buffer and tx metadata, so the kernel would join it to the next
// packet, drop it or refuse it), stops the batch with an error matching
// ErrInvalidDesc; the ones before it are queued, and when the kick that
// was to send them failed, the error matches the kick's errno too.
func (s *Socket) Transmit(descs []Desc) (int, error) {
	if err := s.enter(&s.txSide); err != nil {
		return 0, s.opErr("transmit", err)
	}
	n := uint32(min(len(descs), ring.MaxSize))
	if free := s.tx.Free(n); n > free {
		n = free
	}
	full := int(n) < len(descs)
	var oerr error
	for i := range descs[:n] {
		if d := &descs[i]; d.Options != 0 {
			oerr = fmt.Errorf("transmit descriptor %d {addr %#x, len %d}: options %#x: must be 0 on a socket without multi-buffer (XDP_USE_SG) or tx metadata: %w",
				i, d.Addr, d.Len, d.Options, ErrInvalidDesc)
			n = uint32(i)
			break
		}
	}
	k, verr := s.rings.Send(descs[:n])
	if verr == nil {
		verr = oerr
	}
	if k > 0 {
		s.tx.Produce(descs[:k])
		var bytes uint64
		for i := range descs[:k] {
			bytes += uint64(descs[i].Len)
		}
		s.txSide.packets.Add(uint64(k))
		s.txSide.bytes.Add(bytes)
		s.txSide.batches.Add(1)
	}
	var kerr error
	if k > 0 || full {
		kerr = s.kick()
	}
	if !s.manual {
		s.rings.Complete()
	}
	s.txSide.busy.Store(0)
	// A refused descriptor does not hide why the ones before it were
	// not sent: both stay visible to errors.Is.
	switch {
	case verr != nil && kerr != nil:
		return k, s.opErr("transmit", fmt.Errorf("%w; and %w", verr, kerr))
	case verr != nil:
		return k, s.opErr("transmit", verr)
	case kerr != nil:
		return k, s.opErr("transmit", kerr)
	}
	return k, nil
}

// kick wakes the kernel to send what the TX ring holds, if it asks to be
// woken. In copy mode the sending happens inside the system call, which
// sends at most the socket's TX budget (32 frames by default) and answers
// EAGAIN while more remain or while the completion ring is full: kick goes
// on, reaping completions in between, until the ring is drained or a
// bounded number of calls is spent.
//
// In copy mode, EBUSY means that the device dropped the last frame the
// kernel tried (__dev_direct_xmit returned NET_XMIT_DROP: no carrier, the
// veth peer down or its ring full): the kernel has taken the frame off
// the TX ring and put it in the completion ring as if it were sent, and
// stopped there, with the frames after it still in the TX ring. Without
// multi-buffer, each EBUSY is one frame: kick counts it in txSide.dropped
// and goes on with the rest, so that a drop leaves no frame behind for a
// later poll(2) to send and drop unseen. In zero-copy mode EBUSY (from
// the driver's wakeup), and ENOBUFS in either mode, are transient
// refusals, not errors: the next kick retries.
func (s *Socket) kick() error {
	if s.wakeup && !s.tx.NeedWakeup() {
		return nil
	}
	limit := int(s.tx.Size())/max(s.txBudget, 32) + 2
	// Each drop takes a frame off the TX ring, which nothing fills
	// meanwhile, so drops cannot pass the ring's size; the bound only
	// guards against an EBUSY that the kernel gives for another reason.
	for i, drops := 0, 0; ; {
		s.txSide.wakeups.Add(1)
		switch e := sys.Kick(s.fd); e {
		case 0, unix.ENOBUFS:
			return nil
		case unix.EBUSY:
			if s.zc {
				return nil
			}
			s.txSide.dropped.Add(1)
			if drops++; drops > int(s.tx.Size()) || !s.needPush() {
				return nil
			}
		case unix.EAGAIN:
			if s.zc || i >= limit {
				return nil
			}
			i++
		default:
			return fmt.Errorf("kick tx: sendto: %w", e)
		}
		if !s.manual {
			s.rings.Complete()
		}
	}
}

// Kick wakes the kernel to send what the TX ring holds, if it asks to be
// woken. Transmit does this itself; Kick serves callers who want to push
// what is queued without queuing more.
func (s *Socket) Kick() error {
	if err := s.enter(&s.txSide); err != nil {
		return s.opErr("kick", err)
	}
	err := s.kick()
	s.txSide.busy.Store(0)
	if err != nil {
		return s.opErr("kick", err)
	}
	return nil
}

// Complete reaps the completion ring and returns how many frames finished
// transmitting. Alloc and Transmit do this themselves unless ManualRings
// is set. When the TX ring still holds frames the kernel has not taken, it
// also kicks the kernel to send them (see Transmit) and reaps again, and
// reports a kick that failed with the count it reaped.
func (s *Socket) Complete() (int, error) {
	if err := s.enter(&s.txSide); err != nil {
		return 0, s.opErr("complete", err)
	}
	before := s.rings.Completed()
	s.rings.Complete()
	var kerr error
	if s.needPush() {
		// After the reap, so that the completion ring has room. The
		// kick reaps too, between its system calls.
		kerr = s.kick()
		s.rings.Complete()
	}
	n := int(s.rings.Completed() - before)
	s.txSide.busy.Store(0)
	if kerr != nil {
		return n, s.opErr("complete", kerr)
	}
	return n, nil
}

// needPush reports whether the TX ring holds frames that the kernel has
// not taken (reading its consumer index afresh) and that a kick would
// send: in copy mode, where the sending happens in the kick, always; in
// zero-copy mode, where the driver sends by itself, only with need_wakeup,
// when kick asks the ring whether the driver wants waking (without it, a
// kick on every Complete of a busy sender would be a system call each).
func (s *Socket) needPush() bool {
	if s.zc && !s.wakeup {
		return false
	}
	return s.tx.Free(s.tx.Size()) < s.tx.Size()
}

// Events are what Wait waits for.
type Events uint8

const (
	// Readable: the RX ring holds packets.
	Readable Events = 1 << iota
	// Writable: the TX ring has room.
	Writable
)

// errUnbound is the error of Receive and Wait on a socket that the kernel
// unbound because its interface was deleted.
var errUnbound = fmt.Errorf("the socket is no longer bound (its interface was deleted): %w", unix.ENXIO)

// unboundProbe is how many Receives in a row that find nothing make one
// that asks the kernel whether the socket is still bound. At a few tens of
// nanoseconds an empty call, that is a system call every 100 µs or so of
// spinning on an idle socket.
const unboundProbe = 4096

// unboundCheck is how long Wait polls before it asks whether the socket is
// still bound.
const unboundCheck = time.Second

// Wait blocks until one of events is ready or timeout passes (a negative
// timeout waits forever), and returns the events that are ready (none on
// timeout). Close interrupts it with net.ErrClosed. In copy mode with
// need_wakeup (unless NoNeedWakeup), every Wait, for whichever events,
// also makes the kernel send what the TX ring holds: poll(2) does that
// (a frame the device drops there is not counted in Stats.TxDropped:
// poll(2) does not say). Once the socket's interface is deleted, which unbinds the
// socket, Wait fails with an error matching unix.ENXIO (within a second)
// instead of waiting for packets that cannot come; the socket still has
// to be closed.
func (s *Socket) Wait(events Events, timeout time.Duration) (Events, error) {
	if s.umem == nil {
		return 0, s.opErr("wait", errNotOpen)
	}
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	if s.closed.Load() {
		return 0, s.opErr("wait", net.ErrClosed)
	}
	var pe int16
	if events&Readable != 0 {
		pe |= unix.POLLIN
	}
	if events&Writable != 0 {
		pe |= unix.POLLOUT
	}
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: pe}, {Fd: int32(s.evfd), Events: unix.POLLIN}}
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		// A socket whose interface is deleted is unbound by the
		// kernel, and poll then reports nothing, ever: Wait waits in
		// slices and asks after each whether the socket is still bound.
		slice := unboundCheck
		if timeout >= 0 {
			slice = min(time.Until(deadline), unboundCheck)
		}
		n, err := sys.Poll(fds, max(slice, 0))
		if err != nil {
			return 0, s.opErr("wait", err)
		}
		if n > 0 {
			break
		}
		// recvfrom fails with ENXIO only on a socket that is not bound
		// (else, in copy mode, it does nothing).
		e := sys.WakeRx(s.fd)
		s.rxSide.wakeups.Add(1)
		if e == unix.ENXIO {
			return 0, s.opErr("wait", errUnbound)
		}
		if timeout >= 0 && !time.Now().Before(deadline) {
			return 0, nil
		}
	}
	if fds[1].Revents != 0 || s.closed.Load() {
		return 0, s.opErr("wait", net.ErrClosed)
	}
	var got Events
	if fds[0].Revents&unix.POLLIN != 0 {
		got |= Readable
	}
	if fds[0].Revents&unix.POLLOUT != 0 {
		got |= Writable
	}
	if fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
		return got, s.opErr("wait", fmt.Errorf("poll: revents %#x", fds[0].Revents))
	}
	return got, nil
}

// Stats are a socket's counters: the kernel's and the library's own.
type Stats struct {
	// From the kernel (XDP_STATISTICS).
	RxDropped      uint64 // dropped for reasons other than the ones below
	RxInvalidDescs uint64 // invalid descriptors in the fill ring
	TxInvalidDescs uint64 // invalid descriptors in the TX ring
	RxRingFull     uint64 // dropped because the RX ring was full
	FillRingEmpty  uint64 // times the fill ring was empty when a packet came
	TxRingEmpty    uint64 // times the kernel found the TX ring empty

	// Counted by this library.
	RxPackets, RxBytes, RxBatches uint64 // returned by Receive
	TxPackets, TxBytes, TxBatches uint64 // queued by Transmit
	Completed                     uint64 // transmit completions reaped, TxDropped included
	// TxDropped counts the frames queued for transmit that the device
	// dropped instead of sending them, in copy mode (no carrier, a veth
	// peer that is down or whose queue is full): the kernel gives such
	// a frame back on the completion ring like one that was sent, so it
	// is in Completed too, and says so only to the sendto(2) that tried
	// it (EBUSY). Of the frames completed, Completed minus TxDropped
	// were sent. A frame that the kernel tries inside poll(2) instead,
	// when Wait finds the TX ring still holding frames, is not counted
	// if dropped: poll tells its caller nothing. The interface's
	// tx_dropped counts both. Always 0 in zero-copy mode, where the
	// driver sends and drops without the socket.
	TxDropped uint64
	// RxWakeups counts the recvfrom(2) calls made: wakeups, busy polls,
	// and the ones that ask whether the socket is still bound (see
	// Receive and Wait). TxWakeups counts the sendto(2) calls (kicks).
	RxWakeups, TxWakeups uint64
}

// Stats returns the socket's counters. It may be called from any goroutine.
func (s *Socket) Stats() (Stats, error) {
	if s.umem == nil {
		return Stats{}, s.opErr("stats", errNotOpen)
	}
	if s.closed.Load() {
		return Stats{}, s.opErr("stats", net.ErrClosed)
	}
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	if s.closed.Load() {
		return Stats{}, s.opErr("stats", net.ErrClosed)
	}
	k, err := sys.Statistics(s.fd)
	if err != nil {
		return Stats{}, s.opErr("stats", err)
	}
	return Stats{
		RxDropped:      k.Rx_dropped,
		RxInvalidDescs: k.Rx_invalid_descs,
		TxInvalidDescs: k.Tx_invalid_descs,
		RxRingFull:     k.Rx_ring_full,
		FillRingEmpty:  k.Rx_fill_ring_empty_descs,
		TxRingEmpty:    k.Tx_ring_empty_descs,
		RxPackets:      s.rxSide.packets.Load(),
		RxBytes:        s.rxSide.bytes.Load(),
		RxBatches:      s.rxSide.batches.Load(),
		RxWakeups:      s.rxSide.wakeups.Load(),
		TxPackets:      s.txSide.packets.Load(),
		TxBytes:        s.txSide.bytes.Load(),
		TxBatches:      s.txSide.batches.Load(),
		TxWakeups:      s.txSide.wakeups.Load(),
		Completed:      s.rings.Completed(),
		TxDropped:      s.txSide.dropped.Load(),
	}, nil
}

// NAPIID returns the ID of the NAPI instance the kernel recorded on the
// socket when the first packet arrived (SO_INCOMING_NAPI_ID): 0 before
// that, and 0 when the driver delivered the packets from a NAPI instance
// without an ID. Busy polling (Options.BusyPoll) polls that instance, so
// with 0 after traffic it has nothing to poll and only costs the wakeup
// calls. veth on Linux 6.18 is such a case, with or without GRO or
// threaded NAPI.
func (s *Socket) NAPIID() (uint32, error) {
	if s.umem == nil {
		return 0, s.opErr("napi id", errNotOpen)
	}
	if s.closed.Load() {
		return 0, s.opErr("napi id", net.ErrClosed)
	}
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	if s.closed.Load() {
		return 0, s.opErr("napi id", net.ErrClosed)
	}
	id, err := sys.IncomingNAPIID(s.fd)
	if err != nil {
		return 0, s.opErr("napi id", err)
	}
	return id, nil
}

// Frames says where the UMEM's frames are, across every socket sharing
// it. Call it only while no other goroutine uses those sockets.
func (s *Socket) Frames() umem.Counts {
	if s.umem == nil {
		return umem.Counts{}
	}
	return s.umem.Counts()
}

// FD is the socket's file descriptor, for registering it in an XSKMAP that
// someone else owns, or for poll loops of the caller's own. It stays owned
// by the Socket; after Close, and on a Socket that Open did not return,
// FD is -1.
func (s *Socket) FD() int {
	if s.umem == nil {
		return -1
	}
	return s.fd
}

// Interface is the name of the interface the socket is bound to.
func (s *Socket) Interface() string { return s.ifname }

// Ifindex is the index of the interface the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// Queue is the queue of the interface the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// ZeroCopy reports whether the socket is bound in zero-copy mode (else
// copy mode).
func (s *Socket) ZeroCopy() bool { return s.zc }

// ZeroCopyErr says why a socket opened with BindAuto is in copy mode: its
// driver advertises no AF_XDP zero-copy, or the zero-copy bind failed.
// Both match ErrNotSupported. It is nil for a socket in zero-copy mode and
// for one whose mode was forced or taken from a socket it shares a UMEM
// with.
func (s *Socket) ZeroCopyErr() error { return s.zcErr }

// Mode is the bind mode the socket got: BindZeroCopy or BindCopy.
func (s *Socket) Mode() BindMode {
	if s.zc {
		return BindZeroCopy
	}
	return BindCopy
}

// XDPMode is the attach mode of the program this socket loaded (or
// shares), or bpf.AttachAuto when the XDP side is someone else's.
func (s *Socket) XDPMode() bpf.AttachMode { return s.xdpMode }

// Program is the XDP program the socket uses, nil when the XDP side is
// someone else's.
func (s *Socket) Program() *bpf.Program {
	if s.prog == nil {
		return nil
	}
	return s.prog.prog
}

// UMEM is the socket's packet memory.
func (s *Socket) UMEM() *umem.UMEM { return s.umem }
