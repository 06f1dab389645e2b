package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/sys"
)

// registry records which connection holds which queue of a device's XSKMAP
// through /xsk_register, and tells whether a queue's entry is still the
// socket that was registered there.
//
// An entry can change behind the agent's back: the kernel removes it when
// its socket is released, and a client holding a writable map fd may
// overwrite or delete it. User space cannot read an XSKMAP (lookups fail
// with EOPNOTSUPP), so the registry keeps a twin XSKMAP, into which it
// writes every socket it registers under the same key, and a small XDP
// program, never attached and only run with BPF_PROG_TEST_RUN, that looks
// the queue up in both maps and compares the two socket pointers. The
// kernel drops a socket from both maps when it is released, so a queue
// whose socket is gone does not compare equal either.
//
// A queue is held by a connection while the entry is the socket that
// connection registered and the connection's client has not hung up: a
// connection whose client has gone is ending, and its goroutine may not
// have seen that yet, or still be discarding what the client left queued
// (see hangUp), when the client registers again on a new connection. The
// registry deletes an entry, when its connection ends, only if it is still
// the socket registered: never an entry the kernel or another client put
// there since. (A client with a writable map fd could still overwrite the
// entry between that check and the deletion; with ServerOptions.ReadOnlyMap
// nobody but the agent writes the map and the check is exact.)
type registry struct {
	prog  *bpf.Program  // the device's program; its XSKMAP is the one served
	twin  *ebpf.Map     // queue -> the socket the registry registered there
	check *ebpf.Program // returns verdictHeld when both maps agree on a queue

	mu     sync.Mutex
	owners map[int]*conn // queue -> the connection that registered it
	in     []byte        // the check program's input, under mu
}

// Verdicts of the check program.
const (
	verdictHeld    = 2 // XDP_PASS: the queue's entry is the registered socket
	verdictNotHeld = 1 // XDP_DROP: no entry, or another socket
)

// checkInputLen is the size of the check program's input: the queue index
// in its first four bytes, padded to an Ethernet header, the least
// BPF_PROG_TEST_RUN accepts for an XDP program.
const checkInputLen = 14

func newRegistry(p *bpf.Program) (_ *registry, err error) {
	r := &registry{prog: p, owners: make(map[int]*conn), in: make([]byte, checkInputLen)}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	r.twin, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "afxdp_owned",
		Type:       ebpf.XSKMap,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(p.MaxQueues()),
	})
	if err != nil {
		return nil, fmt.Errorf("create registration map: %w", err)
	}
	r.check, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "afxdp_owned",
		Type:         ebpf.XDP,
		Instructions: checkInstructions(p.XSKMap().FD(), r.twin.FD()),
		License:      "Dual MIT/GPL",
	})
	runtime.KeepAlive(p)
	if err != nil {
		// The verifier lets only CAP_PERFMON (or CAP_SYS_ADMIN) compare
		// pointers; it answers EACCES otherwise.
		return nil, fmt.Errorf("load registration check (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN): %w", err)
	}
	return r, nil
}

// checkInstructions returns the check program: it reads a queue index from
// the first four bytes of the frame, looks it up in the served XSKMAP and
// in the twin, and returns verdictHeld when both hold the same socket.
// Comparing two pointers is allowed to programs loaded with CAP_PERFMON
// (or CAP_SYS_ADMIN), which the agent has.
func checkInstructions(xsksFD, twinFD int) asm.Instructions {
	const no = "not_held"
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 4),
		asm.JGT.Reg(asm.R4, asm.R3, no),
		asm.LoadMem(asm.R6, asm.R2, 0, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R6, asm.Word), // the key, on the stack

		asm.LoadMapPtr(asm.R1, xsksFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, no),
		asm.Mov.Reg(asm.R7, asm.R0),

		asm.LoadMapPtr(asm.R1, twinFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, no),
		asm.JNE.Reg(asm.R0, asm.R7, no),
		asm.Mov.Imm(asm.R0, verdictHeld),
		asm.Return(),

		asm.Mov.Imm(asm.R0, verdictNotHeld).WithSymbol(no),
		asm.Return(),
	}
}

// held reports whether queue's entry is the socket registered there.
// r.mu must be held.
func (r *registry) held(queue int) (bool, error) {
	binary.NativeEndian.PutUint32(r.in, uint32(queue))
	v, err := r.check.Run(&ebpf.RunOptions{Data: r.in})
	if err != nil {
		return false, fmt.Errorf("check registration of queue %d: %w", queue, err)
	}
	return v == verdictHeld, nil
}

// register puts the socket fd into the XSKMAP at queue for c. It refuses,
// with an error that matches unix.EBUSY, a queue that another connection
// holds; a queue that c holds already gets the new socket.
func (r *registry) register(c *conn, queue, fd int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.owners[queue]; o != nil && o != c {
		held, err := r.held(queue)
		if err != nil {
			return err
		}
		if held && !peerClosed(o.c) {
			return fmt.Errorf("register queue %d: held by another connection: %w", queue, unix.EBUSY)
		}
	}
	if err := r.prog.Register(queue, fd); err != nil {
		return err
	}
	if err := r.twin.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		// An entry without its twin could not be told from another
		// client's later: take it out rather than leave it unowned.
		delete(r.owners, queue)
		return errors.Join(fmt.Errorf("register queue %d: record the registration: %w", queue, err), r.prog.Unregister(queue))
	}
	r.owners[queue] = c
	return nil
}

// holding reports whether c holds a queue. When the check fails it says
// yes: keeping an idle connection is the lesser harm.
func (r *registry) holding(c *conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for q, o := range r.owners {
		if o != c {
			continue
		}
		held, err := r.held(q)
		if err != nil {
			c.log.Error("cannot tell whether a registration holds", "queue", q, "err", err)
			return true
		}
		if held {
			return true
		}
	}
	return false
}

// release forgets c's registrations and removes from the XSKMAP those
// that c still holds.
func (r *registry) release(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for q, o := range r.owners {
		if o != c {
			continue
		}
		delete(r.owners, q)
		held, err := r.held(q)
		if derr := r.twin.Delete(uint32(q)); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) {
			c.log.Error("forget registration failed", "queue", q, "err", derr)
		}
		switch {
		case err != nil:
			c.log.Error("registration left in place", "queue", q, "err", err)
		case !held:
			c.log.Info("registration already gone: socket closed or replaced through the map fd", "queue", q)
		default:
			if err := r.prog.Unregister(q); err != nil {
				c.log.Error("unregister failed", "queue", q, "err", err)
				continue
			}
			c.log.Info("unregistered socket", "queue", q)
		}
	}
}

// clear forgets every registration and empties the XSKMAP and the twin.
// The server calls it on the registry of a program that went with its
// interface: each entry holds a reference on its map, which would
// otherwise live on for as long as the client keeps its socket open.
func (r *registry) clear() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.owners)
	var errs []error
	for q := range r.prog.MaxQueues() {
		if err := r.prog.Unregister(q); err != nil {
			errs = append(errs, err)
		}
		if err := r.twin.Delete(uint32(q)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("forget registration of queue %d: %w", q, err))
		}
	}
	return errors.Join(errs...)
}

// Close releases the twin map and the check program. A second Close
// returns nil.
func (r *registry) Close() error {
	var errs []error
	if r.check != nil {
		errs = append(errs, sys.CloseObject(r.check))
		r.check = nil
	}
	if r.twin != nil {
		errs = append(errs, sys.CloseObject(r.twin))
		r.twin = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close registrations: %w", err)
	}
	return nil
}
