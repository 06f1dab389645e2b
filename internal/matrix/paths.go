package matrix

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/xsk"
)

// Names of the receiving sockets' drop counters.
const (
	keyUDPDrops      = "B's UDP socket sk_drops"
	keyAFPacketDrops = "B's AF_PACKET ring tp_drops"
	keyXSKDropped    = "B's AF_XDP socket rx_dropped"
	keyXSKRingFull   = "B's AF_XDP socket rx_ring_full"
	// Not drops of its own: how often a frame found the fill ring empty,
	// each time one of those rx_dropped.
	keyXSKFillEmpty = "B's AF_XDP socket fill_ring_empty (events)"
)

// xskKeys name an AF_XDP socket's drop counters.
type xskKeys struct{ dropped, ringFull, fillEmpty string }

// xskKeysOf names the counters of the AF_XDP socket in side's namespace
// ("A" or "B").
func xskKeysOf(side string) xskKeys {
	if side == "B" {
		return xskKeys{keyXSKDropped, keyXSKRingFull, keyXSKFillEmpty}
	}
	p := side + "'s AF_XDP socket "
	return xskKeys{p + "rx_dropped", p + "rx_ring_full", p + "fill_ring_empty (events)"}
}

// receiver takes what arrives at B, counting it.
type receiver interface {
	// recv receives until it has n packets (0: no limit) or deadline
	// passes, and returns how many it took.
	recv(n uint64, deadline time.Time) (uint64, error)
	// drops are the socket's own drop counters, by name.
	drops() (map[string]uint64, error)
	close() error
}

// sender sends frames from A to B as fast as it can.
type sender interface {
	// send sends until deadline and returns how many it handed over.
	send(deadline time.Time) (uint64, error)
	close() error
}

// xdpInfo describes how an AF_XDP socket got its frames.
type xdpInfo struct {
	XDP  string // "native" or "generic"; "" when no program was attached
	Bind string // "copy" or "zero-copy"
}

func modeName(m bpf.AttachMode) string {
	switch m {
	case bpf.AttachDriver:
		return "native"
	case bpf.AttachGeneric:
		return "generic"
	}
	return ""
}

func xdpInfoOf(s *xsk.Socket) xdpInfo {
	return xdpInfo{XDP: modeName(s.XDPMode()), Bind: s.Mode().String()}
}

// newReceiver makes path's receiver on B; it must run inside B's namespace.
func newReceiver(path string, B netenv.Endpoint) (receiver, xdpInfo, error) {
	switch path {
	case "udp":
		r, err := baseline.NewUDPReceiver(netip.AddrPortFrom(B.IP(), serverPort), nil)
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return udpRecv{r}, xdpInfo{}, nil
	case "afpacket":
		r, err := baseline.NewAFPacketReceiver(B.Index, &baseline.AFPacketRxOptions{Protocol: 0x0800, DstPort: serverPort})
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return afpRecv{r}, xdpInfo{}, nil
	case "afxdp":
		s, err := xsk.Open(B.Name, 0, &xsk.Options{Filter: bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: serverPort}})
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return &xskRecv{s: s, descs: make([]xsk.Desc, 64)}, xdpInfoOf(s), nil
	}
	return nil, xdpInfo{}, fmt.Errorf("unknown path %q", path)
}

type udpRecv struct{ r *baseline.UDPReceiver }

func (u udpRecv) recv(n uint64, d time.Time) (uint64, error) {
	c, err := u.r.Receive(n, d)
	return c.Packets, err
}

func (u udpRecv) drops() (map[string]uint64, error) {
	s, err := u.r.Stats()
	return map[string]uint64{keyUDPDrops: s.Drops}, err
}

func (u udpRecv) close() error { return u.r.Close() }

type afpRecv struct{ r *baseline.AFPacketReceiver }

func (a afpRecv) recv(n uint64, d time.Time) (uint64, error) {
	c, err := a.r.Receive(n, d)
	return c.Packets, err
}

func (a afpRecv) drops() (map[string]uint64, error) {
	s, err := a.r.Stats()
	return map[string]uint64{keyAFPacketDrops: s.Drops}, err
}

func (a afpRecv) close() error { return a.r.Close() }

