package baseline

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/sys"
)

// Counts are the packets and bytes that one call moved.
type Counts struct {
	Packets uint64
	// Bytes are payload bytes for UDP, frame bytes (without FCS) for
	// AF_PACKET.
	Bytes uint64
}

// Stats are a socket's counters since it was made.
type Stats struct {
	Packets, Bytes uint64
	// Drops is what the kernel dropped for lack of room in the socket:
	// sk_drops (getsockopt SO_MEMINFO) for UDP, tp_drops (PACKET_STATISTICS)
	// for AF_PACKET receivers.
	Drops uint64
}

// counters are the Stats of a sender or receiver and whether it is
// closed, under one lock: the goroutine that moves packets adds a call's
// Counts once, when the call ends; Stats and Close may run in others.
type counters struct {
	mu     sync.Mutex
	stats  Stats
	closed bool
}

// add adds one call's packets and bytes.
func (k *counters) add(c *Counts) {
	k.mu.Lock()
	k.stats.Packets += c.Packets
	k.stats.Bytes += c.Bytes
	k.mu.Unlock()
}

// snapshot returns the counters.
func (k *counters) snapshot() Stats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stats
}

// closeOnce runs fn, with the lock held, on the first call only, and
// returns its error; later calls return nil.
func (k *counters) closeOnce(fn func() error) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	return fn()
}

// DefaultBatch is the number of messages per recvmmsg/sendmmsg call, or of
// ring frames per send(2).
const DefaultBatch = 64

// UDPOptions configures [NewUDPReceiver] and [NewUDPSender]. The zero value
// means the defaults.
type UDPOptions struct {
	// Batch is the number of datagrams per system call. Default 64.
	Batch int
	// BufSize is the receive buffer per datagram, in bytes. Default 2048.
	BufSize int
	// PayloadLen is the sender's payload size in bytes, at least
	// packet.SeqLen. Default 18 (a 60-byte Ethernet frame).
	PayloadLen int
	// SockBuf sets SO_RCVBUF (receiver) or SO_SNDBUF (sender), in bytes.
	// Default 4 MiB for the receiver (a datagram from a live XDP frame
	// costs a whole page of it), the kernel's default for the sender.
	SockBuf int
	// OnPacket, when set, is called by Receive for every datagram's
	// payload, which is valid only during the call.
	OnPacket func(payload []byte)
}

func (o *UDPOptions) defaults() error {
	switch {
	case o.Batch < 0 || o.Batch > 1024:
		return fmt.Errorf("Batch %d: must be between 1 and 1024", o.Batch)
	case o.BufSize < 0:
		return fmt.Errorf("BufSize %d: must be positive", o.BufSize)
	case o.PayloadLen != 0 && (o.PayloadLen < packet.SeqLen || o.PayloadLen > 65507):
		return fmt.Errorf("PayloadLen %d: must be between %d and 65507", o.PayloadLen, packet.SeqLen)
	case o.SockBuf < 0:
		return fmt.Errorf("SockBuf %d: must be positive", o.SockBuf)
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.BufSize == 0 {
		o.BufSize = 2048
	}
	if o.PayloadLen == 0 {
		o.PayloadLen = 18
	}
	return nil
}

func makeBufs(n, size int) [][]byte {
	all := make([]byte, n*size)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = all[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}

// UDPReceiver receives datagrams on a kernel UDP socket with recvmmsg.
// One goroutine at a time may call Receive; Stats and Close may be called
// from others.
type UDPReceiver struct {
	conn *net.UDPConn
	opts UDPOptions
	mm   *mmsgs

	counters
}

// NewUDPReceiver binds a UDP socket to addr in the calling thread's network
// namespace.
func NewUDPReceiver(addr netip.AddrPort, opts *UDPOptions) (*UDPReceiver, error) {
	var o UDPOptions
	if opts != nil {
		o = *opts
	}
	if err := o.defaults(); err != nil {
		return nil, fmt.Errorf("create udp receiver: %w", err)
	}
	if o.SockBuf == 0 {
		o.SockBuf = 4 << 20
	}
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("create udp receiver: %w", err)
	}
	if err := setBuf(conn, true, o.SockBuf); err != nil {
		conn.Close()
		return nil, fmt.Errorf("create udp receiver on %s: %w", addr, err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("create udp receiver on %s: %w", addr, err)
	}
	return &UDPReceiver{conn: conn, opts: o, mm: newMmsgs(raw, makeBufs(o.Batch, o.BufSize))}, nil
}

// setBuf sets SO_RCVBUF or SO_SNDBUF, with the FORCE variant so that the
// size may pass net.core.rmem_max (it needs CAP_NET_ADMIN; without it the
// plain option, capped by the sysctl, is used).
func setBuf(conn *net.UDPConn, rcv bool, size int) error {
	opt, force, name := unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, "setsockopt SO_SNDBUF"
	if rcv {
		opt, force, name = unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, "setsockopt SO_RCVBUF"
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, size); serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, size)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError(name, serr)
	}
	return nil
}

