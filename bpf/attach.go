package bpf

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// AttachMode says where in the receive path the XDP program runs.
type AttachMode int

const (
	// AttachAuto tries driver mode and falls back to generic mode when the
	// driver does not support XDP (or refuses this configuration).
	AttachAuto AttachMode = iota
	// AttachDriver runs the program in the driver (native XDP), before the
	// kernel allocates a socket buffer. Needed for zero-copy AF_XDP.
	AttachDriver
	// AttachGeneric runs the program in the generic (skb) hook, which every
	// interface has; slower, and AF_XDP sockets then work in copy mode.
	AttachGeneric
)

// String returns "auto", "driver" or "generic".
func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachDriver:
		return "driver"
	case AttachGeneric:
		return "generic"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}

// AttachOptions configures [Program.Attach]. The zero value, like a nil
// pointer, means AttachAuto and never replacing another program.
type AttachOptions struct {
	// Mode is where the program runs. Default AttachAuto.
	Mode AttachMode

	// Replace removes another XDP program attached to the interface in
	// driver or generic mode, whether through netlink or a bpf_link,
	// before attaching. Without it, Attach fails with a *BusyError.
	//
	// If the attach then fails, a program that was attached through
	// netlink is put back; one that a bpf_link held cannot be (the link
	// belongs to its owner), and the error says so. A program that a
	// bpf_link holds is replaced only if that link can be told apart from
	// links to interfaces with the same index in other network namespaces.
	Replace bool
}

// ErrBusy is what a [*BusyError] matches with errors.Is.
var ErrBusy = errors.New("another XDP program is attached")

// BusyError reports that an interface's XDP hook is taken: by another
// program, or, when the kernel refused the attach, possibly by this very
// program through an earlier Attachment (ProgramID then is the Program's
// own ID). errors.Is(err, ErrBusy) is true for it; when the kernel refused
// the attach, it also unwraps to the kernel's errno (EBUSY or EEXIST).
type BusyError struct {
	// Ifindex is the index of the interface whose hook is taken.
	Ifindex int
	// ProgramID is the ID of the program attached, or zero if it was
	// gone again by the time it was looked up.
	ProgramID uint32
	// Mode is the mode the other program is attached in (driver or
	// generic).
	Mode AttachMode

	err error // the kernel's errno, if it came from the kernel
}

// Error names the interface and, when it was found, the program.
func (e *BusyError) Error() string {
	s := fmt.Sprintf("ifindex %d busy: xdp program %d is attached in %s mode", e.Ifindex, e.ProgramID, e.Mode)
	if e.ProgramID == 0 {
		s = fmt.Sprintf("ifindex %d busy: an xdp program is attached", e.Ifindex)
	}
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

// Is reports whether target is ErrBusy.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// Unwrap returns the kernel's errno, or nil when Attach found the other
// program before asking the kernel.
func (e *BusyError) Unwrap() error { return e.err }

// Attachment is the program attached to one interface through a bpf_link.
// The kernel detaches it when Close is called, or when the process exits.
type Attachment struct {
	prog    *Program
	ifindex int
	mode    AttachMode

	mu sync.Mutex // held by Close; ordered before prog.mu
	l  link.Link  // nil once closed
}

// Mode returns the mode the program was attached in: AttachDriver or
// AttachGeneric, never AttachAuto.
func (a *Attachment) Mode() AttachMode { return a.mode }

// Ifindex returns the interface index the program is attached to.
func (a *Attachment) Ifindex() int { return a.ifindex }

// Close detaches the program from the interface. A second Close returns nil
// once the first has detached it.
func (a *Attachment) Close() error {
	// Held throughout, so that a concurrent Close (or Program.Close)
	// returns only once the program is off the interface.
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.l
	a.l = nil
	if l == nil {
		return nil
	}

	// Detach explicitly, so that a copy of the link's file descriptor
	// held elsewhere (bpftool, a forked child) cannot keep it attached.
	var errs []error
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		errs = append(errs, err)
	}
	if err := sys.CloseObject(l); err != nil {
		errs = append(errs, err)
	}
	// Only now, so that a Program.Close meanwhile waits for a.mu.
	a.prog.mu.Lock()
	delete(a.prog.attachments, a)
	a.prog.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("detach xdp from ifindex %d (%s mode): %w", a.ifindex, a.mode, err)
	}
	return nil
}

