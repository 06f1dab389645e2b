package matrix

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/xsk"
)

// Request payloads carry a sequence number and the send time (nanoseconds
// since the run's epoch, from the monotonic clock) in their first 16
// bytes; the echo sends the payload back unchanged.

// rrClient is A's end of a request/response measurement. One goroutine
// calls send while another calls recv.
type rrClient interface {
	// send sends one request carrying payload.
	send(payload []byte) error
	// recv waits up to timeout for replies and calls fn with the payload
	// of each. A timeout of 0 takes every reply the socket already holds,
	// without waiting.
	recv(timeout time.Duration, fn func(payload []byte)) error
	// drops are the socket's own drop counters, by name, since it was
	// opened.
	drops() (map[string]uint64, error)
	close() error
}

// rrEcho is B's end: it sends every request back to where it came from.
type rrEcho interface {
	// serve answers requests until stop is closed, then those its socket
	// already holds, and returns how many it answered.
	serve(stop <-chan struct{}) (uint64, error)
	// drops are the socket's own drop counters, by name, since it was
	// opened; it may be called while serve runs.
	drops() (map[string]uint64, error)
	close() error
}

const pollSlice = 20 * time.Millisecond

func newClient(path string, t *topo, payload int) (rrClient, xdpInfo, error) {
	switch path {
	case "udp":
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.A.IP(), clientPort)))
		if err != nil {
			return nil, xdpInfo{}, fmt.Errorf("open udp client: %w", err)
		}
		return &udpClient{c: c, to: netip.AddrPortFrom(t.B.IP(), serverPort), buf: make([]byte, 2048)}, xdpInfo{}, nil
	case "afpacket":
		r, err := openRaw(t.A.Index)
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return &rawClient{raw: r, key: "A's AF_PACKET socket tp_drops", t: t, out: make([]byte, 2048)}, xdpInfo{}, nil
	case "afxdp":
		s, err := xsk.Open(t.A.Name, 0, &xsk.Options{Filter: bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: clientPort}})
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return &xskClient{s: s, t: t, tx: make([]xsk.Desc, 1), rx: make([]xsk.Desc, 64)}, xdpInfoOf(s), nil
	}
	return nil, xdpInfo{}, fmt.Errorf("unknown path %q", path)
}

func newEcho(path string, B netenv.Endpoint) (rrEcho, xdpInfo, error) {
	switch path {
	case "udp":
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(B.IP(), serverPort)))
		if err != nil {
			return nil, xdpInfo{}, fmt.Errorf("open udp echo: %w", err)
		}
		return &udpEcho{c: c}, xdpInfo{}, nil
	case "afpacket":
		r, err := openRaw(B.Index)
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return &rawEcho{raw: r, key: "B's AF_PACKET socket tp_drops", ip: B.IP(), out: make([]byte, 2048)}, xdpInfo{}, nil
	case "afxdp":
		s, err := xsk.Open(B.Name, 0, &xsk.Options{Filter: bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: serverPort}})
		if err != nil {
			return nil, xdpInfo{}, err
		}
		return &xskEcho{s: s, ip: B.IP(), descs: make([]xsk.Desc, 64)}, xdpInfoOf(s), nil
	}
	return nil, xdpInfo{}, fmt.Errorf("unknown path %q", path)
}

// --- kernel UDP ---

type udpClient struct {
	c   *net.UDPConn
	to  netip.AddrPort
	buf []byte
}

func (u *udpClient) send(p []byte) error {
	_, err := u.c.WriteToUDPAddrPort(p, u.to)
	return err
}

