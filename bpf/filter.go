package bpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Filter selects the frames that the XDP program redirects to AF_XDP
// sockets; every other frame, and every frame too short to be checked, goes
// on to the kernel's network stack (XDP_PASS), so ARP, SSH and the rest keep
// working while a socket is bound. The zero value selects every frame. Each
// field left zero matches anything; the fields that are set must all match.
//
// A frame with one 802.1Q (0x8100) or 802.1ad (0x88A8) VLAN tag is matched
// on the EtherType inside the tag, and its IP header is looked for after the
// tag; a frame with two or more tags is matched on the EtherType after the
// first tag (which is then a tag, so such frames never match a non-zero
// EtherType or IPProto).
//
// The program reads only the frame's bytes, and the kernel may have moved a
// VLAN tag out of them, into the packet's metadata, before the program
// runs: a tag that the NIC stripped (VLAN receive offload) and, in generic
// mode on an interface stacked on another (a macvlan), the outer tag, which
// the parent's receive path takes out. Such a frame is matched, and reaches
// a socket, without that tag: one with a single tag as if untagged, one
// with two tags as a frame with one.
type Filter struct {
	// EtherType is the Ethernet type to match, for example 0x0800 (IPv4),
	// 0x86DD (IPv6) or 0x88B5. Zero matches any. VLAN tag types (0x8100,
	// 0x88A8) and values below 0x0600 (802.3 lengths) are refused.
	EtherType uint16

	// IPProto is the IP protocol number to match, for example 17 (UDP) or
	// 6 (TCP): the protocol field of an IPv4 header, or the next-header
	// field of an IPv6 header (so IPv6 frames with extension headers do not
	// match). Zero matches any. When set, EtherType must be 0x0800, 0x86DD
	// or zero (either IP version).
	IPProto uint8

	// DstPort is the UDP or TCP destination port to match, in host byte
	// order. Zero matches any. When set, IPProto must be 6 (TCP) or 17
	// (UDP). The IPv4 header's length (IHL) is honoured. A packet whose
	// IPv4 total length or IPv6 payload length ends before the port does
	// not match, whatever bytes follow it in the frame (Ethernet padding
	// is no UDP or TCP header). IPv4 fragments do not match, the first
	// one included: only the first carries the port, and a socket that
	// got it could not reassemble the datagram without the rest, so all
	// of them go on to the kernel, which can.
	DstPort uint16

	// DstAddr is the IP destination address to match. The zero Addr
	// matches any. An IPv4 address matches IPv4 frames only and an IPv6
	// address IPv6 frames only, so EtherType must be zero or agree with
	// it. Frames for other addresses, broadcast and multicast ones
	// included, go on to the kernel: a host that forwards IP keeps
	// forwarding the traffic for DstPort that is not its own. IPv4-mapped
	// IPv6 addresses (write the IPv4 form), addresses with a zone, and
	// the unspecified 0.0.0.0 and ::, which no frame is sent to (they do
	// not mean "any": the zero Addr does), are refused.
	DstAddr netip.Addr
}

// EtherTypes and IP protocol numbers that the filter knows about.
const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86DD
	etherTypeVLAN   = 0x8100 // 802.1Q
	etherTypeQinQ   = 0x88A8 // 802.1ad
	minEtherType    = 0x0600 // smaller values are 802.3 frame lengths
	ipProtoTCP      = unix.IPPROTO_TCP
	ipProtoUDP      = unix.IPPROTO_UDP
	ethHeaderLen    = 14
	vlanTagLen      = 4
	ipv4MinHeader   = 20
	ipv6HeaderLen   = 40
	l4DstPortOffset = 2      // same in the UDP and the TCP header
	ipv4ProtoOffset = 9      // protocol in the IPv4 header
	ipv4DstOffset   = 16     // destination address in the IPv4 header
	ipv6ProtoOffset = 6      // next header in the IPv6 header
	ipv6DstOffset   = 24     // destination address in the IPv6 header
	ipv4MFOffset    = 0x3fff // IPv4 flags and fragment offset: MF and the offset
)

// Offsets of the IP length fields, which end the packet before the frame
// does when Ethernet padding follows it.
const (
	ipv4TotLenOffset     = 2 // total length in the IPv4 header
	ipv6PayloadLenOffset = 4 // payload length in the IPv6 header
)

