package bpf

import (
	"bytes"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestVerdictsOnTheWire sends frames from the peer of a veth pair, through
// a packet socket, to an interface with the program attached and a socket
// registered for queue 0, and watches where each one goes: to the AF_XDP
// socket (whose statistics count it, its fill ring being empty) or on to
// the kernel (where a packet socket on the interface sees it). Each verdict
// must be the one Filter's doc gives for that attach mode, including a
// stacked device in generic mode, where the kernel has taken the outer VLAN
// tag out of the frame before the program runs.
func TestVerdictsOnTheWire(t *testing.T) {
	const port = 4000
	filter := Filter{EtherType: 0x0800, IPProto: 17, DstPort: port}
	var (
		udp4     = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{})))
		other    = pad(eth(0x0800, ipv4(17, udp(port+1), ipv4Opts{})))
		vlanUDP4 = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x8100))
		qinqUDP4 = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x88A8, 0x8100))
		arpReq   = pad(eth(0x0806, arp()))
		frag     = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{mf: true})))
		ipv6UDP  = pad(eth(0x86DD, ipv6(17, udp(port))))
	)
	type frame struct {
		name string
		data []byte
		xsk  bool // redirected to the socket, else passed to the kernel
	}
	for _, tt := range []struct {
		name    string
		mode    AttachMode
		macvlan bool
		frames  []frame
	}{
		{"veth driver", AttachDriver, false, []frame{
			{"udp4", udp4, true}, {"other port", other, false}, {"vlan", vlanUDP4, true},
			{"qinq", qinqUDP4, false}, {"arp", arpReq, false}, {"first fragment", frag, false},
			{"ipv6", ipv6UDP, false},
		}},
		{"veth generic", AttachGeneric, false, []frame{
			{"udp4", udp4, true}, {"other port", other, false}, {"vlan", vlanUDP4, true},
			{"qinq", qinqUDP4, false}, {"arp", arpReq, false},
		}},
		{"macvlan generic", AttachGeneric, true, []frame{
			{"udp4", udp4, true}, {"other port", other, false}, {"vlan", vlanUDP4, true},
			// The parent took the 802.1ad tag out: the program sees
			// one 802.1Q tag and the IPv4 header inside it.
			{"qinq", qinqUDP4, true}, {"arp", arpReq, false},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v := testenv.NewVeth(t, &netenv.VethOptions{NoAddr: true})
			ep := v.Host
			if tt.macvlan {
				ep = testenv.NewMacvlan(t, v.Host, nil).Endpoint
			}
			p := newTestProgram(t, &ProgramOptions{Filter: filter})
			a, err := p.Attach(ep.Index, &AttachOptions{Mode: tt.mode})
			mustOK(t, err)
			t.Cleanup(func() { a.Close() })
			xsk := newBoundXSK(t, ep.Index, 0)
			mustOK(t, p.Register(0, xsk))
			sniff := packetSocket(t, ep)
			tx := packetSocket(t, v.Peer)

			redirected := func() uint64 {
				st, err := sys.Statistics(xsk)
				mustOK(t, err)
				return st.Rx_dropped
			}
			for _, f := range tt.frames {
				data := append([]byte(nil), f.data...)
				copy(data[0:6], ep.MAC)
				copy(data[6:12], v.Peer.MAC)
				before := redirected()
				mustOK(t, unix.Sendto(tx, data, 0, &unix.SockaddrLinklayer{Ifindex: v.Peer.Index, Halen: 6}))
				got := ""
				buf := make([]byte, 2048)
				for deadline := time.Now().Add(5 * time.Second); got == "" && time.Now().Before(deadline); {
					if redirected() != before {
						got = "socket"
						break
					}
					n, _, err := unix.Recvfrom(sniff, buf, 0)
					if err == nil && n >= 12 && bytes.Equal(buf[6:12], v.Peer.MAC) {
						got = "kernel"
					}
				}
				want := "kernel"
				if f.xsk {
					want = "socket"
				}
				if got != want {
					t.Errorf("%s: went to the %q, want the %s", f.name, got, want)
				}
			}
		})
	}
}

// packetSocket returns a packet socket for all protocols, bound to ep and
// made in its namespace, that waits at most 50ms in a receive.
func packetSocket(t *testing.T, ep netenv.Endpoint) int {
	t.Helper()
	proto := int(uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8)
	var fd int
	mustOK(t, ep.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ep.Index})
	}))
	t.Cleanup(func() { unix.Close(fd) })
	mustOK(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000}))
	return fd
}