// Addr is the address the socket is bound to.
func (r *UDPReceiver) Addr() netip.AddrPort { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Receive reads datagrams until it has n of them (n == 0: no limit) or
// deadline passes, and returns what it read. Reaching the deadline is not an
// error. It reads no more than n, leaving later datagrams in the socket.
// A datagram longer than BufSize is counted with its length but not passed
// to OnPacket, and Receive returns an error after the batch holding it.
func (r *UDPReceiver) Receive(n uint64, deadline time.Time) (Counts, error) {
	var c Counts
	if err := r.conn.SetReadDeadline(deadline); err != nil {
		return c, fmt.Errorf("receive udp: %w", err)
	}
	defer r.add(&c)
	for n == 0 || c.Packets < n {
		vlen := r.opts.Batch
		if n != 0 && n-c.Packets < uint64(vlen) {
			vlen = int(n - c.Packets)
		}
		k, err := r.mm.recv(vlen)
		var long int // length of a datagram longer than its buffer
		for i := range k {
			l := r.mm.msgLen(i)
			c.Packets++
			c.Bytes += uint64(l)
			if r.mm.truncated(i) {
				long = l // counted, but its payload is cut
				continue
			}
			if r.opts.OnPacket != nil {
				r.opts.OnPacket(r.mm.bufs[i][:l])
			}
		}
		if long != 0 {
			return c, fmt.Errorf("receive udp on %s: a datagram of %d bytes is longer than BufSize (%d bytes)", r.Addr(), long, r.opts.BufSize)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return c, nil
			}
			return c, fmt.Errorf("receive udp: %w", err)
		}
	}
	return c, nil
}

// Stats returns the counters since NewUDPReceiver, with the socket's drops.
// After Close, they are the counters at Close.
func (r *UDPReceiver) Stats() (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	if r.closed {
		return s, nil
	}
	drops, err := sys.ConnDrops(r.conn)
	if err != nil {
		return s, fmt.Errorf("udp socket: %w", err)
	}
	s.Drops = uint64(drops)
	return s, nil
}

// Close closes the socket, keeping its drop count for Stats. A second
// Close returns nil.
func (r *UDPReceiver) Close() error {
	return r.closeOnce(func() error {
		var errs []error
		if drops, err := sys.ConnDrops(r.conn); err != nil {
			errs = append(errs, fmt.Errorf("close udp receiver: udp socket: %w", err))
		} else {
			r.stats.Drops = uint64(drops)
		}
		if err := r.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close udp receiver: %w", err))
		}
		return errors.Join(errs...)
	})
}

// UDPSender sends datagrams from an unconnected kernel UDP socket with
// sendmmsg. Unconnected, so that ICMP errors from a receiver without a
// listening socket do not fail later sends with ECONNREFUSED. Each payload carries a sequence number (packet.FillPayload),
// counting up from 0 across calls. One goroutine at a time may call Send.
type UDPSender struct {
	conn *net.UDPConn
	opts UDPOptions
	mm   *mmsgs
	seq  uint64

	counters
}

// NewUDPSender makes a UDP socket bound to src (the zero value: any address,
// any port) that sends to dst, in the calling thread's network namespace.
func NewUDPSender(src, dst netip.AddrPort, opts *UDPOptions) (*UDPSender, error) {
	var o UDPOptions
	if opts != nil {
		o = *opts
	}
	if err := o.defaults(); err != nil {
		return nil, fmt.Errorf("create udp sender: %w", err)
	}
	var laddr *net.UDPAddr
	if src.IsValid() {
		laddr = net.UDPAddrFromAddrPort(src)
	}
	if !dst.Addr().Is4() {
		return nil, fmt.Errorf("create udp sender: destination %s: must be IPv4", dst)
	}
	conn, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		return nil, fmt.Errorf("create udp sender: %w", err)
	}
	if o.SockBuf > 0 {
		if err := setBuf(conn, false, o.SockBuf); err != nil {
			conn.Close()
			return nil, fmt.Errorf("create udp sender to %s: %w", dst, err)
		}
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("create udp sender to %s: %w", dst, err)
	}
	s := &UDPSender{conn: conn, opts: o, mm: newMmsgs(raw, makeBufs(o.Batch, o.PayloadLen))}
	s.mm.setDest(dst)
	return s, nil
}

// Send sends n datagrams and returns what the kernel accepted.
func (s *UDPSender) Send(n uint64) (Counts, error) {
	var c Counts
	defer s.add(&c)
	for c.Packets < n {
		vlen := int(min(uint64(s.opts.Batch), n-c.Packets))
		for i := range vlen {
			packet.FillPayload(s.mm.bufs[i], s.seq+uint64(i))
		}
		k, err := s.mm.send(vlen, s.opts.PayloadLen)
		c.Packets += uint64(k)
		c.Bytes += uint64(k * s.opts.PayloadLen)
		s.seq += uint64(k)
		if err != nil {
			return c, fmt.Errorf("send udp: %w", err)
		}
	}
	return c, nil
}

// Stats returns the counters since NewUDPSender (Drops is always 0).
func (s *UDPSender) Stats() Stats { return s.snapshot() }

// Close closes the socket. A second Close returns nil.
func (s *UDPSender) Close() error {
	return s.closeOnce(func() error {
		if err := s.conn.Close(); err != nil {
			return fmt.Errorf("close udp sender: %w", err)
		}
		return nil
	})
}