// any reports whether the filter checks anything.
func (f Filter) any() bool { return f != Filter{} }

// validate checks that the fields make sense together; the error names the
// field at fault.
func (f Filter) validate() error {
	switch {
	case f.EtherType == etherTypeVLAN || f.EtherType == etherTypeQinQ:
		return fmt.Errorf("Filter.EtherType %#04x: VLAN tags are skipped; filter on the EtherType inside the tag", f.EtherType)
	case f.EtherType != 0 && f.EtherType < minEtherType:
		return fmt.Errorf("Filter.EtherType %#04x: values below 0x0600 are 802.3 lengths, not EtherTypes", f.EtherType)
	case f.IPProto != 0 && f.EtherType != 0 && f.EtherType != etherTypeIPv4 && f.EtherType != etherTypeIPv6:
		return fmt.Errorf("Filter.IPProto %d: needs EtherType 0x0800 (IPv4), 0x86dd (IPv6) or 0 (either), not %#04x", f.IPProto, f.EtherType)
	case f.DstPort != 0 && f.IPProto != ipProtoTCP && f.IPProto != ipProtoUDP:
		return fmt.Errorf("Filter.DstPort %d: needs IPProto 6 (TCP) or 17 (UDP), not %d", f.DstPort, f.IPProto)
	case f.DstAddr.Is4In6():
		return fmt.Errorf("Filter.DstAddr %s: an IPv4-mapped IPv6 address; write the IPv4 address %s", f.DstAddr, f.DstAddr.Unmap())
	case f.DstAddr.Zone() != "":
		return fmt.Errorf("Filter.DstAddr %s: a zone is not part of a packet's address", f.DstAddr)
	case f.DstAddr.IsUnspecified():
		return fmt.Errorf("Filter.DstAddr %s: the unspecified address is no packet's destination; leave DstAddr zero (netip.Addr{}) to match any", f.DstAddr)
	case f.DstAddr.Is4() && f.EtherType != 0 && f.EtherType != etherTypeIPv4:
		return fmt.Errorf("Filter.DstAddr %s: an IPv4 address needs EtherType 0x0800 or 0 (any), not %#04x", f.DstAddr, f.EtherType)
	case f.DstAddr.Is6() && f.EtherType != 0 && f.EtherType != etherTypeIPv6:
		return fmt.Errorf("Filter.DstAddr %s: an IPv6 address needs EtherType 0x86dd or 0 (any), not %#04x", f.DstAddr, f.EtherType)
	}
	return nil
}

// String describes the filter, for logs and test names.
func (f Filter) String() string {
	if !f.any() {
		return "all frames"
	}
	s := ""
	add := func(part string) {
		if s != "" {
			s += " "
		}
		s += part
	}
	if f.EtherType != 0 {
		add(fmt.Sprintf("ethertype %#04x", f.EtherType))
	}
	if f.IPProto != 0 {
		add(fmt.Sprintf("ipproto %d", f.IPProto))
	}
	if f.DstPort != 0 {
		add(fmt.Sprintf("dstport %d", f.DstPort))
	}
	if f.DstAddr.IsValid() {
		add("dstaddr " + f.DstAddr.String())
	}
	return s
}

// netImm returns the immediate to compare with a 16-bit field loaded from
// the packet: the load yields the field's bytes in host order, so the
// constant is put into the same order here rather than swapping at run
// time.
func netImm(v uint16) int32 {
	return int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v)))
}

// netImm32 is netImm for the 32-bit word at b[0:4], which is in network
// order already, for a JMP32 comparison with a 32-bit load.
func netImm32(b []byte) int32 {
	return int32(binary.NativeEndian.Uint32(b))
}

// Offsets of the fields of struct xdp_md that the program reads.
const (
	xdpMDData         = 0
	xdpMDDataEnd      = 4
	xdpMDRxQueueIndex = 16
)

// XDP verdicts (enum xdp_action).
const (
	xdpPass     = 2
	xdpRedirect = 4
)

// Labels in the generated program.
const (
	lblPass     = "pass"
	lblRedirect = "redirect"
	lblVLAN     = "vlan"
	lblL3       = "l3"
	lblIPv4     = "ipv4"
	lblIPv6     = "ipv6"
	lblL4       = "l4"
)

