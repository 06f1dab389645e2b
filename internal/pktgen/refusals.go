package pktgen

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/rawtp"
	"github.com/afxdp/afxdp/internal/sys"
)

// Frames that the generator's program redirects can still be dropped by
// the kernel on their way into the target's driver, and nothing in the
// program can see it: bpf_redirect_map only records the target, and the
// frame is handed over after the program has returned. Two XDP tracepoints
// report those drops, and the generator attaches a small raw tracepoint
// program to each (by name, with BPF_RAW_TRACEPOINT_OPEN: no tracefs) that
// adds them to its run state. Such a program reads the tracepoint's
// arguments, not its record; where each argument is, and where
// net_device.ifindex is, come from the kernel's BTF (package rawtp):
//
//   - xdp:xdp_redirect_err, once per frame that the redirect refused at
//     once (the target is down: ENETDOWN; it has no ndo_xdp_xmit, or on
//     veth its peer has neither a native-mode XDP program nor GRO:
//     EOPNOTSUPP; the frame is longer than its MTU: EMSGSIZE). The event
//     names the DEVMAP, whose id is the generator's own.
//   - xdp:xdp_devmap_xmit, once per batch flushed to the target's driver,
//     with the number of frames it did not take and its error. Only
//     batches that failed with an error are counted (veth with its peer
//     down or without NAPI: ENXIO), from the thread that runs this
//     generator's BPF_PROG_RUN and from the loopback device (ifindex 1,
//     read through the event's from_dev with bpf_probe_read_kernel),
//     the pretend ingress device of live frames: batches that the
//     receiver's own XDP program redirects in the softirqs of that thread
//     come from the receiving interface. Frames that a driver drops
//     without an error (a veth whose peer's ring is full) stay counted as
//     offered: veth counts them in the target's tx_dropped and the peer's
//     rx_dropped, as any receiver's overflow.
//
// Neither runs per frame sent: the first fires only on a refused frame, the
// second once per batch (BatchSize frames).

// runState is the value of the generator's state map: the XDP program
// counts Budget down, the raw tracepoint programs add to Refused and set
// Err.
type runState struct {
	Budget  uint64 // frames still to redirect in this run
	Refused uint64 // frames the kernel dropped after the redirect, with an error
	Err     int64  // that error (a negative errno), the last one seen
	Tid     uint32 // the thread running BPF_PROG_RUN, in this process's PID namespace
	_       uint32
}

// Offsets in runState.
const (
	offRefused = 8
	offErr     = 16
	offTid     = 24
	stateSize  = 32
)

// loopbackIfindex is LOOPBACK_IFINDEX: the loopback device of every
// network namespace, which live frames pretend to have arrived on.
const loopbackIfindex = 1

// The arguments the programs read, found by name in the kernel's BTF (see
// package rawtp): offsets in a raw tracepoint program's context.
type redirectErrArgs struct{ mapID, err int16 }

type devmapXmitArgs struct {
	fromDev, drops, err int16
	ifindex             int32 // offset of ifindex in the struct net_device from_dev points to
}

// tracepointArgs looks up the arguments of both tracepoints in the kernel's
// BTF.
func tracepointArgs() (redirectErrArgs, devmapXmitArgs, error) {
	var re redirectErrArgs
	var dx devmapXmitArgs
	offs, err := rawtp.KernelOffsets("xdp:xdp_redirect_err", rawtp.Int32("map_id"), rawtp.Int32("err"))
	if err != nil {
		return re, dx, err
	}
	re.mapID, re.err = offs[0], offs[1]
	offs, err = rawtp.KernelOffsets("xdp:xdp_devmap_xmit",
		rawtp.PointerTo("from_dev", "net_device"), rawtp.Int32("drops"), rawtp.Int32("err"))
	if err != nil {
		return re, dx, err
	}
	dx.fromDev, dx.drops, dx.err = offs[0], offs[1], offs[2]
	spec, err := rawtp.Kernel()
	if err != nil {
		return re, dx, err
	}
	if dx.ifindex, err = rawtp.Int32Member(spec, "net_device", "ifindex"); err != nil {
		return re, dx, fmt.Errorf("xdp:xdp_devmap_xmit: from_dev: %w", err)
	}
	return re, dx, nil
}

// pidNamespace returns the device and inode of this process's PID
// namespace as bpf_get_ns_current_pid_tgid takes them (the device in the
// kernel's encoding).
func pidNamespace() (dev, ino uint64, err error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0, 0, fmt.Errorf("stat pid namespace: %w", os.NewSyscallError("stat", err))
	}
	return uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)), st.Ino, nil
}

// addRefused appends instructions that add the 32-bit count in r7 to
// state.Refused and store the sign-extended 32-bit error in r8 as
// state.Err; r0 holds &state.
func addRefused() asm.Instructions {
	add := asm.StoreXAdd(asm.R0, asm.R7, asm.DWord)
	add.Offset = offRefused
	return asm.Instructions{
		add,
		asm.LSh.Imm(asm.R8, 32),
		asm.ArSh.Imm(asm.R8, 32),
		asm.StoreMem(asm.R0, offErr, asm.R8, asm.DWord),
	}
}

// lookupState returns a lookup of state[0] into r0 that jumps to label
// when it fails (it clobbers r1 to r5 and the stack word at fp-4).
func lookupState(state *ebpf.Map, label string) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, state.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, label),
	}
}