func (u *udpClient) recv(timeout time.Duration, fn func([]byte)) error {
	if timeout <= 0 {
		for {
			n, _, ok, err := udpReadNow(u.c, u.buf)
			if err != nil || !ok {
				return err
			}
			fn(u.buf[:n])
		}
	}
	if err := u.c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	for {
		n, _, err := u.c.ReadFromUDPAddrPort(u.buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		fn(u.buf[:n])
	}
}

func (u *udpClient) drops() (map[string]uint64, error) {
	n, err := udpDrops(u.c)
	return map[string]uint64{"A's UDP socket sk_drops": n}, err
}

func (u *udpClient) close() error { return u.c.Close() }

// udpDrops is c's sk_drops.
func udpDrops(c *net.UDPConn) (uint64, error) {
	n, err := sys.ConnDrops(c)
	if err != nil {
		return 0, fmt.Errorf("udp socket: %w", err)
	}
	return uint64(n), nil
}

// udpReadNow reads into b a datagram that c already holds, without
// waiting; ok is false when it holds none.
func udpReadNow(c *net.UDPConn, b []byte) (n int, from netip.AddrPort, ok bool, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, from, false, err
	}
	// A read deadline that has passed fails a read before it is tried.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return 0, from, false, err
	}
	var sa unix.Sockaddr
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		for {
			n, sa, rerr = unix.Recvfrom(int(fd), b, unix.MSG_DONTWAIT)
			if !errors.Is(rerr, unix.EINTR) {
				return true
			}
		}
	}); err != nil {
		return 0, from, false, err
	}
	if errors.Is(rerr, unix.EAGAIN) {
		return 0, from, false, nil
	}
	if rerr != nil {
		return 0, from, false, os.NewSyscallError("recvfrom", rerr)
	}
	if sa4, ok := sa.(*unix.SockaddrInet4); ok {
		from = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(sa4.Port))
	}
	return n, from, true, nil
}

type udpEcho struct{ c *net.UDPConn }

func (u *udpEcho) serve(stop <-chan struct{}) (uint64, error) {
	buf := make([]byte, 2048)
	var n uint64
	for {
		var k int
		var from netip.AddrPort
		select {
		case <-stop:
			var ok bool
			var err error
			if k, from, ok, err = udpReadNow(u.c, buf); err != nil || !ok {
				return n, err
			}
		default:
			if err := u.c.SetReadDeadline(time.Now().Add(pollSlice)); err != nil {
				return n, err
			}
			var err error
			if k, from, err = u.c.ReadFromUDPAddrPort(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				return n, err
			}
		}
		if _, err := u.c.WriteToUDPAddrPort(buf[:k], from); err != nil {
			return n, err
		}
		n++
	}
}

func (u *udpEcho) drops() (map[string]uint64, error) {
	n, err := udpDrops(u.c)
	return map[string]uint64{keyUDPDrops: n}, err
}

func (u *udpEcho) close() error { return u.c.Close() }

// --- AF_PACKET, one frame per system call ---

// rawSock is a SOCK_RAW packet socket for IPv4 frames on one interface,
// blind to what the host itself sends. The rr paths use plain
// recvfrom/sendto rather than baseline's rings: a TPACKET_V3 ring hands
// frames over per block, after up to its retire timeout, which would add
// up to a millisecond to every round trip.
type rawSock struct {
	fd     int
	closed atomic.Bool
	// dropped sums tp_drops, which each read of PACKET_STATISTICS
	// resets; only drops touches it.
	dropped uint64
}

func openRaw(ifindex int) (*rawSock, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return nil, fmt.Errorf("open packet socket: %w", os.NewSyscallError("socket", err))
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open packet socket: %w", os.NewSyscallError("setsockopt PACKET_IGNORE_OUTGOING", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open packet socket on ifindex %d: %w", ifindex, os.NewSyscallError("bind", err))
	}
	return &rawSock{fd: fd}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// wait polls for a readable frame for up to timeout.
func (r *rawSock) wait(timeout time.Duration) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, int(timeout/time.Millisecond)+1)
	if err != nil && !errors.Is(err, unix.EINTR) {
		return false, os.NewSyscallError("poll", err)
	}
	return n > 0, nil
}

// read reads one waiting frame into b; 0 means none.
func (r *rawSock) read(b []byte) (int, error) {
	n, _, err := unix.Recvfrom(r.fd, b, unix.MSG_DONTWAIT)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return 0, nil
	}
	if err != nil {
		return 0, os.NewSyscallError("recvfrom", err)
	}
	return n, nil
}

func (r *rawSock) write(b []byte) error {
	for {
		_, err := unix.Write(r.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("send", err)
		}
		return nil
	}
}

// drops is tp_drops since the socket was opened: the frames the kernel
// had no room for in its receive buffer.
func (r *rawSock) drops() (uint64, error) {
	st, err := unix.GetsockoptTpacketStats(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return r.dropped, fmt.Errorf("read packet socket drops: %w", os.NewSyscallError("getsockopt PACKET_STATISTICS", err))
	}
	r.dropped += uint64(st.Drops)
	return r.dropped, nil
}

func (r *rawSock) close() error {
	if r.closed.Swap(true) {
		return nil
	}
	return unix.Close(r.fd)
}

type rawClient struct {
	raw *rawSock
	key string
	t   *topo
	out []byte
	in  [2048]byte
}