// instructions returns the XDP program for filter f, redirecting to the
// XSKMAP whose file descriptor is xskMapFD.
//
// The program is assembled here, in Go, rather than compiled from C with
// clang and committed as an object file: users build afxdp with plain
// `go build`, with no C toolchain, and the filter's constants are compiled
// into the instructions for each configuration, so a frame pays only for
// the checks it asked for.
//
// Registers: R1 is the context on entry; R7 keeps rx_queue_index; R2 and R3
// are data and data_end; R4 points at the current header; R5 holds the
// EtherType; R0, R6 and R8 are scratch until the helper's result.
func instructions(f Filter, xskMapFD int) asm.Instructions {
	insns := asm.Instructions{
		// The queue this frame came in on is the XSKMAP key.
		asm.LoadMem(asm.R7, asm.R1, xdpMDRxQueueIndex, asm.Word),
	}
	if f.any() {
		insns = append(insns, filterInstructions(f)...)
	}
	insns = append(insns,
		// bpf_redirect_map(&xskmap, rx_queue_index, XDP_PASS): the lower
		// bits of the flags are the verdict when the queue has no socket.
		asm.LoadMapPtr(asm.R1, xskMapFD).WithSymbol(lblRedirect),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Return(),
	)
	if f.any() {
		insns = append(insns,
			asm.Mov.Imm(asm.R0, xdpPass).WithSymbol(lblPass),
			asm.Return(),
		)
	}
	return insns
}

// filterInstructions returns the checks for a non-zero filter. They fall
// through to the redirect when every check passes and jump to lblPass
// otherwise. Each read is preceded by a comparison of the end of the read
// with data_end, which is what the verifier demands.
func filterInstructions(f Filter) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, xdpMDData, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, xdpMDDataEnd, asm.Word),

		// Ethernet header: R4 = data + 14, R5 = EtherType.
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ethHeaderLen),
		asm.JGT.Reg(asm.R4, asm.R3, lblPass),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JEq.Imm(asm.R5, netImm(etherTypeVLAN), lblVLAN),
		asm.JEq.Imm(asm.R5, netImm(etherTypeQinQ), lblVLAN),
		asm.Ja.Label(lblL3),

		// One VLAN tag: the EtherType inside it, and the L3 header after.
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol(lblVLAN),
		asm.Add.Imm(asm.R4, ethHeaderLen+vlanTagLen),
		asm.JGT.Reg(asm.R4, asm.R3, lblPass),
		asm.LoadMem(asm.R5, asm.R2, ethHeaderLen+2, asm.Half),
	}

	// The L3 header starts at R4; R5 is its EtherType.
	l3 := l3Instructions(f)
	l3[0] = l3[0].WithSymbol(lblL3)
	return append(insns, l3...)
}

