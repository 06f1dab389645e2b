package pktgen_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestSendRefusedByTarget puts the target in states where the kernel drops
// every frame in the redirect, before or inside the target's ndo_xdp_xmit,
// without a trace in any interface counter: Send must count none of them
// as offered and say why, naming the interface.
func TestSendRefusedByTarget(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the generator's target; the generator is made
		// before setup breaks the path, as users do.
		target func(t *testing.T, v *netenv.Veth) netenv.Endpoint
		setup  func(t *testing.T, v *netenv.Veth)
		errno  error
		says   string // in the error, when not ""
	}{
		{"target down", nil, func(t *testing.T, v *netenv.Veth) {
			attachSink(t, v.Peer, pktgen.Drop)
			testenv.SetLink(t, v.Host, false)
		}, unix.ENETDOWN, ""},
		{"peer down", nil, func(t *testing.T, v *netenv.Veth) {
			attachSink(t, v.Peer, pktgen.Drop)
			testenv.SetLink(t, v.Peer, false)
		}, unix.ENXIO, ""},
		{"peer without XDP", nil, func(t *testing.T, v *netenv.Veth) {}, unix.EOPNOTSUPP, ""},
		// The peer has an XDP program, and the error must not say it
		// has none: veth wants one in native mode.
		{"peer with generic XDP only", nil, func(t *testing.T, v *netenv.Veth) {
			attachGeneric(t, v.Peer)
		}, unix.EOPNOTSUPP, "generic mode"},
		{"macvlan (no ndo_xdp_xmit)", func(t *testing.T, v *netenv.Veth) netenv.Endpoint {
			return testenv.NewMacvlan(t, v.Host, nil).Endpoint
		}, func(t *testing.T, v *netenv.Veth) {
			attachSink(t, v.Peer, pktgen.Drop)
		}, unix.EOPNOTSUPP, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVeth(t)
			target := v.Host
			if tt.target != nil {
				target = tt.target(t, v)
			}
			g := newGen(t, target, &pktgen.Options{Frame: udpFrame(t, v.Host, v.Peer, 18)})
			tt.setup(t, v)
			before := readCounters(t, v.Peer)
			const n = 1000
			sent, err := g.Send(n)
			if sent != 0 || !errors.Is(err, tt.errno) {
				t.Errorf("Send(%d) = %d, %v; want 0 and %v", n, sent, err, tt.errno)
			}
			if err != nil && !strings.Contains(err.Error(), target.Name) {
				t.Errorf("error does not name the target %s: %v", target.Name, err)
			}
			if err != nil && !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error does not say %q: %v", tt.says, err)
			}
			t.Log(err)
			if got := g.Total(); got != 0 {
				t.Errorf("Total = %d, want 0", got)
			}
			if d := readCounters(t, v.Peer).Sub(before); d.RxPackets != 0 {
				t.Errorf("peer received %d packets", d.RxPackets)
			}
		})
	}
}

// attachGeneric attaches an XDP_DROP program to ep in generic (skb) mode.
func attachGeneric(t *testing.T, ep netenv.Endpoint) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "generic_drop", Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, int32(pktgen.Drop)), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	var l link.Link
	if err := ep.Do(func() (err error) {
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ep.Index, Flags: link.XDPGenericMode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
}

// TestReceiverRedirectFailuresNotCounted has the receiving end forward every
// frame with bpf_redirect to a veth whose peer is down: the kernel refuses
// those in softirqs that run on the generator's thread, inside its
// BPF_PROG_RUN, yet they are the receiver's failures, after the generator's
// frames arrived. Send must count every frame as offered.
func TestReceiverRedirectFailuresNotCounted(t *testing.T) {
	v := newVeth(t)
	// A second pair beside the receiving end: fwd.Host in v.Peer's
	// namespace, fwd.Peer with an XDP program (so that fwd.Host takes
	// XDP frames) and then down (so that its driver refuses them).
	fwd := testenv.NewVeth(t, &netenv.VethOptions{HostNS: v.Peer.NS, NoAddr: true})
	attachSink(t, fwd.Peer, pktgen.Drop)
	testenv.SetLink(t, fwd.Peer, false)

	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "redirect", Type: ebpf.XDP, License: "Dual MIT/GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, int32(fwd.Host.Index)),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnRedirect.Call(),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	var l link.Link
	if err := v.Peer.Do(func() (err error) {
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: v.Peer.Index, Flags: link.XDPDriverMode})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	g := newGen(t, v.Host, &pktgen.Options{Frame: udpFrame(t, v.Host, v.Peer, 18)})
	before := readBoth(t, v.Host, v.Peer)
	fwdBefore := readCounters(t, fwd.Host)
	const n = 1000
	if sent, err := g.Send(n); sent != n || err != nil {
		t.Errorf("Send(%d) = %d, %v; want %d, nil", n, sent, err, n)
	}
	waitRx(t, before, n)
	// The receiver's redirects did fail: fwd.Host sent nothing.
	if d := readCounters(t, fwd.Host).Sub(fwdBefore); d.TxPackets != 0 {
		t.Errorf("%s sent %d packets; want its peer to refuse them all", fwd.Host.Name, d.TxPackets)
	}
}

// TestOtherGeneratorsRefusalsNotCounted runs a generator whose target's
// peer is down (its batches fail in the target's driver) beside one whose
// target takes every frame: each counts only its own.
func TestOtherGeneratorsRefusalsNotCounted(t *testing.T) {
	good, bad := newVeth(t), newVeth(t)
	attachSink(t, good.Peer, pktgen.Drop)
	attachSink(t, bad.Peer, pktgen.Drop)
	testenv.SetLink(t, bad.Peer, false)
	gg := newGen(t, good.Host, &pktgen.Options{Frame: udpFrame(t, good.Host, good.Peer, 18), Chunk: 1 << 12})
	gb := newGen(t, bad.Host, &pktgen.Options{Frame: udpFrame(t, bad.Host, bad.Peer, 18), Chunk: 1 << 12})

	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		n   uint64
		err error
	}
	badDone := make(chan result, 1)
	go func() {
		// Refused chunk after chunk until cancelled: Send stops at the
		// first, so keep sending.
		var r result
		for ctx.Err() == nil {
			n, err := gb.Send(1 << 12)
			r.n += n
			if !errors.Is(err, unix.ENXIO) {
				r.err = err
				break
			}
		}
		badDone <- r
	}()
	before := readBoth(t, good.Host, good.Peer)
	const n = 200_000
	sent, err := gg.Send(n)
	cancel()
	if sent != n || err != nil {
		t.Errorf("Send(%d) beside a refused generator = %d, %v; want %d, nil", n, sent, err, n)
	}
	waitRx(t, before, n)
	if r := <-badDone; r.n != 0 || r.err != nil {
		t.Errorf("refused generator: %d offered, %v; want 0 and ENXIO every time", r.n, r.err)
	}
}