// Attach attaches the program to the interface with index ifindex, in the
// calling goroutine's network namespace, through a bpf_link: the kernel
// detaches it when the Attachment is closed or the process exits. A nil
// opts means AttachAuto without Replace.
//
// Attach first asks the kernel which XDP programs the interface has. If a
// program other than this one is attached in driver or generic mode, Attach
// fails with a *BusyError naming it, and leaves it attached, unless
// opts.Replace is set: then it detaches that program first. A program
// offloaded to the NIC is left alone either way.
//
// Errors name the interface and mode ("attach xdp to ifindex 7 (driver
// mode): ...") and wrap the kernel's errno.
func (p *Program) Attach(ifindex int, opts *AttachOptions) (*Attachment, error) {
	var o AttachOptions
	if opts != nil {
		o = *opts
	}
	fail := func(mode AttachMode, err error) error {
		return fmt.Errorf("attach xdp to ifindex %d (%s mode): %w", ifindex, mode, err)
	}
	if o.Mode < AttachAuto || o.Mode > AttachGeneric {
		return nil, fail(o.Mode, errors.New("AttachOptions.Mode: unknown mode"))
	}
	if ifindex <= 0 {
		return nil, fail(o.Mode, fmt.Errorf("invalid ifindex: %w", unix.ENODEV))
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fail(o.Mode, net.ErrClosed)
	}

	info, err := QueryXDP(ifindex)
	if err != nil {
		return nil, fail(o.Mode, err)
	}
	others := p.foreign(ifindex, info)
	if len(others) > 0 && !o.Replace {
		return nil, fail(o.Mode, others[0])
	}
	var removed []removedProgram
	defer func() {
		for _, r := range removed {
			r.close()
		}
	}()
	for _, other := range others {
		r, err := detachForeign(ifindex, other.Mode, other.ProgramID)
		if err != nil {
			return nil, fail(o.Mode, errors.Join(err, restoreForeign(ifindex, removed)))
		}
		removed = append(removed, r)
	}
	// failRestoring is fail, after putting back what Replace removed.
	failRestoring := func(mode AttachMode, err error) error {
		return errors.Join(fail(mode, err), restoreForeign(ifindex, removed))
	}

	modes := []AttachMode{o.Mode}
	if o.Mode == AttachAuto {
		modes = []AttachMode{AttachDriver, AttachGeneric}
	}
	var driverErr error // why driver mode failed, in auto mode
	for _, mode := range modes {
		l, err := link.AttachXDP(link.XDPOptions{
			Program:   p.prog,
			Interface: ifindex,
			Flags:     linkFlags(mode),
		})
		switch {
		case err == nil:
			a := &Attachment{prog: p, ifindex: ifindex, mode: mode, l: l}
			p.attachments[a] = struct{}{}
			return a, nil
		case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST):
			return nil, failRestoring(mode, p.busyFromKernel(ifindex, err))
		case o.Mode == AttachAuto && mode == AttachDriver && driverUnsupported(err):
			driverErr = err
			continue
		case driverErr != nil:
			return nil, failRestoring(mode, fmt.Errorf("%w (driver mode failed first: %w)", err, driverErr))
		}
		return nil, failRestoring(mode, err)
	}
	return nil, failRestoring(o.Mode, errors.New("no mode left to try"))
}

// driverUnsupported reports whether err, from attaching in driver mode,
// means the driver cannot run this program natively, or not in the
// interface's present configuration, so that generic mode is worth trying.
// Besides EOPNOTSUPP (no native XDP) and EINVAL, veth refuses with ERANGE
// when the MTU is too large for a frame in one page, and with ENOSPC when
// its peer has more TX queues than it has RX queues; generic mode has
// neither limit.
func driverUnsupported(err error) bool {
	for _, errno := range []unix.Errno{unix.EOPNOTSUPP, unix.EINVAL, unix.ERANGE, unix.ENOSPC} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return errors.Is(err, ebpf.ErrNotSupported)
}

// foreign returns a BusyError for each program in info, in driver or
// generic mode, that is not p's.
func (p *Program) foreign(ifindex int, info XDPInfo) []*BusyError {
	var out []*BusyError
	if id := info.Driver.ID; id != 0 && id != p.id {
		out = append(out, &BusyError{Ifindex: ifindex, ProgramID: id, Mode: AttachDriver})
	}
	if id := info.Generic.ID; id != 0 && id != p.id {
		out = append(out, &BusyError{Ifindex: ifindex, ProgramID: id, Mode: AttachGeneric})
	}
	return out
}

