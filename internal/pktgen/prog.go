package pktgen

import (
	"encoding/binary"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Offsets in a UDP/IPv4 frame whose IPv4 header has no options.
const (
	offSrcPort  = 14 + 20     // UDP source port
	offUDPCsum  = 14 + 20 + 6 // UDP checksum
	udpHeadersN = 14 + 20 + 8
)

// xdpRedirect is XDP_REDIRECT (enum xdp_action).
const xdpRedirect = 4

// portRewrite describes how the program varies the UDP source port.
type portRewrite struct {
	n    int32 // number of ports, > 1
	base int32 // first port, host order
	k    int32 // ^csum + ^port of the template as raw (memory-order) 16-bit words, unfolded
	csum bool  // whether the template carries a UDP checksum
}

// newPortRewrite prepares the constants for a template frame (already
// checked to be UDP/IPv4 without IP options).
func newPortRewrite(frame []byte, n int) portRewrite {
	base := binary.BigEndian.Uint16(frame[offSrcPort:])
	r := portRewrite{n: int32(n), base: int32(base)}
	// The program works on raw 16-bit words as they sit in memory; the
	// one's complement sum is the same in either byte order as long as
	// every operand is in the same one.
	rawPort := binary.NativeEndian.Uint16(frame[offSrcPort:])
	rawCsum := binary.NativeEndian.Uint16(frame[offUDPCsum:])
	if rawCsum != 0 {
		r.csum = true
		r.k = int32(uint32(^rawCsum) + uint32(^rawPort))
	}
	return r
}

// generatorProgram builds the XDP program that BPF_PROG_RUN repeats. Each
// run looks at the budget in state[0] (a u64 count of frames still to
// send); with budget left it optionally rewrites the UDP source port and
// returns bpf_redirect_map(devmap, 0, 0), otherwise XDP_DROP. The budget
// shrinks only when the redirect succeeded (XDP_REDIRECT), so that it
// counts frames offered to the target: with the target gone from the
// DEVMAP (the device was deleted) the helper returns XDP_ABORTED and the
// frame is not counted. The budget makes the number of frames sent exact
// even when the kernel restarts a run after a signal.
func generatorProgram(state, devmap *ebpf.Map, pr *portRewrite) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // r6 = ctx
	}
	insns = append(insns, lookupState(state, "drop")...)
	insns = append(insns,
		asm.Mov.Reg(asm.R9, asm.R0), // r9 = &budget, kept across the helper call
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, "drop"),
		asm.Sub.Imm(asm.R1, 1),
	)
	if pr != nil {
		insns = append(insns,
			// r7 = base + (budget-1) % n, in network order
			asm.Mov.Reg(asm.R7, asm.R1),
			asm.Mod.Imm(asm.R7, pr.n),
			asm.Add.Imm(asm.R7, pr.base),
			asm.HostTo(asm.BE, asm.R7, asm.Half),
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // ctx->data
			asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // ctx->data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, udpHeadersN),
			asm.JGT.Reg(asm.R4, asm.R3, "redirect"),
			asm.StoreMem(asm.R2, offSrcPort, asm.R7, asm.Half),
		)
		if pr.csum {
			insns = append(insns,
				// csum = ~fold(k + newport), 0 becomes 0xffff
				asm.Add.Imm(asm.R7, pr.k),
				asm.Mov.Reg(asm.R8, asm.R7),
				asm.RSh.Imm(asm.R8, 16),
				asm.And.Imm(asm.R7, 0xffff),
				asm.Add.Reg(asm.R7, asm.R8),
				asm.Mov.Reg(asm.R8, asm.R7),
				asm.RSh.Imm(asm.R8, 16),
				asm.And.Imm(asm.R7, 0xffff),
				asm.Add.Reg(asm.R7, asm.R8),
				asm.Xor.Imm(asm.R7, 0xffff),
				asm.JNE.Imm(asm.R7, 0, "store_csum"),
				asm.Mov.Imm(asm.R7, 0xffff),
				asm.StoreMem(asm.R2, offUDPCsum, asm.R7, asm.Half).WithSymbol("store_csum"),
			)
		}
	}
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, devmap.FD()).WithSymbol("redirect"),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRedirectMap.Call(),
		asm.JNE.Imm(asm.R0, xdpRedirect, "return"),
		asm.LoadMem(asm.R1, asm.R9, 0, asm.DWord),
		asm.Sub.Imm(asm.R1, 1),
		asm.StoreMem(asm.R9, 0, asm.R1, asm.DWord),
		asm.Return().WithSymbol("return"),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
	)
	return insns
}

// verdictProgram is an XDP program that returns action.
func verdictProgram(action uint32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, int32(action)),
		asm.Return(),
	}
}