// redirectErrProgram counts the frames that the redirect into devmapID
// refused (xdp:xdp_redirect_err). Arguments are u64s holding a 32-bit
// value, compared in 32 bits.
func redirectErrProgram(state *ebpf.Map, devmapID uint32, a redirectErrArgs) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, a.mapID, asm.DWord),
		asm.JNE.Imm32(asm.R1, int32(devmapID), "out"),
	}
	insns = append(insns, lookupState(state, "out")...)
	insns = append(insns,
		asm.Mov.Imm(asm.R7, 1),
		asm.LoadMem(asm.R8, asm.R6, a.err, asm.DWord),
	)
	insns = append(insns, addRefused()...)
	return append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

// devmapXmitProgram counts the frames of batches that the target's driver
// failed with an error, when the batch came from this generator's run
// (xdp:xdp_devmap_xmit). The ifindex of the device the batch came from is
// read through the from_dev pointer with bpf_probe_read_kernel.
func devmapXmitProgram(state *ebpf.Map, pidnsDev, pidnsIno uint64, a devmapXmitArgs) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R8, asm.R6, a.err, asm.DWord),
		asm.JEq.Imm32(asm.R8, 0, "out"),
		// from_dev->ifindex to fp-24
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, -24),
		asm.Mov.Imm(asm.R2, 4),
		asm.LoadMem(asm.R3, asm.R6, a.fromDev, asm.DWord),
		asm.Add.Imm(asm.R3, a.ifindex),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R10, -24, asm.Word),
		asm.JNE.Imm32(asm.R1, loopbackIfindex, "out"),
		// struct bpf_pidns_info { u32 pid; u32 tgid; } at fp-16
		asm.LoadImm(asm.R1, int64(pidnsDev), asm.DWord),
		asm.LoadImm(asm.R2, int64(pidnsIno), asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 8),
		asm.FnGetNsCurrentPidTgid.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
	}
	insns = append(insns, lookupState(state, "out")...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R0, offTid, asm.Word),
		asm.LoadMem(asm.R2, asm.R10, -16, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R2, "out"),
		asm.LoadMem(asm.R7, asm.R6, a.drops, asm.DWord),
		asm.Mov.Reg32(asm.R7, asm.R7), // the 32-bit count, zero-extended
	)
	insns = append(insns, addRefused()...)
	return append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

// refusalWatch is the pair of raw tracepoint programs of a generator.
type refusalWatch struct {
	progs []*ebpf.Program
	links []link.Link
}

// watchRefusals loads and attaches the raw tracepoint programs that count,
// in state, the frames the kernel drops after the redirect into devmap. It
// needs the kernel's BTF, and CAP_PERFMON (or CAP_SYS_ADMIN) to load them.
func watchRefusals(state, devmap *ebpf.Map) (_ *refusalWatch, err error) {
	w := &refusalWatch{}
	defer func() {
		if err != nil {
			w.Close()
			err = fmt.Errorf("watch for frames the target refuses: %w", err)
		}
	}()
	info, err := devmap.Info()
	if err != nil {
		return nil, fmt.Errorf("devmap info: %w", err)
	}
	devmapID, ok := info.ID()
	if !ok {
		return nil, errors.New("devmap info: no map id")
	}
	dev, ino, err := pidNamespace()
	if err != nil {
		return nil, err
	}
	redirectErr, devmapXmit, err := tracepointArgs()
	if err != nil {
		return nil, err
	}
	for _, tp := range []struct {
		name  string
		insns asm.Instructions
	}{
		{"xdp_redirect_err", redirectErrProgram(state, uint32(devmapID), redirectErr)},
		{"xdp_devmap_xmit", devmapXmitProgram(state, dev, ino, devmapXmit)},
	} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "pktgen_refused", Type: ebpf.RawTracepoint, License: "Dual MIT/GPL", Instructions: tp.insns,
		})
		if err != nil {
			return nil, fmt.Errorf("load program for xdp:%s (needs CAP_PERFMON, or CAP_SYS_ADMIN): %w", tp.name, err)
		}
		w.progs = append(w.progs, p)
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.name, Program: p})
		if err != nil {
			return nil, fmt.Errorf("attach to xdp:%s: %w", tp.name, err)
		}
		w.links = append(w.links, l)
	}
	return w, nil
}

// Close detaches and unloads the programs.
func (w *refusalWatch) Close() error {
	var errs []error
	for _, l := range w.links {
		errs = append(errs, sys.CloseObject(l))
	}
	for _, p := range w.progs {
		errs = append(errs, sys.CloseObject(p))
	}
	w.links, w.progs = nil, nil
	return errors.Join(errs...)
}

// refusedError describes frames the kernel refused after the redirect, with
// the target's state that the kernel's error stands for.
func refusedError(refused, redirected uint64, ifname string, ifindex int, errno int64) error {
	e := unix.Errno(-errno)
	var why string
	switch e {
	case unix.ENETDOWN:
		why = "the interface is down"
	case unix.EOPNOTSUPP:
		why = "it cannot transmit XDP frames (no ndo_xdp_xmit; on veth: the peer has neither an XDP program in native mode (generic mode does not count) nor GRO)"
	case unix.ENXIO:
		why = "its driver refused them (on veth: the peer is down, or not yet receiving XDP frames)"
	case unix.EMSGSIZE:
		why = "the frame is longer than its MTU allows"
	default:
		why = "the redirect failed"
	}
	return fmt.Errorf("send frames: %d of %d frames refused by %s (ifindex %d): %s: %w", refused, redirected, ifname, ifindex, why, e)
}
