// Command echo is a UDP echo server that lives entirely in user space: it
// receives UDP/IPv4 datagrams for one port on one queue of an interface
// through an AF_XDP socket, turns each frame around in place (Ethernet and
// IP addresses and UDP ports swapped, TTL reset, IPv4 header and UDP
// checksums recomputed) and transmits it from the same UMEM frame. Plain
// kernel UDP clients (net.Dial, nc -u) get their datagrams back: the frames
// built here are real packets to the kernel, which would drop them on a
// bad checksum.
//
// Its XDP program redirects only UDP/IPv4 to -port (bpf.Filter); ARP and
// everything else go on to the kernel, which therefore still answers the
// clients' ARP requests for the interface's address.
//
// With no interface (-i) it builds its own veth pair in throwaway network
// namespaces, serves on the peer end, and runs a kernel UDP client on the
// host end that sends -n datagrams and checks every reply.
//
// Needs Linux 5.18+ and root (CAP_NET_ADMIN, CAP_BPF; CAP_SYS_ADMIN for
// the namespaces).
//
//	go run ./examples/echo -n 1000
//	go run ./examples/echo -i eth0 -port 7    # then: echo hi | nc -u -w1 <eth0's address> 7
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/xsk"
)

func main() {
	var c app.Config
	c.RegisterFlags(flag.CommandLine)
	port := flag.Uint("port", 9000, "UDP port to answer")
	n := flag.Int("n", 1000, "without -i: datagrams the built-in client sends")
	flag.Parse()
	ctx, cancel := app.Context(c.Duration)
	defer cancel()
	if err := run(ctx, &c, uint16(*port), *n, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c *app.Config, port uint16, n int, out io.Writer) (err error) {
	if err := c.Validate(); err != nil {
		return err
	}
	ifname, ep := c.Interface, (*netenv.Endpoint)(nil)
	var v *netenv.Veth
	if ifname == "" {
		host, err := netenv.NewNetns("")
		if err != nil {
			return err
		}
		defer host.Close()
		if v, err = netenv.NewVeth(&netenv.VethOptions{HostNS: host}); err != nil {
			return err
		}
		defer func() { err = errors.Join(err, v.Close()) }()
		ifname, ep = v.Peer.Name, &v.Peer
		fmt.Fprintf(out, "built veth pair %s (%s) <-> %s (%s) in throwaway namespaces\n",
			v.Host.Name, v.Host.Addr, v.Peer.Name, v.Peer.Addr)
	}
	sock, err := open(ifname, c, port, ep)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sock.Close()) }()
	fmt.Fprintf(out, "echo on %s queue %d port %d: %s mode\n", ifname, c.Queue, port, sock.Mode())

	s := &server{sock: sock, port: port, wait: c.Wait, descs: make([]xsk.Desc, c.Batch)}
	var wg sync.WaitGroup
	var serveErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveErr = s.serve()
	}()
	stop := func() {
		s.stop.Store(true)
		wg.Wait()
	}
	if v == nil {
		<-ctx.Done()
		stop()
	} else {
		cerr := v.Host.Do(func() error {
			return client(ctx, netip.AddrPortFrom(v.Peer.IP(), port), n, out)
		})
		stop()
		if cerr != nil {
			if st, err := sock.Stats(); err == nil {
				app.PrintStats(out, st)
			}
			return cerr
		}
	}
	if serveErr != nil && !errors.Is(serveErr, net.ErrClosed) {
		return serveErr
	}
	st, err := sock.Stats()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "answered %d datagrams, dropped %d frames that were not for us\n", s.answered.Load(), s.dropped.Load())
	app.PrintStats(out, st)
	return nil
}

// open binds an echo socket whose XDP program redirects only UDP/IPv4 to
// port, inside ep's namespace when ep is not nil.
func open(ifname string, c *app.Config, port uint16, ep *netenv.Endpoint) (*xsk.Socket, error) {
	o := c.XSKOptions()
	o.Filter = bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: port}
	var sock *xsk.Socket
	do := func() error {
		var err error
		sock, err = xsk.Open(ifname, c.Queue, o)
		return err
	}
	var err error
	if ep != nil {
		err = ep.Do(do)
	} else {
		err = do()
	}
	return sock, err
}

// server answers datagrams on one socket. serve runs on one goroutine.
type server struct {
	sock     *xsk.Socket
	port     uint16
	wait     app.WaitMode
	descs    []xsk.Desc
	stop     atomic.Bool
	answered atomic.Uint64
	dropped  atomic.Uint64
}

