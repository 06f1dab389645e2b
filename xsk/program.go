package xsk

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/afxdp/afxdp/bpf"
)

// A process keeps one XDP program per interface, shared by its sockets on
// that interface's queues. The kernel allows one program per XDP hook, so
// a second socket on another queue registers in the first one's XSKMAP.

type progKey struct {
	netns   uint64 // inode of the network namespace
	ifindex int
}

type sharedProg struct {
	key  progKey
	prog *bpf.Program
	att  *bpf.Attachment
	refs int
	opts progOpts
}

type progOpts struct {
	filter bpf.Filter
	mode   bpf.AttachMode
}

var programs struct {
	sync.Mutex
	m map[progKey]*sharedProg
}

func currentNetns() (uint64, error) {
	fi, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return 0, fmt.Errorf("identify network namespace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("identify network namespace: no inode")
	}
	return st.Ino, nil
}

// acquireProgram returns the process's program on ifindex, loading and
// attaching it if this is the first socket there.
func acquireProgram(ifindex, queue int, o *Options) (*sharedProg, error) {
	ns, err := currentNetns()
	if err != nil {
		return nil, err
	}
	key := progKey{ns, ifindex}
	want := progOpts{filter: o.Filter, mode: o.XDPMode}

	programs.Lock()
	defer programs.Unlock()
	if sp := programs.m[key]; sp != nil {
		if err := sp.refuses(queue, want); err != nil {
			return nil, err
		}
		sp.refs++
		return sp, nil
	}

	maxQ := o.MaxQueues
	if maxQ == 0 {
		maxQ = bpf.DefaultMaxQueues
	}
	maxQ = max(maxQ, queue+1)
	prog, err := bpf.NewProgram(&bpf.ProgramOptions{Filter: o.Filter, MaxQueues: maxQ})
	if err != nil {
		return nil, err
	}
	att, err := prog.Attach(ifindex, &bpf.AttachOptions{Mode: o.XDPMode, Replace: o.ReplaceXDP})
	if err != nil {
		prog.Close()
		return nil, err
	}
	sp := &sharedProg{key: key, prog: prog, att: att, refs: 1, opts: want}
	if programs.m == nil {
		programs.m = make(map[progKey]*sharedProg)
	}
	programs.m[key] = sp
	return sp, nil
}

// txOnlyProgram makes sure an XDP program is attached to ifindex for a
// TxOnly socket in zero-copy mode: one already there (this process's, with
// whatever filter, or someone else's) will do. The process's program is
// held, like a receiving socket holds it, so that it stays attached while
// the socket is open; it returns nil when the program is someone else's.
func txOnlyProgram(ifindex, queue int, o *Options) (*sharedProg, error) {
	ns, err := currentNetns()
	if err != nil {
		return nil, err
	}
	programs.Lock()
	if sp := programs.m[progKey{ns, ifindex}]; sp != nil {
		sp.refs++
		programs.Unlock()
		return sp, nil
	}
	programs.Unlock()
	info, err := bpf.QueryXDP(ifindex)
	if err != nil {
		return nil, err
	}
	if info.Driver.Attached() || info.Generic.Attached() {
		return nil, nil
	}
	return acquireProgram(ifindex, queue, o)
}

// checkProgram fails as acquireProgram would when the process's program on
// ifindex cannot serve a socket on queue with o. Open asks before it makes
// the socket; acquireProgram asks again, since a program may come or go in
// between.
func checkProgram(ifindex, queue int, o *Options) error {
	ns, err := currentNetns()
	if err != nil {
		return err
	}
	programs.Lock()
	defer programs.Unlock()
	if sp := programs.m[progKey{ns, ifindex}]; sp != nil {
		return sp.refuses(queue, progOpts{filter: o.Filter, mode: o.XDPMode})
	}
	return nil
}

// refuses says why the program cannot serve a socket on queue that asks
// for want, and is nil when it can. programs is locked.
func (sp *sharedProg) refuses(queue int, want progOpts) error {
	if sp.opts != want {
		return fmt.Errorf("attach xdp: this process already attached a program with filter %v, mode %v to the interface; another socket on it must use the same Filter and XDPMode",
			sp.opts.filter, sp.opts.mode)
	}
	if queue >= sp.prog.MaxQueues() {
		return fmt.Errorf("attach xdp: queue %d beyond the XSKMAP of %d entries that this process's program on the interface has; set MaxQueues on the first socket",
			queue, sp.prog.MaxQueues())
	}
	return nil
}

// release drops one reference, detaching and unloading the program with
// the last.
func (sp *sharedProg) release() error {
	programs.Lock()
	defer programs.Unlock()
	sp.refs--
	if sp.refs > 0 {
		return nil
	}
	delete(programs.m, sp.key)
	return errors.Join(sp.att.Close(), sp.prog.Close())
}
