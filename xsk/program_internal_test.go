package xsk

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestTxOnlyProgram checks the program a TxOnly socket in zero-copy mode
// relies on (veth has no zero-copy, so txOnlyProgram is called directly):
// the process's own program is held, so that it stays attached after the
// receiving socket that loaded it closes; someone else's is used as it is;
// with none, one is attached and goes with the last reference.
func TestTxOnlyProgram(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	in := func(fn func() error) {
		t.Helper()
		if err := v.Host.Do(fn); err != nil {
			t.Fatal(err)
		}
	}
	attached := func() bpf.XDPInfo {
		t.Helper()
		var info bpf.XDPInfo
		in(func() (err error) {
			info, err = bpf.QueryXDP(v.Host.Index)
			return err
		})
		return info
	}

	t.Run("the process's program", func(t *testing.T) {
		var rx *Socket
		in(func() (err error) {
			rx, err = Open(v.Host.Name, 0, &Options{Filter: bpf.Filter{EtherType: 0x0800, IPProto: 17}})
			return err
		})
		defer rx.Close()
		id := rx.Program().ID()
		var sp *sharedProg
		in(func() (err error) {
			sp, err = txOnlyProgram(v.Host.Index, 1, &Options{TxOnly: true})
			return err
		})
		if sp == nil || sp.prog.ID() != id {
			t.Fatalf("txOnlyProgram beside the process's program %d: %v, want that program held", id, sp)
		}
		if err := rx.Close(); err != nil {
			t.Fatal(err)
		}
		if info := attached(); info.Driver.ID != id && info.Generic.ID != id {
			t.Errorf("after the receiving socket closed: %+v, want program %d still attached for the TxOnly socket", info, id)
		}
		if err := sp.release(); err != nil {
			t.Fatal(err)
		}
		if info := attached(); info.Attached() {
			t.Errorf("after the last reference went: %+v, want nothing attached", info)
		}
	})

	t.Run("someone else's program", func(t *testing.T) {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.XDP,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer prog.Close()
		var l link.Link
		in(func() (err error) {
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: v.Host.Index, Flags: link.XDPGenericMode})
			return err
		})
		defer l.Close()
		var sp *sharedProg
		in(func() (err error) {
			sp, err = txOnlyProgram(v.Host.Index, 1, &Options{TxOnly: true})
			return err
		})
		if sp != nil {
			sp.release()
			t.Fatalf("txOnlyProgram beside a foreign program took program %d", sp.prog.ID())
		}
	})

	t.Run("none", func(t *testing.T) {
		var sp *sharedProg
		in(func() (err error) {
			sp, err = txOnlyProgram(v.Host.Index, 1, &Options{TxOnly: true})
			return err
		})
		if sp == nil {
			t.Fatal("txOnlyProgram with no program attached attached none")
		}
		if info := attached(); info.Driver.ID != sp.prog.ID() && info.Generic.ID != sp.prog.ID() {
			t.Errorf("after txOnlyProgram: %+v, want program %d attached", info, sp.prog.ID())
		}
		if err := sp.release(); err != nil {
			t.Fatal(err)
		}
		if info := attached(); info.Attached() {
			t.Errorf("after release: %+v, want nothing attached", info)
		}
	})
}
