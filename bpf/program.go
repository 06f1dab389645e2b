package bpf

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/afxdp/afxdp/internal/sys"
)

// DefaultMaxQueues is the XSKMAP size used when ProgramOptions.MaxQueues is
// zero.
const DefaultMaxQueues = 64

// ProgramOptions configures [NewProgram]. The zero value, like a nil
// pointer, redirects every frame and allows queues 0 to 63.
type ProgramOptions struct {
	// Filter selects the frames to redirect; the zero value takes all.
	Filter Filter

	// MaxQueues is the number of entries in the XSKMAP, so queues
	// 0..MaxQueues-1 can have a socket. Default 64; negative is refused.
	MaxQueues int
}

// Program is a loaded XDP program and its XSKMAP. The program sends each
// frame that passes its [Filter] to the AF_XDP socket registered for the
// frame's receive queue, and passes the frame to the kernel's network stack
// (XDP_PASS) when the queue has no socket.
//
// A Program may be attached to several interfaces. Its methods may be called
// from several goroutines at once; Close waits for calls in progress.
type Program struct {
	mu          sync.Mutex
	closed      bool
	prog        *ebpf.Program
	xsks        *ebpf.Map
	id          uint32 // the kernel's ID of prog
	maxQueues   int
	filter      Filter
	attachments map[*Attachment]struct{}
}

// NewProgram creates the XSKMAP and loads the XDP program. A nil opts means
// the defaults.
func NewProgram(opts *ProgramOptions) (_ *Program, err error) {
	var o ProgramOptions
	if opts != nil {
		o = *opts
	}
	if err := o.Filter.validate(); err != nil {
		return nil, fmt.Errorf("new xdp program: %w", err)
	}
	switch {
	case o.MaxQueues == 0:
		o.MaxQueues = DefaultMaxQueues
	case o.MaxQueues < 0 || uint64(o.MaxQueues) > math.MaxUint32:
		return nil, fmt.Errorf("new xdp program: MaxQueues %d: must be between 1 and %d", o.MaxQueues, uint32(math.MaxUint32))
	}

	p := &Program{
		maxQueues:   o.MaxQueues,
		filter:      o.Filter,
		attachments: make(map[*Attachment]struct{}),
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	p.xsks, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "afxdp_xsks",
		Type:       ebpf.XSKMap,
		KeySize:    4, // rx queue index
		ValueSize:  4, // AF_XDP socket fd on update, socket ID on lookup
		MaxEntries: uint32(o.MaxQueues),
	})
	if err != nil {
		return nil, fmt.Errorf("new xdp program: create xskmap with %d entries: %w", o.MaxQueues, err)
	}

	p.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "afxdp_redirect",
		Type:         ebpf.XDP,
		Instructions: instructions(o.Filter, p.xsks.FD()),
		// The program calls no GPL-only helper; the string only has to be
		// one the kernel accepts.
		License: "Dual MIT/GPL",
	})
	if err != nil {
		return nil, fmt.Errorf("new xdp program: load program (filter: %s): %w", o.Filter, err)
	}

	info, err := p.prog.Info()
	if err != nil {
		return nil, fmt.Errorf("new xdp program: read program info: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return nil, errors.New("new xdp program: kernel reports no program ID")
	}
	p.id = uint32(id)
	return p, nil
}

// Register makes the AF_XDP socket xskFD receive the frames that arrive on
// receive queue queue and pass the filter, replacing any socket registered
// for that queue before. The socket must be bound to that queue of the
// interface the program is (or will be) attached to: the kernel takes any
// AF_XDP socket into the map, but drops the frames it redirects to a socket
// that is unbound or bound elsewhere. The map holds its own reference to the
// socket; call Unregister before closing the socket so that its queue's
// frames go to the network stack again at once.
func (p *Program) Register(queue int, xskFD int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkQueue("register", queue); err != nil {
		return err
	}
	if xskFD < 0 || xskFD > math.MaxInt32 {
		return fmt.Errorf("register queue %d: invalid socket fd %d", queue, xskFD)
	}
	if err := p.xsks.Update(uint32(queue), uint32(xskFD), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("register queue %d (socket fd %d): %w", queue, xskFD, err)
	}
	return nil
}

// Unregister removes the socket registered for queue, so that the queue's
// frames go to the kernel's network stack again. Unregistering a queue with
// no socket is not an error.
func (p *Program) Unregister(queue int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkQueue("unregister", queue); err != nil {
		return err
	}
	if err := p.xsks.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unregister queue %d: %w", queue, err)
	}
	return nil
}

// checkQueue fails when p is closed or queue is outside the XSKMAP.
// p.mu must be held.
func (p *Program) checkQueue(op string, queue int) error {
	if p.closed {
		return fmt.Errorf("%s queue %d: %w", op, queue, net.ErrClosed)
	}
	if queue < 0 || queue >= p.maxQueues {
		return fmt.Errorf("%s queue %d: out of range: the XSKMAP holds queues 0 to %d (ProgramOptions.MaxQueues %d)", op, queue, p.maxQueues-1, p.maxQueues)
	}
	return nil
}

// XSKMap returns the XSKMAP, keyed by receive queue index. It belongs to p
// and is valid until p is closed; callers must not close it.
func (p *Program) XSKMap() *ebpf.Map { return p.xsks }

// Prog returns the XDP program. It belongs to p and is valid until p is
// closed; callers must not close it.
func (p *Program) Prog() *ebpf.Program { return p.prog }

// ID returns the kernel's ID of the XDP program, the ID that [QueryXDP]
// reports once it is attached.
func (p *Program) ID() uint32 { return p.id }

// MaxQueues returns the number of queues the XSKMAP holds.
func (p *Program) MaxQueues() int { return p.maxQueues }

// Filter returns the filter compiled into the program.
func (p *Program) Filter() Filter { return p.filter }

// Close detaches the program from every interface it was attached to
// through p, then releases the program and the XSKMAP. Frames in flight are
// not affected; sockets registered in the map stay open (they belong to the
// caller). A second Close returns nil.
func (p *Program) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	atts := make([]*Attachment, 0, len(p.attachments))
	for a := range p.attachments {
		atts = append(atts, a)
	}
	p.mu.Unlock()

	// Reverse order of setup: attachments, then program, then map.
	var errs []error
	for _, a := range atts {
		errs = append(errs, a.Close())
	}
	if p.prog != nil {
		if err := sys.CloseObject(p.prog); err != nil {
			errs = append(errs, fmt.Errorf("close xdp program: %w", err))
		}
	}
	if p.xsks != nil {
		if err := sys.CloseObject(p.xsks); err != nil {
			errs = append(errs, fmt.Errorf("close xskmap: %w", err))
		}
	}
	return errors.Join(errs...)
}