func (c *rawClient) send(p []byte) error {
	copy(c.out[packet.HeadersLen:], p)
	n, err := c.t.requestFrame(c.out, len(p))
	if err != nil {
		return err
	}
	return c.raw.write(c.out[:n])
}

func (c *rawClient) recv(timeout time.Duration, fn func([]byte)) error {
	if timeout > 0 {
		ok, err := c.raw.wait(timeout)
		if err != nil || !ok {
			return err
		}
	}
	for {
		n, err := c.raw.read(c.in[:])
		if err != nil || n == 0 {
			return err
		}
		if p, err := packet.Parse(c.in[:n]); err == nil && p.DstPort == clientPort && p.SrcPort == serverPort {
			fn(p.Payload)
		}
	}
}

func (c *rawClient) drops() (map[string]uint64, error) {
	n, err := c.raw.drops()
	return map[string]uint64{c.key: n}, err
}

func (c *rawClient) close() error { return c.raw.close() }

type rawEcho struct {
	raw *rawSock
	key string
	ip  netip.Addr
	out []byte
}

func (e *rawEcho) serve(stop <-chan struct{}) (uint64, error) {
	var in [2048]byte
	var n uint64
	for {
		stopping := isClosed(stop)
		if !stopping {
			ok, err := e.raw.wait(pollSlice)
			if err != nil {
				return n, err
			}
			if !ok {
				continue
			}
		}
		for {
			k, err := e.raw.read(in[:])
			if err != nil {
				return n, err
			}
			if k == 0 {
				break
			}
			l, ok, err := reply(in[:k], e.out, e.ip)
			if err != nil {
				return n, err
			}
			if !ok {
				continue
			}
			if err := e.raw.write(e.out[:l]); err != nil {
				return n, err
			}
			n++
		}
		if stopping {
			return n, nil
		}
	}
}

func (e *rawEcho) drops() (map[string]uint64, error) {
	n, err := e.raw.drops()
	return map[string]uint64{e.key: n}, err
}

func (e *rawEcho) close() error { return e.raw.close() }