// busyFromKernel turns the kernel's EBUSY or EEXIST from link creation into
// a BusyError naming the program that holds the interface, if it can still
// be found.
func (p *Program) busyFromKernel(ifindex int, kerr error) error {
	be := &BusyError{Ifindex: ifindex, err: kerr}
	if info, err := QueryXDP(ifindex); err == nil {
		switch {
		case info.Driver.ID != 0:
			be.ProgramID, be.Mode = info.Driver.ID, AttachDriver
		case info.Generic.ID != 0:
			be.ProgramID, be.Mode = info.Generic.ID, AttachGeneric
		}
	}
	return be
}

// removedProgram is a foreign program that Attach detached to make room
// for its own.
type removedProgram struct {
	id   uint32
	mode AttachMode
	// prog, if not nil, holds the program (so that it is not freed) and
	// means it was attached through netlink, and can be put back the same
	// way.
	prog *ebpf.Program
	// link means a bpf_link held the program. It cannot be put back: the
	// link, which its owner holds, stays detached.
	link bool
}

func (r removedProgram) close() {
	if r.prog != nil {
		sys.CloseObject(r.prog)
	}
}

// restoreForeign puts back, through netlink, the programs in removed that
// were attached through netlink, after a replacement failed. It reports
// the ones it could not put back.
func restoreForeign(ifindex int, removed []removedProgram) error {
	var errs []error
	for _, r := range removed {
		if r.link {
			errs = append(errs, fmt.Errorf("xdp program %d (%s mode), which a bpf link held, stays detached", r.id, r.mode))
			continue
		}
		if r.prog == nil {
			continue // it went away by itself
		}
		if err := sys.AttachLinkXDP(ifindex, r.prog.FD(), modeFlags(r.mode)); err != nil {
			errs = append(errs, fmt.Errorf("put back xdp program %d (%s mode): %w", r.id, r.mode, err))
		}
	}
	return errors.Join(errs...)
}

// detachForeign removes program id, attached to ifindex in mode.
//
// It tries netlink first, naming the program it expects, so that it
// removes only that program, and only if it was attached through netlink
// in this network namespace. If a bpf_link holds the hook instead, the
// kernel refuses (EBUSY); the link is then found among the kernel's XDP
// links by interface index and program. A link's interface index does not
// say which namespace the interface is in, so when more than one link
// matches, detachForeign cannot tell which one holds this hook, and fails
// rather than detach another namespace's program.
func detachForeign(ifindex int, mode AttachMode, id uint32) (removedProgram, error) {
	r := removedProgram{id: id, mode: mode}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if errors.Is(err, unix.ENOENT) {
		return r, nil // an attached program cannot be freed, so it is gone
	}
	if err != nil {
		return r, fmt.Errorf("replace xdp program %d (%s mode): open program: %w", id, mode, err)
	}
	err = sys.DetachLinkXDP(ifindex, modeFlags(mode), prog.FD())
	if err == nil {
		r.prog = prog
		return r, nil
	}
	sys.CloseObject(prog)
	if !errors.Is(err, unix.EBUSY) {
		return r, fmt.Errorf("replace xdp program %d (%s mode): %w", id, mode, err)
	}

	links, err := xdpLinks(ifindex)
	if err != nil {
		return r, fmt.Errorf("replace xdp program %d (%s mode): %w", id, mode, err)
	}
	var ids []uint32
	for _, l := range links {
		if l.prog == id {
			ids = append(ids, l.id)
		}
	}
	switch len(ids) {
	case 0:
		return r, fmt.Errorf("replace xdp program %d (%s mode): a bpf link holds it, but no link to ifindex %d runs it: %w", id, mode, ifindex, unix.EBUSY)
	case 1:
	default:
		return r, fmt.Errorf("replace xdp program %d (%s mode): a bpf link holds it, and bpf links %v all run it on an interface with index %d, in namespaces that cannot be told apart; detach it yourself: %w", id, mode, ids, ifindex, unix.EBUSY)
	}
	l, err := link.NewFromID(link.ID(ids[0]))
	if errors.Is(err, unix.ENOENT) {
		return r, nil // closed meanwhile, so detached
	}
	if err != nil {
		return r, fmt.Errorf("replace xdp program %d (%s mode): open bpf link %d: %w", id, mode, ids[0], err)
	}
	defer sys.CloseObject(l)
	if err := l.Detach(); err != nil {
		return r, fmt.Errorf("replace xdp program %d (%s mode): detach bpf link %d: %w", id, mode, ids[0], err)
	}
	r.link = true
	return r, nil
}

// linkFlags returns the bpf_link XDP flags for an attach mode.
func linkFlags(m AttachMode) link.XDPAttachFlags {
	if m == AttachGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}