// l3Instructions checks the EtherType in R5 and the IP header at R4.
func l3Instructions(f Filter) asm.Instructions {
	var insns asm.Instructions
	if f.EtherType != 0 {
		insns = append(insns, asm.JNE.Imm(asm.R5, netImm(f.EtherType), lblPass))
	}
	if f.IPProto == 0 && !f.DstAddr.IsValid() {
		return append(insns, asm.Ja.Label(lblRedirect))
	}

	v4 := (f.EtherType == 0 || f.EtherType == etherTypeIPv4) && !f.DstAddr.Is6()
	v6 := (f.EtherType == 0 || f.EtherType == etherTypeIPv6) && !f.DstAddr.Is4()
	if v4 {
		insns = append(insns, asm.JEq.Imm(asm.R5, netImm(etherTypeIPv4), lblIPv4))
	}
	if v6 {
		insns = append(insns, asm.JEq.Imm(asm.R5, netImm(etherTypeIPv6), lblIPv6))
	}
	insns = append(insns, asm.Ja.Label(lblPass))

	next := asm.Ja.Label(lblRedirect) // where a matching L3 header goes
	if f.DstPort != 0 {
		next = asm.Ja.Label(lblL4)
	}

	if v4 {
		insns = append(insns, ipInstructions(f, lblIPv4, ipv4MinHeader, ipv4ProtoOffset, ipv4DstOffset)...)
		if f.DstPort != 0 {
			insns = append(insns,
				// A fragment (more fragments set, or an offset) goes
				// to the kernel, whole datagram or not.
				asm.LoadMem(asm.R0, asm.R4, 6, asm.Half),
				asm.And.Imm(asm.R0, netImm(ipv4MFOffset)),
				asm.JNE.Imm(asm.R0, 0, lblPass),
				// Skip IHL*4 bytes; IHL < 5 is malformed.
				asm.LoadMem(asm.R0, asm.R4, 0, asm.Byte),
				asm.And.Imm(asm.R0, 0x0f),
				asm.LSh.Imm(asm.R0, 2),
				asm.JLT.Imm(asm.R0, ipv4MinHeader, lblPass),
				// The port must lie inside the packet, not in the
				// Ethernet padding after it: total length (R6, in
				// host order; the swap is its own inverse) at
				// least IHL*4 + 4 (R8).
				asm.LoadMem(asm.R6, asm.R4, ipv4TotLenOffset, asm.Half),
				asm.HostTo(asm.BE, asm.R6, asm.Half),
				asm.Mov.Reg(asm.R8, asm.R0),
				asm.Add.Imm(asm.R8, l4DstPortOffset+2),
				asm.JGT.Reg(asm.R8, asm.R6, lblPass),
				asm.Add.Reg(asm.R4, asm.R0),
			)
		}
		insns = append(insns, next)
	}
	if v6 {
		insns = append(insns, ipInstructions(f, lblIPv6, ipv6HeaderLen, ipv6ProtoOffset, ipv6DstOffset)...)
		if f.DstPort != 0 {
			insns = append(insns,
				// The port must lie inside the payload length.
				asm.LoadMem(asm.R6, asm.R4, ipv6PayloadLenOffset, asm.Half),
				asm.HostTo(asm.BE, asm.R6, asm.Half),
				asm.JLT.Imm(asm.R6, l4DstPortOffset+2, lblPass),
				asm.Add.Imm(asm.R4, ipv6HeaderLen),
			)
		}
		insns = append(insns, next)
	}
	if f.DstPort != 0 {
		insns = append(insns,
			// UDP or TCP header at R4: the destination port is bytes 2-3.
			asm.Mov.Reg(asm.R0, asm.R4).WithSymbol(lblL4),
			asm.Add.Imm(asm.R0, l4DstPortOffset+2),
			asm.JGT.Reg(asm.R0, asm.R3, lblPass),
			asm.LoadMem(asm.R0, asm.R4, l4DstPortOffset, asm.Half),
			asm.JNE.Imm(asm.R0, netImm(f.DstPort), lblPass),
			asm.Ja.Label(lblRedirect),
		)
	}
	return insns
}

// ipInstructions, at label, checks the IP header at R4 that is at least
// hdrLen bytes long: that so much of it is there, that the protocol byte
// at protoOff is f.IPProto and the address at dstOff is f.DstAddr (each
// when set). It jumps to lblPass at the first failed check and falls
// through when all pass.
func ipInstructions(f Filter, label string, hdrLen int32, protoOff, dstOff int16) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R0, asm.R4).WithSymbol(label),
		asm.Add.Imm(asm.R0, hdrLen),
		asm.JGT.Reg(asm.R0, asm.R3, lblPass),
	}
	if f.IPProto != 0 {
		insns = append(insns,
			asm.LoadMem(asm.R0, asm.R4, protoOff, asm.Byte),
			asm.JNE.Imm(asm.R0, int32(f.IPProto), lblPass),
		)
	}
	return append(insns, addrInstructions(f.DstAddr, dstOff)...)
}

// addrInstructions compares the destination address at R4+off, inside the
// IP header that the caller checked is all there, with addr, 32 bits at a
// time, and jumps to lblPass at the first difference. The zero Addr needs
// no check.
func addrInstructions(addr netip.Addr, off int16) asm.Instructions {
	if !addr.IsValid() {
		return nil
	}
	b := addr.AsSlice()
	var insns asm.Instructions
	for i := 0; i < len(b); i += 4 {
		insns = append(insns,
			asm.LoadMem(asm.R0, asm.R4, off+int16(i), asm.Word),
			asm.JNE.Imm32(asm.R0, netImm32(b[i:i+4]), lblPass),
		)
	}
	return insns
}
