package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
)

// rawSender sends hand-built frames out of the host end of v through an
// AF_PACKET socket in the host's namespace.
type rawSender struct {
	fd int
	to unix.SockaddrLinklayer
}

func newRawSender(t *testing.T, v *netenv.Veth) *rawSender {
	t.Helper()
	var fd int
	if err := v.Host.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // send only
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &rawSender{fd: fd, to: unix.SockaddrLinklayer{Ifindex: v.Host.Index, Halen: 6}}
}

func (r *rawSender) send(t *testing.T, frame []byte) {
	t.Helper()
	copy(r.to.Addr[:], frame[:6])
	if err := unix.Sendto(r.fd, frame, 0, &r.to); err != nil {
		t.Fatal(err)
	}
}

// hostUDP binds a kernel UDP socket on the host end of v.
func hostUDP(t *testing.T, v *netenv.Veth) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := v.Host.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.Host.IP(), 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond for up to 5 seconds: the server counts an answer
// after the kernel may already have delivered it.
func waitFor(cond func() bool) {
	for deadline := time.Now().Add(5 * time.Second); !cond() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNotForUsNotAnswered sends UDP datagrams for echo's port that are not
// addressed to the interface: to another MAC, to another IP, to the
// broadcast address and to a multicast group, from a host whose kernel
// socket would take any answer. echo must answer none of them: an answer
// would claim another host's address, or a broadcast or multicast one as
// its source, which the kernel drops as a martian. Its filter names the
// interface's one address, so only the datagrams to that address reach
// echo (which drops those with another MAC), and the rest stay with the
// kernel: a kernel socket on the port gets the broadcasts. A datagram to
// the interface's own addresses is then answered, and the counts add up.
func TestNotForUsNotAnswered(t *testing.T) {
	v, s := echoOn(t, nil)
	c := hostUDP(t, v)
	from := netip.MustParseAddrPort(c.LocalAddr().String())
	var kernel *net.UDPConn
	if err := v.Peer.Do(func() (err error) {
		kernel, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 9000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kernel.Close()
	raw := newRawSender(t, v)
	bcastMAC := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	mcastMAC := []byte{0x01, 0x00, 0x5e, 0x01, 0x02, 0x03}
	otherMAC := []byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	otherIP := v.Peer.IP().Next()
	if otherIP == v.Host.IP() {
		otherIP = otherIP.Next()
	}
	frame := func(dstMAC []byte, dst netip.Addr, payload string) []byte {
		b := make([]byte, 128)
		copy(b[packet.HeadersLen:], payload)
		h := packet.UDP{SrcMAC: v.Host.MAC, DstMAC: dstMAC, SrcIP: v.Host.IP(), DstIP: dst,
			SrcPort: from.Port(), DstPort: 9000}
		n, err := h.Write(b, len(payload))
		if err != nil {
			t.Fatal(err)
		}
		return b[:n]
	}
	// To the interface's address: echo takes them, and must not answer.
	toEcho := map[string][]byte{
		"another MAC":    frame(otherMAC, v.Peer.IP(), "not for echo"),
		"bcast MAC only": frame(bcastMAC, v.Peer.IP(), "not for echo"),
	}
	// To other addresses: the kernel keeps them.
	toKernel := map[string][]byte{
		"another IP":   frame(v.Peer.MAC, otherIP, "another IP"),
		"broadcast":    frame(bcastMAC, netip.MustParseAddr("255.255.255.255"), "broadcast"),
		"subnet bcast": frame(bcastMAC, netipLastAddr(v.Peer.Addr), "subnet bcast"),
		"multicast":    frame(mcastMAC, netip.MustParseAddr("239.1.2.3"), "multicast"),
	}
	for _, f := range toEcho {
		raw.send(t, f)
	}
	for _, f := range toKernel {
		raw.send(t, f)
	}
	good := frame(v.Peer.MAC, v.Peer.IP(), "not for echo")
	raw.send(t, good)
	buf := make([]byte, 200)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, src, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "not for echo" || src != netip.AddrPortFrom(v.Peer.IP(), 9000) {
		t.Fatalf("reply to the datagram for the interface: %q from %v, %v", buf[:n], src, err)
	}
	waitFor(func() bool { return s.answered.Load()+s.dropped.Load() >= uint64(len(toEcho))+1 })
	if a, d := s.answered.Load(), s.dropped.Load(); a != 1 || d != uint64(len(toEcho)) {
		t.Errorf("answered %d, dropped %d; want 1 (only the datagram for the interface), %d", a, d, len(toEcho))
	}
	// The kernel socket gets the two broadcasts (the datagram for
	// another host is not the kernel's to deliver, and the socket is in
	// no multicast group), and nothing that echo took.
	got := map[string]bool{}
	kernel.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < 2 {
		n, err := kernel.Read(buf)
		if err != nil {
			t.Fatalf("kernel socket on the port: %v after %v; want the two broadcasts", err, got)
		}
		got[string(buf[:n])] = true
	}
	if !got["broadcast"] || !got["subnet bcast"] {
		t.Errorf("kernel socket on the port got %v; want the broadcast and the subnet broadcast", got)
	}
	// Nothing else may come back to the kernel sockets.
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, src, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Errorf("a second reply %q from %v", buf[:n], src)
	}
	kernel.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := kernel.Read(buf); err == nil {
		t.Errorf("kernel socket on the port: a further datagram %q", buf[:n])
	}
}

func netipLastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	bits := 32 - p.Bits()
	for i := 3; i >= 0 && bits > 0; i-- {
		k := min(bits, 8)
		a[i] |= byte(1<<k - 1)
		bits -= k
	}
	return netip.AddrFrom4(a)
}

// zeroSumPayload returns a payload of n bytes (n even, at least 2) whose
// UDP datagram from src to dst has a computed checksum of 0, which must
// be sent as 0xffff: 0 means "no checksum". The answer's checksum is the
// same, as swapping addresses and ports leaves the sum alone.
func zeroSumPayload(src, dst netip.AddrPort, n int) []byte {
	p := make([]byte, n)
	for i := range p[:n-2] {
		p[i] = byte(i*7 + 1)
	}
	s, d := src.Addr().As4(), dst.Addr().As4()
	ulen := uint32(packet.UDPLen + n)
	sum := uint32(17) + 2*ulen + uint32(src.Port()) + uint32(dst.Port())
	for _, b := range [][]byte{s[:], d[:], p} {
		for i := 0; i < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	x := 0xffff - uint16(sum) // the sum becomes 0xffff: checksum 0
	p[n-2], p[n-1] = byte(x>>8), byte(x)
	return p
}

// TestKernelPeer runs echo against the kernel of the other namespace: a
// plain UDP socket there must get back every payload length from 0 to
// 1472 (the largest unfragmented on MTU 1500; the kernel sends them with
// partial checksums over veth), a datagram whose UDP checksum computes to
// 0, and datagrams with IP options sent through AF_PACKET. A datagram to
// another port goes to the kernel, which answers it with ICMP port
// unreachable, as it answers the client's ARP. At the end the server's
// counts add up to what it received.
func TestKernelPeer(t *testing.T) {
	v, s := echoOn(t, nil)
	to := netip.AddrPortFrom(v.Peer.IP(), 9000)
	var conn *net.UDPConn
	if err := v.Host.Do(func() (err error) {
		conn, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	from := netip.MustParseAddrPort(conn.LocalAddr().String())
	buf := make([]byte, 2048)
	roundTrip := func(what string, msg []byte) {
		t.Helper()
		if _, err := conn.Write(msg); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("%s: reply of %d bytes (%v), want the %d sent back", what, n, err, len(msg))
		}
	}
	var sent uint64
	for n := 0; n <= 1472; n++ {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(n + i)
		}
		roundTrip(fmt.Sprintf("payload of %d bytes", n), msg)
		sent++
	}
	for _, n := range []int{2, 100, 1472} {
		msg := zeroSumPayload(from, to, n)
		// The answer's frame, as echo builds it, must carry 0xffff.
		b := make([]byte, packet.HeadersLen+n)
		copy(b[packet.HeadersLen:], msg)
		h := packet.UDP{SrcMAC: v.Peer.MAC, DstMAC: v.Host.MAC, SrcIP: to.Addr(), DstIP: from.Addr(), SrcPort: to.Port(), DstPort: from.Port()}
		if _, err := h.Write(b, n); err != nil || b[packet.EthLen+packet.IPv4Len+6] != 0xff || b[packet.EthLen+packet.IPv4Len+7] != 0xff {
			t.Fatalf("zero-checksum payload of %d bytes: answer's checksum %x, %v; want ffff", n, b[packet.EthLen+packet.IPv4Len+6:][:2], err)
		}
		roundTrip(fmt.Sprintf("zero-checksum payload of %d bytes", n), msg)
		sent++
	}

	// IP options, from AF_PACKET to the same kernel socket.
	raw := newRawSender(t, v)
	for _, opts := range []int{4, 40} {
		b := make([]byte, 2048)
		msg := fmt.Sprintf("with %d bytes of IP options", opts)
		copy(b[packet.HeadersLen:], msg)
		h := packet.UDP{SrcMAC: v.Host.MAC, DstMAC: v.Peer.MAC, SrcIP: v.Host.IP(), DstIP: v.Peer.IP(),
			SrcPort: from.Port(), DstPort: 9000, ID: 9}
		l, err := h.Write(b, len(msg))
		if err != nil {
			t.Fatal(err)
		}
		raw.send(t, withOptions(t, b[:l], opts))
		sent++
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("%s: reply %q, %v", msg, buf[:n], err)
		}
	}

	// Another port: the kernel answers with ICMP port unreachable, which
	// the connected socket reports.
	if err := v.Host.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.Peer.IP(), 9001)))
		if err != nil {
			return err
		}
		defer c.Close()
		c.Write([]byte("port 9001"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(buf)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("datagram to port 9001: read %v; want the kernel's port unreachable (ECONNREFUSED)", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	waitFor(func() bool { return s.answered.Load() >= sent })
	st, err := s.sock.Stats()
	if err != nil {
		t.Fatal(err)
	}
	a, f, tg, d, u := s.answered.Load(), s.fragments.Load(), s.tagged.Load(), s.dropped.Load(), s.unsent.Load()
	if a != sent || f+tg+d+u != 0 || st.RxPackets != a+f+tg+d+u {
		t.Errorf("answered %d, fragments %d, tagged %d, dropped %d, unsent %d of %d received; want %d answered, nothing else",
			a, f, tg, d, u, st.RxPackets, sent)
	}
}