func (s *server) serve() error {
	var drop []xsk.Desc
	for !s.stop.Load() {
		k, err := s.sock.Receive(s.descs)
		if err != nil {
			return err
		}
		if k == 0 {
			if s.wait != app.WaitSpin {
				if _, err := s.sock.Wait(xsk.Readable, 100*time.Millisecond); err != nil {
					return err
				}
			}
			continue
		}
		// Turn the good ones around in place, compacting them to the
		// front; give the rest back.
		out := s.descs[:0]
		drop = drop[:0]
		for _, d := range s.descs[:k] {
			if l := reply(s.sock.Frame(d), s.port); l > 0 {
				d.Len = uint32(l)
				out = append(out, d)
			} else {
				drop = append(drop, d)
			}
		}
		if len(drop) > 0 {
			s.dropped.Add(uint64(len(drop)))
			if err := s.sock.Release(drop); err != nil {
				return err
			}
		}
		for off := 0; off < len(out); {
			m, err := s.sock.Transmit(out[off:])
			if err != nil {
				return err
			}
			off += m
			if m == 0 {
				if s.stop.Load() {
					return s.sock.Release(out[off:])
				}
				if err := s.sock.Kick(); err != nil {
					return err
				}
			}
		}
		s.answered.Add(uint64(len(out)))
	}
	return nil
}

// reply turns the UDP/IPv4 datagram to port in frame into its answer, in
// place, and returns the answer's length, or 0 when frame is not a
// well-formed, unfragmented datagram for port without IP options. It
// allocates nothing.
//
// The incoming UDP checksum is not verified: a kernel that sends over veth
// (or any device with checksum offload) leaves it partial, for hardware
// that veth does not have to fill in. The IPv4 header checksum is always
// complete and is checked; the answer gets both checksums in full.
func reply(frame []byte, port uint16) int {
	const eth, ip = packet.EthLen, packet.EthLen + packet.IPv4Len
	if len(frame) < packet.HeadersLen || be16(frame[12:]) != 0x0800 || frame[eth] != 0x45 || frame[eth+9] != 17 {
		return 0
	}
	if be16(frame[eth+6:])&0x3fff != 0 {
		return 0 // a fragment: the kernel would reassemble it; we do not
	}
	total := int(be16(frame[eth+2:]))
	if total < packet.IPv4Len+packet.UDPLen || eth+total > len(frame) || ipChecksum(frame[eth:ip]) != 0 {
		return 0
	}
	ulen := int(be16(frame[ip+4:]))
	if ulen != total-packet.IPv4Len || be16(frame[ip+2:]) != port {
		return 0
	}
	var srcMAC, dstMAC [6]byte
	copy(srcMAC[:], frame[0:6])
	copy(dstMAC[:], frame[6:12])
	h := packet.UDP{
		SrcMAC: srcMAC[:], DstMAC: dstMAC[:],
		SrcIP: netip.AddrFrom4([4]byte(frame[eth+16 : eth+20])), DstIP: netip.AddrFrom4([4]byte(frame[eth+12 : eth+16])),
		SrcPort: port, DstPort: be16(frame[ip:]),
		ID: be16(frame[eth+4:]),
	}
	// The payload stays where it is: Write rebuilds the headers around it
	// and computes both checksums.
	l, err := h.Write(frame, ulen-packet.UDPLen)
	if err != nil {
		return 0
	}
	return l
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

// ipChecksum is the Internet checksum of hdr: 0 for a header whose checksum
// field is right.
func ipChecksum(hdr []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(hdr); i += 2 {
		s += uint32(be16(hdr[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// client sends n datagrams to addr from a kernel UDP socket, one at a time
// with a few in flight, and checks that each comes back unchanged.
func client(ctx context.Context, addr netip.AddrPort, n int, out io.Writer) error {
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer conn.Close()
	const window = 16
	start := time.Now()
	buf := make([]byte, 2048)
	msg := make([]byte, 0, 64)
	next, got := 0, 0
	want := make(map[string]bool, window)
	for got < n {
		for next < n && next-got < window {
			msg = fmt.Appendf(msg[:0], "echo %d from %s", next, conn.LocalAddr())
			if _, err := conn.Write(msg); err != nil {
				return fmt.Errorf("client: send %d: %w", next, err)
			}
			want[string(msg)] = true
			next++
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("client: %d of %d replies: %w", got, n, err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fmt.Errorf("client: %d of %d replies: %w", got, n, err)
		}
		if from != addr {
			return fmt.Errorf("client: reply from %s, want %s", from, addr)
		}
		if !want[string(buf[:m])] {
			return fmt.Errorf("client: unexpected reply %q", buf[:m])
		}
		delete(want, string(buf[:m]))
		got++
	}
	d := time.Since(start)
	fmt.Fprintf(out, "kernel UDP client: %d of %d datagrams came back intact in %v (%d in flight)\n",
		got, n, d.Round(time.Millisecond), window)
	return nil
}
