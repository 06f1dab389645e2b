package matrix

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/afxdp/afxdp/internal/netenv"
)

// countSink is an XDP program that counts the frames reaching an interface
// in a per-CPU array and drops them: the receiving end of transmit
// measurements, cheap enough not to limit the sender, and exact.
type countSink struct {
	mode  string // "native" or "generic"
	prog  *ebpf.Program
	count *ebpf.Map
	lnk   link.Link
}

// attachCountSink attaches a counting sink to ep, in native mode where the
// device has it and generic mode elsewhere.
func attachCountSink(ep netenv.Endpoint) (_ *countSink, err error) {
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
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "mx_count_sink", Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, s.count.FD()),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("out"), // XDP_DROP
			asm.Return(),
		},
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
