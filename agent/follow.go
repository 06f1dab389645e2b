package agent

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/sys"
)

// incarnation is a device's program as attached to one interface: the
// program and its XSKMAP, the link, the read-only descriptor and the
// registrations. When the interface goes and one of the same name comes
// back, the server makes a new incarnation for it and closes the old one:
// nothing of the old carries over, so that a socket bound to the vanished
// interface can neither hold nor reach a queue of the new map.
type incarnation struct {
	ifindex int // the interface's index, in the namespace it was found in
	prog    *bpf.Program
	att     *bpf.Attachment
	roFD    int       // read-only XSKMAP descriptor (ReadOnlyMap), or -1
	reg     *registry // who holds which queue through /xsk_register
}

// newIncarnation loads a program, its XSKMAP and registry for d, finds the
// interface named d.Name in d's namespace (the path opened anew) and
// attaches the program to it with d's mode and Replace.
func (s *Server) newIncarnation(d *device) (_ *incarnation, err error) {
	in := &incarnation{roFD: -1}
	defer func() {
		if err != nil {
			in.close()
		}
	}()
	in.prog, err = bpf.NewProgram(&bpf.ProgramOptions{Filter: d.Filter, MaxQueues: d.MaxQueues})
	if err != nil {
		return nil, err
	}
	if in.reg, err = newRegistry(in.prog); err != nil {
		return nil, err
	}
	err = inNetns(d.Netns, func() error {
		ifi, err := net.InterfaceByName(d.Name)
		if err != nil {
			return fmt.Errorf("find interface: %w", err)
		}
		in.ifindex = ifi.Index
		in.att, err = in.prog.Attach(ifi.Index, &bpf.AttachOptions{Mode: d.Mode, Replace: d.Replace})
		return err
	})
	if err != nil {
		return nil, err
	}
	if s.opts.ReadOnlyMap {
		if in.roFD, err = readOnlyMapFD(in.prog.XSKMap()); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// close releases the registry, the read-only descriptor and the program,
// which detaches it. It undoes what newIncarnation did, in reverse order.
func (in *incarnation) close() error {
	var errs []error
	if in.reg != nil {
		errs = append(errs, in.reg.Close())
	}
	if in.roFD >= 0 {
		if err := unix.Close(in.roFD); err != nil {
			errs = append(errs, fmt.Errorf("close read-only xskmap: %w", os.NewSyscallError("close", err)))
		}
		in.roFD = -1
	}
	if in.prog != nil {
		errs = append(errs, in.prog.Close())
	}
	return errors.Join(errs...)
}

// errDetached says that a device's program is not on the interface of the
// device's name: the interface is a new one (the old went with its link or
// its network namespace), or the program was detached by other means.
var errDetached = errors.New("program not attached")

// check fails unless in's program is attached to the interface named d.Name
// in d's namespace, the path opened anew. The kernel detaches a bpf_link
// when its interface goes away (a pod's namespace deleted, the link
// deleted), and a new interface of the same name, even at the same
// namespace path and index, has no program: a map handed out then would
// redirect nothing. The error wraps errDetached when the interface is there
// without the program, and otherwise says why it cannot tell (the
// namespace or the interface absent).
func (d *device) check(in *incarnation) error {
	return inNetns(d.Netns, func() error {
		ifi, err := net.InterfaceByName(d.Name)
		if err != nil {
			return fmt.Errorf("interface absent: %w", err)
		}
		if ifi.Index != in.ifindex {
			return fmt.Errorf("ifindex %d, attached to ifindex %d: %w", ifi.Index, in.ifindex, errDetached)
		}
		st, err := sys.QueryLinkXDP(ifi.Index)
		if err != nil {
			return fmt.Errorf("ifindex %d: check that the program is attached: %w", ifi.Index, err)
		}
		if id := in.prog.ID(); st.DrvProgID != id && st.SKBProgID != id && st.ProgID != id {
			return fmt.Errorf("ifindex %d: %w", ifi.Index, errDetached)
		}
		return nil
	})
}

// where names d's namespace for errors and logs.
func (d *device) where() string {
	if d.Netns == "" {
		return "the agent's network namespace"
	}
	return "network namespace " + d.Netns
}

// use runs fn with d's incarnation once its program is known to be on the
// interface, and keeps the incarnation from being replaced until fn
// returns. If an interface of d's name is there without the program, use
// first makes a new incarnation for it (see follow). It fails, naming why,
// when the interface or its namespace is absent or cannot be served.
func (s *Server) use(d *device, fn func(*incarnation) error) error {
	for followed := false; ; followed = true {
		d.mu.RLock()
		in := d.cur
		err := d.check(in)
		if err == nil {
			err = fn(in)
			d.mu.RUnlock()
			return err
		}
		d.mu.RUnlock()
		if followed || !errors.Is(err, errDetached) {
			return fmt.Errorf("device %s in %s: %w", d.Name, d.where(), err)
		}
		if err := s.follow(d, in, err); err != nil {
			return fmt.Errorf("device %s in %s: %w", d.Name, d.where(), err)
		}
	}
}

// follow replaces d's incarnation seen, whose program check found detached
// (why), with a new one on the interface now named d.Name, and pins the new
// XSKMAP in place of the old. The old incarnation is closed: its program,
// XSKMAP, registry and descriptors; the registrations in it are forgotten,
// since their sockets were bound to the interface that went. Requests wait
// meanwhile, so that concurrent ones attach once: a request that finds d's
// incarnation already replaced does nothing here and checks again.
func (s *Server) follow(d *device, seen *incarnation, why error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != seen {
		return nil
	}
	in, err := s.newIncarnation(d)
	if err != nil {
		return fmt.Errorf("attach a new program (%w): %w", why, err)
	}
	if s.opts.PinDir != "" {
		if err := d.pin(s.opts.PinDir, in, nil); err != nil {
			return errors.Join(fmt.Errorf("attach a new program (%w): %w", why, err), in.close())
		}
	}
	d.cur = in
	if err := errors.Join(seen.reg.clear(), seen.close()); err != nil {
		s.log.Error("release the detached program", "device", d.Name, "err", err)
	}
	s.log.Info("re-attached device: the interface came back", "device", d.Name, "netns", d.Netns,
		"ifindex", in.ifindex, "old_ifindex", seen.ifindex, "xdp_mode", in.att.Mode().String(),
		"prog_id", in.prog.ID(), "old_prog_id", seen.prog.ID(), "pinned", d.pinPath, "reason", why.Error())
	return nil
}

// Refresh checks every device's interface now, as each /xsk_map_fd,
// /xsk_register and /config_busy_poll does for its own: where an interface
// of the device's name is back without the program, it attaches a new
// program with a new XSKMAP and pins that in place of the old. It logs a
// device that it finds not served once, and returns why for each
// (errors.Join), nil when every device is served. Clients that only open
// the pin and never ask the agent find the new map only once something
// has made the server follow: cmd/afxdp-agent calls Refresh every second.
// After Close it returns net.ErrClosed.
func (s *Server) Refresh() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("refresh: %w", net.ErrClosed)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	var errs []error
	for _, d := range s.devices {
		err := s.use(d, func(*incarnation) error { return nil })
		d.noteMu.Lock()
		was := d.unserved
		d.unserved = err != nil
		d.noteMu.Unlock()
		switch {
		case err != nil && !was:
			s.log.Warn("device not served", "device", d.Name, "err", err)
		case err == nil && was:
			s.log.Info("device served again", "device", d.Name)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
