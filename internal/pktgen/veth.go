package pktgen

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/sys"
)

// Verdict is the action of a [Sink]'s XDP program.
type Verdict uint32

// Verdicts a Sink can return (enum xdp_action).
const (
	// Drop discards each frame in XDP (XDP_DROP): the cheapest receiver,
	// for measuring what a sender can offer.
	Drop Verdict = 1
	// Pass hands each frame to the kernel's network stack (XDP_PASS), for
	// receivers above XDP: kernel sockets and AF_PACKET.
	Pass Verdict = 2
)

func (v Verdict) String() string {
	switch v {
	case Drop:
		return "XDP_DROP"
	case Pass:
		return "XDP_PASS"
	}
	return fmt.Sprintf("xdp action %d", uint32(v))
}

// Sink is an XDP program attached to an interface that returns one verdict
// for every frame. On veth, any XDP program attached in native (driver)
// mode on the receiving end, but not one in generic mode, turns on the NAPI
// path that frames sent with XDP (ndo_xdp_xmit) by the other end need;
// a Pass sink does that for receivers that are not themselves XDP.
type Sink struct {
	once sync.Once
	prog *ebpf.Program
	lnk  link.Link
}

// AttachSink attaches an XDP program that returns v for every frame to ep,
// in native (driver) mode, through a bpf_link that Close removes.
func AttachSink(ep netenv.Endpoint, v Verdict) (_ *Sink, err error) {
	if v != Drop && v != Pass {
		return nil, fmt.Errorf("attach xdp sink to %s: verdict %d: must be Drop or Pass", ep.Name, uint32(v))
	}
	s := &Sink{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "pktgen_sink", Type: ebpf.XDP, License: "Dual MIT/GPL", Instructions: verdictProgram(uint32(v)),
	})
	if err != nil {
		return nil, fmt.Errorf("attach xdp sink to %s: load program: %w", ep.Name, err)
	}
	err = ep.Do(func() error {
		var err error
		s.lnk, err = link.AttachXDP(link.XDPOptions{
			Program: s.prog, Interface: ep.Index, Flags: link.XDPDriverMode,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach xdp sink (%v) to %s: %w", v, ep.Name, err)
	}
	return s, nil
}

// Close detaches and unloads the program. The first Close reports every
// failure; later ones return nil. Closes called at the same time wait for
// the first.
func (s *Sink) Close() (err error) {
	s.once.Do(func() {
		var errs []error
		if s.lnk != nil {
			errs = append(errs, sys.CloseObject(s.lnk))
		}
		if s.prog != nil {
			errs = append(errs, sys.CloseObject(s.prog))
		}
		if jerr := errors.Join(errs...); jerr != nil {
			err = fmt.Errorf("detach xdp sink: %w", jerr)
		}
	})
	return err
}

// Counters are an interface's packet counters as rtnetlink reports them
// (struct rtnl_link_stats64).
type Counters struct {
	RxPackets, RxBytes, RxDropped uint64
	TxPackets, TxBytes, TxDropped uint64
}

// Sub returns c - o, field by field.
func (c Counters) Sub(o Counters) Counters {
	return Counters{
		RxPackets: c.RxPackets - o.RxPackets, RxBytes: c.RxBytes - o.RxBytes, RxDropped: c.RxDropped - o.RxDropped,
		TxPackets: c.TxPackets - o.TxPackets, TxBytes: c.TxBytes - o.TxBytes, TxDropped: c.TxDropped - o.TxDropped,
	}
}

// ReadCounters reads ep's counters. On veth, frames that arrive through XDP
// count in the receiver's rx_packets once its NAPI poll has taken them off
// the ring, which happens within the sender's BPF_PROG_RUN call on the
// sender's CPU (softirqs run as each batch is flushed), or shortly after
// when the ring is polled elsewhere.
func ReadCounters(ep netenv.Endpoint) (Counters, error) {
	var (
		l   netlink.Link
		err error
	)
	if ep.NS != nil {
		// Netlink fails once the namespace is closed, where a closed
		// handle would read a link of the same index in ours.
		var h *netlink.Handle
		if h, err = ep.NS.Netlink(); err == nil {
			l, err = h.LinkByIndex(ep.Index)
		}
	} else {
		l, err = netlink.LinkByIndex(ep.Index)
	}
	if err != nil {
		return Counters{}, fmt.Errorf("read counters of %s: %w", ep.Name, err)
	}
	s := l.Attrs().Statistics
	if s == nil {
		return Counters{}, fmt.Errorf("read counters of %s: no statistics in the link message", ep.Name)
	}
	return Counters{
		RxPackets: s.RxPackets, RxBytes: s.RxBytes, RxDropped: s.RxDropped,
		TxPackets: s.TxPackets, TxBytes: s.TxBytes, TxDropped: s.TxDropped,
	}, nil
}

// AddNeighbors adds permanent ARP entries on both ends of v for each other,
// so that replies the kernel sends to generated frames (ICMP port
// unreachable, say) cause no ARP exchange that would show up in the
// interface counters. The entries go with the links.
func AddNeighbors(v *netenv.Veth) error {
	for _, e := range [][2]netenv.Endpoint{{v.Host, v.Peer}, {v.Peer, v.Host}} {
		at, other := e[0], e[1]
		if !other.Addr.IsValid() {
			return fmt.Errorf("add neighbour on %s: %s has no address", at.Name, other.Name)
		}
		n := &netlink.Neigh{
			LinkIndex:    at.Index,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           other.IP().AsSlice(),
			HardwareAddr: other.MAC,
		}
		var err error
		if at.NS != nil {
			var h *netlink.Handle
			if h, err = at.NS.Netlink(); err == nil {
				err = h.NeighSet(n)
			}
		} else {
			err = netlink.NeighSet(n)
		}
		if err != nil {
			return fmt.Errorf("add neighbour %s on %s: %w", other.IP(), at.Name, err)
		}
	}
	return nil
}
