package matrix

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/afxdp/afxdp/internal/netenv"
)

// countSink is an XDP program that counts, in a per-CPU array, the frames
// of a transmit measurement reaching an interface and drops them: the
// receiving end of transmit measurements, cheap enough not to limit the
// sender, and exact. It counts only what every sender of the matrix
// writes (see sinkMatch); anything else, such as the IPv6 neighbour
// discovery and multicast the host ends of a topology send, passes on to
// the stack uncounted.
type countSink struct {
	mode  string // "native" or "generic"
	prog  *ebpf.Program
	count *ebpf.Map
	lnk   link.Link
}

// sinkMatch is what a frame must carry to be counted: Ethernet to B's MAC
// address, IPv4 without options, UDP from clientPort to B's address and
// serverPort. A frame addressed to another MAC (a sender that got the
// next hop wrong) reaches an XDP program all the same, so the address is
// checked too.
type sinkMatch struct {
	DstMAC net.HardwareAddr
	DstIP  netip.Addr
}

// program is the counting program for m, with the counter map's fd.
func (m sinkMatch) program(countFD int) (asm.Instructions, error) {
	if len(m.DstMAC) != 6 || !m.DstIP.Is4() {
		return nil, fmt.Errorf("match %s %s: need an Ethernet address and an IPv4 address", m.DstMAC, m.DstIP)
	}
	// Compare words as the program loads them: in the machine's order.
	ne := binary.NativeEndian
	var ports [4]byte
	binary.BigEndian.PutUint16(ports[0:], clientPort)
	binary.BigEndian.PutUint16(ports[2:], serverPort)
	ip := m.DstIP.As4()
	var ethType [2]byte
	binary.BigEndian.PutUint16(ethType[:], 0x0800)
	checks := []struct {
		off  int16
		size asm.Size
		want uint64
	}{
		{0, asm.Word, uint64(ne.Uint32(m.DstMAC[0:4]))},
		{4, asm.Half, uint64(ne.Uint16(m.DstMAC[4:6]))},
		{12, asm.Half, uint64(ne.Uint16(ethType[:]))},
		{14, asm.Byte, 0x45},                             // IPv4, 20-byte header
		{14 + 9, asm.Byte, 17},                           // UDP
		{14 + 16, asm.Word, uint64(ne.Uint32(ip[:]))},    // destination address
		{14 + 20, asm.Word, uint64(ne.Uint32(ports[:]))}, // source and destination ports
	}
	const pass, drop = 2, 1 // XDP_PASS, XDP_DROP
	insns := asm.Instructions{
		// R6 = data, R7 = data_end.
		asm.LoadMem(asm.R6, asm.R1, 0, asm.Word),
		asm.LoadMem(asm.R7, asm.R1, 4, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R6),
		asm.Add.Imm(asm.R2, 14+20+8),
		asm.JGT.Reg(asm.R2, asm.R7, "pass"),
	}
	for _, c := range checks {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R6, c.off, c.size),
			asm.LoadImm(asm.R3, int64(c.want), asm.DWord),
			asm.JNE.Reg(asm.R2, asm.R3, "pass"),
		)
	}
	insns = append(insns,
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, countFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, drop).WithSymbol("drop"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, pass).WithSymbol("pass"),
		asm.Return(),
	)
	return insns, nil
}

// attachCountSink attaches a sink counting the frames that match m to ep,
// in native mode where the device has it and generic mode elsewhere.
func attachCountSink(ep netenv.Endpoint, m sinkMatch) (_ *countSink, err error) {
	s := &countSink{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.count, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "mx_count", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("attach count sink to %s: create map: %w", ep.Name, err)
	}
	insns, err := m.program(s.count.FD())
	if err != nil {
		return nil, fmt.Errorf("attach count sink to %s: %w", ep.Name, err)
	}
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "mx_count_sink", Type: ebpf.XDP, License: "Dual MIT/GPL", Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("attach count sink to %s: load program: %w", ep.Name, err)
	}
	err = ep.Do(func() error {
		var err error
		s.lnk, err = link.AttachXDP(link.XDPOptions{Program: s.prog, Interface: ep.Index, Flags: link.XDPDriverMode})
		if err == nil {
			s.mode = "native"
			return nil
		}
		s.lnk, err = link.AttachXDP(link.XDPOptions{Program: s.prog, Interface: ep.Index, Flags: link.XDPGenericMode})
		s.mode = "generic"
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach count sink to %s: %w", ep.Name, err)
	}
	return s, nil
}

// total is the number of frames counted so far.
func (s *countSink) total() (uint64, error) {
	var per []uint64
	if err := s.count.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read count sink: %w", err)
	}
	var t uint64
	for _, v := range per {
		t += v
	}
	return t, nil
}

func (s *countSink) close() error {
	var errs []error
	if s.lnk != nil {
		errs = append(errs, s.lnk.Close())
		s.lnk = nil
	}
	if s.prog != nil {
		errs = append(errs, s.prog.Close())
		s.prog = nil
	}
	if s.count != nil {
		errs = append(errs, s.count.Close())
		s.count = nil
	}
	return errors.Join(errs...)
}
