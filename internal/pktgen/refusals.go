package pktgen

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Frames that the generator's program redirects can still be dropped by
// the kernel on their way into the target's driver, and nothing in the
// program can see it: bpf_redirect_map only records the target, and the
// frame is handed over after the program has returned. Two XDP tracepoints
// report those drops, and the generator attaches a small program to each
// that adds them to its run state:
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
//     generator's BPF_PROG_RUN and from the loopback device (ifindex 1),
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
// counts Budget down, the tracing programs add to Refused and set Err.
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

// tpField is a field of a tracepoint's record.
type tpField struct{ offset, size int }

// tracepointFields reads the offsets of the named fields of a tracepoint's
// record from its format file in tracefs.
func tracepointFields(group, name string, want ...string) (map[string]tpField, error) {
	var f *os.File
	var err error
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		f, err = os.Open(filepath.Join(dir, "events", group, name, "format"))
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read format of tracepoint %s:%s (is tracefs mounted?): %w", group, name, err)
	}
	defer f.Close()
	fields := map[string]tpField{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		// "\tfield:int err;\toffset:28;\tsize:4;\tsigned:1;"
		var decl string
		fd := tpField{offset: -1}
		for _, part := range strings.Split(strings.TrimSpace(s.Text()), ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), ":")
			if !ok {
				continue
			}
			switch k {
			case "field":
				decl = v
			case "offset":
				fd.offset, _ = strconv.Atoi(v)
			case "size":
				fd.size, _ = strconv.Atoi(v)
			}
		}
		if words := strings.Fields(decl); len(words) > 0 && fd.offset >= 0 {
			fields[words[len(words)-1]] = fd
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read format of tracepoint %s:%s: %w", group, name, err)
	}
	out := make(map[string]tpField, len(want))
	for _, w := range want {
		fd, ok := fields[w]
		if !ok || fd.size != 4 {
			return nil, fmt.Errorf("tracepoint %s:%s: no 4-byte field %q in its format", group, name, w)
		}
		out[w] = fd
	}
	return out, nil
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
// refused (xdp:xdp_redirect_err).
func redirectErrProgram(state *ebpf.Map, devmapID uint32, f map[string]tpField) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, int16(f["map_id"].offset), asm.Word),
		asm.JNE.Imm(asm.R1, int32(devmapID), "out"),
	}
	insns = append(insns, lookupState(state, "out")...)
	insns = append(insns,
		asm.Mov.Imm(asm.R7, 1),
		asm.LoadMem(asm.R8, asm.R6, int16(f["err"].offset), asm.Word),
	)
	insns = append(insns, addRefused()...)
	return append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

// devmapXmitProgram counts the frames of batches that the target's driver
// failed with an error, when the batch came from this generator's run
// (xdp:xdp_devmap_xmit).
func devmapXmitProgram(state *ebpf.Map, pidnsDev, pidnsIno uint64, f map[string]tpField) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R8, asm.R6, int16(f["err"].offset), asm.Word),
		asm.JEq.Imm(asm.R8, 0, "out"),
		asm.LoadMem(asm.R1, asm.R6, int16(f["from_ifindex"].offset), asm.Word),
		asm.JNE.Imm(asm.R1, loopbackIfindex, "out"),
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
		asm.LoadMem(asm.R7, asm.R6, int16(f["drops"].offset), asm.Word),
	)
	insns = append(insns, addRefused()...)
	return append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

// refusalWatch is the pair of tracing programs of a generator.
type refusalWatch struct {
	progs []*ebpf.Program
	links []link.Link
}

// watchRefusals loads and attaches the tracing programs that count, in
// state, the frames the kernel drops after the redirect into devmap.
func watchRefusals(state, devmap *ebpf.Map) (_ *refusalWatch, err error) {
	w := &refusalWatch{}
	defer func() {
		if err != nil {
			w.Close()
			err = fmt.Errorf("watch for frames the target refuses (needs CAP_PERFMON, or CAP_SYS_ADMIN): %w", err)
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
	redirectErr, err := tracepointFields("xdp", "xdp_redirect_err", "map_id", "err")
	if err != nil {
		return nil, err
	}
	devmapXmit, err := tracepointFields("xdp", "xdp_devmap_xmit", "from_ifindex", "drops", "err")
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
			Name: "pktgen_refused", Type: ebpf.TracePoint, License: "Dual MIT/GPL", Instructions: tp.insns,
		})
		if err != nil {
			return nil, fmt.Errorf("load program for xdp:%s: %w", tp.name, err)
		}
		w.progs = append(w.progs, p)
		l, err := link.Tracepoint("xdp", tp.name, p, nil)
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
		errs = append(errs, l.Close())
	}
	for _, p := range w.progs {
		errs = append(errs, p.Close())
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