// xskRxSocket is what xskRecv uses of an AF_XDP socket.
type xskRxSocket interface {
	Receive(descs []xsk.Desc) (int, error)
	Release(descs []xsk.Desc) error
	Wait(events xsk.Events, timeout time.Duration) (xsk.Events, error)
	Stats() (xsk.Stats, error)
	Close() error
}

type xskRecv struct {
	s     xskRxSocket
	descs []xsk.Desc
}

func (x *xskRecv) recv(n uint64, deadline time.Time) (uint64, error) {
	var got uint64
	for n == 0 || got < n {
		k, err := x.s.Receive(x.descs)
		if err != nil {
			return got, err
		}
		if k > 0 {
			got += uint64(k)
			if err := x.s.Release(x.descs[:k]); err != nil {
				return got, err
			}
		}
		// After every batch too: a receiver that never finds the RX
		// ring empty (one slower than its generator) would otherwise
		// stretch the measured window until the generator stops.
		wait := time.Until(deadline)
		if wait <= 0 {
			return got, nil
		}
		if k > 0 {
			continue
		}
		if _, err := x.s.Wait(xsk.Readable, min(wait, 10*time.Millisecond)); err != nil {
			return got, err
		}
	}
	return got, nil
}

func (x *xskRecv) drops() (map[string]uint64, error) { return xskDrops(x.s, "B") }

func (x *xskRecv) close() error { return x.s.Close() }

// newSender makes path's sender on A toward B; it must run inside A's
// namespace. frame is the frame raw paths send; its UDP payload is
// payload bytes long.
func newSender(path string, t *topo, frame []byte, payload int) (sender, xdpInfo, error) {
	switch path {
	case "udp":
		s, err := baseline.NewUDPSender(netip.AddrPortFrom(t.A.IP(), clientPort), netip.AddrPortFrom(t.B.IP(), serverPort),
			&baseline.UDPOptions{PayloadLen: payload})
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return udpSend{s}, xdpInfo{}, nil
	case "afpacket":
		s, err := baseline.NewAFPacketSender(t.A.Index, nil)
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return afpSend{s, frame}, xdpInfo{}, nil
	case "afxdp":
		// Transmit only: no program on A, whose receive path stays as
		// it was.
		s, err := xsk.Open(t.A.Name, 0, &xsk.Options{NoXDP: true})
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return &xskSend{s: s, frame: frame, descs: make([]xsk.Desc, 64)}, xdpInfoOf(s), nil
	}
	return nil, xdpInfo{}, fmt.Errorf("unknown path %q", path)
}

type udpSend struct{ s *baseline.UDPSender }

func (u udpSend) send(deadline time.Time) (uint64, error) {
	var n uint64
	for time.Now().Before(deadline) {
		c, err := u.s.Send(baseline.DefaultBatch)
		n += c.Packets
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (u udpSend) close() error { return u.s.Close() }

type afpSend struct {
	s     *baseline.AFPacketSender
	frame []byte
}

func (a afpSend) send(deadline time.Time) (uint64, error) {
	var n uint64
	for time.Now().Before(deadline) {
		c, err := a.s.Send(a.frame, baseline.DefaultBatch)
		n += c.Packets
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (a afpSend) close() error { return a.s.Close() }

type xskSend struct {
	s     *xsk.Socket
	frame []byte
	descs []xsk.Desc
}

func (x *xskSend) send(deadline time.Time) (uint64, error) {
	var n uint64
	for i := 0; ; i++ {
		if i%16 == 0 && !time.Now().Before(deadline) {
			return n, nil
		}
		k, err := x.s.Alloc(x.descs)
		if err != nil {
			return n, err
		}
		if k == 0 {
			if _, err := x.s.Wait(xsk.Writable, time.Millisecond); err != nil {
				return n, err
			}
			continue
		}
		for j := range x.descs[:k] {
			f := x.s.Frame(x.descs[j])
			x.descs[j].Len = uint32(copy(f[:cap(f)], x.frame))
		}
		sent, err := x.s.Transmit(x.descs[:k])
		n += uint64(sent)
		if sent < k {
			if rerr := x.s.Release(x.descs[sent:k]); rerr != nil {
				return n, errors.Join(err, rerr)
			}
		}
		if err != nil {
			return n, err
		}
	}
}

func (x *xskSend) close() error { return x.s.Close() }