// isClosed reports whether stop is closed, without waiting.
func isClosed(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// reply builds into out the answer to the request frame in (which may be
// out itself): addresses and ports swapped, the payload unchanged, both
// checksums computed afresh. ok is false for frames that are not requests
// to ip's server port.
func reply(in, out []byte, ip netip.Addr) (n int, ok bool, err error) {
	p, err := packet.Parse(in)
	if err != nil || p.DstPort != serverPort || p.DstIP != ip {
		return 0, false, nil
	}
	u := packet.UDP{
		SrcMAC: append(make([]byte, 0, 6), p.DstMAC...), DstMAC: append(make([]byte, 0, 6), p.SrcMAC...),
		SrcIP: p.DstIP, DstIP: p.SrcIP, SrcPort: p.DstPort, DstPort: p.SrcPort,
	}
	pl := len(p.Payload)
	if len(out) < packet.HeadersLen+pl {
		return 0, false, fmt.Errorf("echo: a %d-byte payload does not fit the reply buffer", pl)
	}
	// The payload starts at HeadersLen in both (Parse found no IP
	// options, or it moves here).
	copy(out[packet.HeadersLen:], p.Payload)
	n, err = u.Write(out, pl)
	return n, err == nil, err
}

// --- AF_XDP ---

type xskClient struct {
	s      *xsk.Socket
	t      *topo
	tx, rx []xsk.Desc
}

func (c *xskClient) send(p []byte) error {
	for tries := 0; ; tries++ {
		k, err := c.s.Alloc(c.tx)
		if err != nil {
			return err
		}
		if k == 1 {
			break
		}
		if tries > 1000 {
			return errors.New("send request: no free transmit frame")
		}
		if _, err := c.s.Wait(xsk.Writable, time.Millisecond); err != nil {
			return err
		}
	}
	f := c.s.Frame(c.tx[0])
	f = f[:cap(f)]
	copy(f[packet.HeadersLen:], p)
	n, err := c.t.requestFrame(f, len(p))
	if err != nil {
		c.s.Release(c.tx)
		return err
	}
	c.tx[0].Len = uint32(n)
	// A request the TX ring has no room for is not sent: wait for room
	// rather than count it as sent.
	for tries := 0; ; tries++ {
		k, err := c.s.Transmit(c.tx)
		if k == 1 || err != nil {
			if k == 0 {
				err = errors.Join(err, c.s.Release(c.tx))
			}
			return err
		}
		if tries > 1000 {
			return errors.Join(errors.New("send request: no room in the TX ring"), c.s.Release(c.tx))
		}
		if _, err := c.s.Wait(xsk.Writable, time.Millisecond); err != nil {
			return errors.Join(err, c.s.Release(c.tx))
		}
	}
}

func (c *xskClient) recv(timeout time.Duration, fn func([]byte)) error {
	if timeout <= 0 {
		for {
			k, err := c.take(0, fn)
			if err != nil || k == 0 {
				return err
			}
		}
	}
	_, err := c.take(timeout, fn)
	return err
}

// take takes one batch of replies, waiting up to timeout for the first,
// and returns how many frames it took.
func (c *xskClient) take(timeout time.Duration, fn func([]byte)) (int, error) {
	k, err := c.s.Receive(c.rx)
	if err != nil {
		return 0, err
	}
	if k == 0 && timeout > 0 {
		if _, err := c.s.Wait(xsk.Readable, timeout); err != nil {
			return 0, err
		}
		if k, err = c.s.Receive(c.rx); err != nil {
			return 0, err
		}
	}
	for _, d := range c.rx[:k] {
		if p, err := packet.Parse(c.s.Frame(d)); err == nil && p.SrcPort == serverPort {
			fn(p.Payload)
		}
	}
	return k, c.s.Release(c.rx[:k])
}

func (c *xskClient) drops() (map[string]uint64, error) { return xskDrops(c.s, "A") }

func (c *xskClient) close() error { return c.s.Close() }

// xskDrops are s's receive drop counters, named for side ("A" or "B").
func xskDrops(s interface{ Stats() (xsk.Stats, error) }, side string) (map[string]uint64, error) {
	st, err := s.Stats()
	k := xskKeysOf(side)
	return map[string]uint64{k.dropped: st.RxDropped, k.ringFull: st.RxRingFull, k.fillEmpty: st.FillRingEmpty}, err
}

type xskEcho struct {
	s     *xsk.Socket
	ip    netip.Addr
	descs []xsk.Desc
	// refused counts the replies the TX ring had no room for.
	refused atomic.Uint64
}

// keyXSKEchoRefused names the replies the echo's TX ring had no room
// for: dropped by the echo itself.
const keyXSKEchoRefused = "B's AF_XDP echo replies refused by a full TX ring"

func (e *xskEcho) serve(stop <-chan struct{}) (uint64, error) {
	var n uint64
	for {
		stopping := isClosed(stop)
		k, err := e.s.Receive(e.descs)
		if err != nil {
			return n, err
		}
		if k == 0 {
			if stopping {
				return n, nil
			}
			if _, err := e.s.Wait(xsk.Readable, pollSlice); err != nil {
				return n, err
			}
			continue
		}
		// Answer in place, forwarding the frames: requests to the TX
		// ring, anything else back to the fill ring.
		out := e.descs[:0]
		var drop []xsk.Desc
		for _, d := range e.descs[:k] {
			f := e.s.Frame(d)
			l, ok, err := reply(f, f[:cap(f)], e.ip)
			if err != nil || !ok {
				drop = append(drop, d)
				continue
			}
			d.Len = uint32(l)
			out = append(out, d)
		}
		if len(drop) > 0 {
			if err := e.s.Release(drop); err != nil {
				return n, err
			}
		}
		sent, err := e.s.Transmit(out)
		n += uint64(sent)
		if sent < len(out) {
			e.refused.Add(uint64(len(out) - sent))
			if rerr := e.s.Release(out[sent:]); rerr != nil {
				return n, errors.Join(err, rerr)
			}
		}
		if err != nil {
			return n, err
		}
	}
}

func (e *xskEcho) drops() (map[string]uint64, error) {
	d, err := xskDrops(e.s, "B")
	if d != nil {
		d[keyXSKEchoRefused] = e.refused.Load()
	}
	return d, err
}

func (e *xskEcho) close() error { return e.s.Close() }

// stamp writes seq and the time since epoch into a request payload.
func stamp(p []byte, seq uint64, epoch time.Time) {
	binary.BigEndian.PutUint64(p[0:8], seq)
	binary.BigEndian.PutUint64(p[8:16], uint64(time.Since(epoch)))
}

// unstamp reads them back.
func unstamp(p []byte) (seq uint64, sent time.Duration, ok bool) {
	if len(p) < 16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(p[0:8]), time.Duration(binary.BigEndian.Uint64(p[8:16])), true
}
