// Command echo is a UDP echo server that lives entirely in user space: it
// receives UDP/IPv4 datagrams for one port on one queue of an interface
// through an AF_XDP socket, turns each frame around in place (Ethernet and
// IP addresses and UDP ports swapped, TTL reset, IPv4 header and UDP
// checksums recomputed) and transmits it from the same UMEM frame. Plain
// kernel UDP clients (net.Dial, nc -u) get their datagrams back: the frames
// built here are real packets to the kernel, which would drop them on a
// bad checksum. A request with IP options gets a plain answer, without
// them, as a kernel UDP socket would send. It answers only unicast
// datagrams from a unicast source sent to the interface's own MAC address
// and to -addr, or without it to one of the interface's IPv4 addresses (as
// they were when echo started): answering one sent to a broadcast or
// multicast address, or to another host, would claim that address as the
// answer's source.
//
// Its XDP program redirects only UDP/IPv4 to -port (bpf.Filter) and to one
// address: -addr, which must be one of the interface's IPv4 addresses, or
// without it the interface's address when it has a single one. ARP and
// everything else go on to the kernel, which therefore still answers the
// clients' ARP requests for the interface's address, and still gets the
// broadcasts, multicasts and datagrams for other hosts (to forward) sent
// to -port, and, with -addr, the datagrams for -port to the interface's
// other addresses (for a kernel socket there). echo then answers only
// datagrams to -addr. Without -addr on an interface with several IPv4
// addresses the filter, which can name one address only, names none: it
// takes the datagrams for -port to any address from the kernel all the
// same (echo says so when it starts), answers those to any of the
// interface's addresses and counts the rest as dropped. -port must be 1 to
// 65535: port 0 would make the filter match every UDP port.
//
// Limits: a datagram larger than the MTU arrives in fragments, and the
// filter leaves IPv4 fragments to the kernel, the first one too (see
// bpf.Filter.DstPort): echo does not reassemble, so it does not answer
// such a datagram, and the kernel, which does reassemble, delivers it to a
// kernel socket on -port or answers ICMP port unreachable. The filter
// looks through a VLAN tag, though, and redirects a tagged datagram for
// -port, which echo does not answer (it answers untagged frames only) and
// the kernel then never sees. echo counts those, and any first fragment
// that reaches it all the same (from an XDP program of someone else's
// that redirects more), and reports them at the end as not answered.
//
// With no interface (-i) it builds its own veth pair in throwaway network
// namespaces, serves on the peer end, and runs a kernel UDP client on the
// host end that sends -n datagrams and checks every reply; -addr, which
// could not name an address in the pair's random subnet, needs -i.
//
// Needs Linux 5.18+ (6.17+ for -tx-budget) and root (CAP_NET_ADMIN,
// CAP_BPF, CAP_NET_RAW, CAP_IPC_LOCK; CAP_SYS_ADMIN for the namespaces).
//
//	go run ./examples/echo -n 1000
//	go run ./examples/echo -i eth0 -port 7    # then: echo hi | nc -u -w1 <eth0's address> 7
//	go run ./examples/echo -i eth0 -port 7 -addr 192.0.2.10    # eth0 has several addresses
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
	"slices"
	"strings"
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
	c.RegisterCommonFlags(flag.CommandLine)
	c.RegisterTxBudgetFlag(flag.CommandLine) // echo transmits its answers
	port := flag.Uint("port", 9000, "UDP port to answer, 1..65535")
	addr := flag.String("addr", "", "IPv4 address to answer, one of the interface's; the others keep their -port datagrams (empty: the interface's only one, or if it has several all of them, taking -port's datagrams to any address from the kernel)")
	n := flag.Int("n", 1000, "without -i: datagrams the built-in client sends (at least 1)")
	flag.Parse()
	p, err := checkFlags(*port, *n)
	if err == nil {
		err = app.CheckGiven(flag.CommandLine, func(f string) string { return idleFlag(&c, f) })
	}
	var a netip.Addr
	if err == nil {
		a, err = parseAddr(*addr)
	}
	if err == nil {
		// run times -d itself, from the start of serving.
		ctx, cancel := app.Context(0)
		err = run(ctx, &c, p, a, *n, os.Stdout)
		cancel()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

// checkFlags checks -port and -n and returns the port.
func checkFlags(port uint, n int) (uint16, error) {
	switch {
	case port == 0:
		return 0, errors.New("-port 0: must be between 1 and 65535 (0 would match every UDP port and take all UDP/IPv4 on the queue from the kernel)")
	case port > 0xffff:
		return 0, fmt.Errorf("-port %d: must be between 1 and 65535", port)
	case n < 1:
		return 0, fmt.Errorf("-n %d: must be at least 1", n)
	}
	return uint16(port), nil
}

// idleFlag says why the flag name does nothing with c, or "" when it does
// something (see app.CheckGiven): -n counts the built-in client's
// datagrams, and with -i there is no client.
func idleFlag(c *app.Config, name string) string {
	if name == "n" && c.Interface != "" {
		return "applies only to the built-in topology's client (without -i)"
	}
	return c.IdleCommonFlag(name)
}

// parseAddr parses -addr: "" gives the zero Addr (no address chosen),
// anything else must be a specified IPv4 address.
func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("-addr %q: not an IPv4 address", s)
	}
	return a, checkAddr(a)
}

// checkAddr checks a chosen address (the zero Addr: none): echo serves
// IPv4 only, and the filter cannot name 0.0.0.0 (which means "any").
func checkAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return nil
	case !a.Is4():
		return fmt.Errorf("-addr %s: must be an IPv4 address (echo serves UDP/IPv4 only)", a)
	case a.IsUnspecified():
		return fmt.Errorf("-addr %s: must be one of the interface's IPv4 addresses, not the unspecified address", a)
	}
	return nil
}

// run serves port, on addr when it is valid, until ctx ends (with -i) or
// the built-in client is done.
func run(ctx context.Context, c *app.Config, port uint16, addr netip.Addr, n int, out io.Writer) (err error) {
	if _, err := checkFlags(uint(port), n); err != nil {
		return err
	}
	if err := checkAddr(addr); err != nil {
		return err
	}
	// The built-in topology's client is a kernel UDP socket: no
	// generator, whose flags therefore do nothing here.
	if err := c.ValidateWithoutGenerator(); err != nil {
		return err
	}
	ifname, ep := c.Interface, (*netenv.Endpoint)(nil)
	var v *netenv.Veth
	if ifname != "" {
		// Missing, or down (where echo would answer nothing): refused
		// naming -i before anything is attached.
		if err := app.CheckInterface("i", ifname); err != nil {
			return err
		}
	}
	if ifname == "" {
		if addr.IsValid() {
			return fmt.Errorf("-addr %s: needs -i: the built-in pair's addresses are in a random subnet", addr)
		}
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
	sock, me, err := open(ifname, c, port, addr, ep)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sock.Close()) }()
	if len(me.ips) == 1 {
		fmt.Fprintf(out, "echo on %s queue %d, address %s port %d: %s mode\n", ifname, c.Queue, me.ips[0], port, sock.Mode())
	} else {
		fmt.Fprintf(out, "echo on %s queue %d port %d: %s mode\n", ifname, c.Queue, port, sock.Mode())
		fmt.Fprintf(out, "notice: %s has %d IPv4 addresses (%s) and the filter can name only one, so it names none: echo takes the datagrams for port %d to every address from the kernel; -addr serves one and leaves the others to the kernel\n",
			ifname, len(me.ips), joinAddrs(me.ips), port)
	}

	s := newServer(sock, port, me, c)
	if c.Duration > 0 {
		// As for the other examples, building the topology and
		// opening the socket do not count.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Duration)
		defer cancel()
	}
	body := func(ctx context.Context) error { // serve until interrupted
		<-ctx.Done()
		return nil
	}
	if v != nil {
		body = func(ctx context.Context) error {
			return v.Host.Do(func() error {
				return client(ctx, netip.AddrPortFrom(v.Peer.IP(), port), n, out)
			})
		}
	}
	if err := serveWhile(ctx, s.serve, func() { s.stop.Store(true) }, body); err != nil {
		if st, serr := sock.Stats(); serr == nil {
			s.report(out)
			app.PrintStats(out, st)
		}
		return err
	}
	st, err := sock.Stats()
	if err != nil {
		return err
	}
	s.report(out)
	app.PrintStats(out, st)
	return nil
}

// serveWhile runs serve on a goroutine of its own while body runs, and
// calls stop, which makes serve return, once body has returned. body's
// context ends with ctx or as soon as serve fails, so that a server that
// failed ends the run instead of leaving it waiting for Ctrl-C or for a
// client that will get no answer. The error is serve's, if it failed
// (other than with the socket closed), else body's.
func serveWhile(ctx context.Context, serve func() error, stop func(), body func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		err := serve()
		if err != nil {
			cancel()
		}
		served <- err
	}()
	berr := body(ctx)
	stop()
	if err := <-served; err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return berr
}

// open binds an echo socket whose XDP program redirects only UDP/IPv4 to
// port and to addr, which must be one of the interface's IPv4 addresses
// (the zero Addr: to the interface's address, when it has only one),
// inside ep's namespace when ep is not nil, and returns with it the
// addresses echo answers to: addr, or else the interface's.
func open(ifname string, c *app.Config, port uint16, addr netip.Addr, ep *netenv.Endpoint) (*xsk.Socket, *local, error) {
	if err := checkAddr(addr); err != nil {
		return nil, nil, err
	}
	o := c.XSKOptions()
	var sock *xsk.Socket
	var me *local
	do := func() error {
		var err error
		if me, err = localOf(ifname); err != nil {
			return err
		}
		if addr.IsValid() {
			if !slices.Contains(me.ips, addr) {
				return fmt.Errorf("-addr %s: not an IPv4 address of interface %s (it has %s)", addr, ifname, joinAddrs(me.ips))
			}
			me.ips = []netip.Addr{addr}
		}
		o.Filter = bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: port}
		if len(me.ips) == 1 {
			o.Filter.DstAddr = me.ips[0]
		}
		sock, err = xsk.Open(ifname, c.Queue, o)
		return err
	}
	var err error
	if ep != nil {
		err = ep.Do(do)
	} else {
		err = do()
	}
	return sock, me, err
}

// local is what echo answers to: the interface's MAC address and IPv4
// addresses, or only -addr of them when it is given.
type local struct {
	mac [6]byte
	ips []netip.Addr
}

// localOf reads the addresses of the interface ifname in the calling
// thread's namespace.
func localOf(ifname string) (*local, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("interface %s: no Ethernet (6-byte) MAC address: echo answers Ethernet frames only", ifname)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	me := &local{mac: [6]byte(ifi.HardwareAddr)}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok {
				me.ips = append(me.ips, ip)
			}
		}
	}
	if len(me.ips) == 0 {
		return nil, fmt.Errorf("interface %s: no IPv4 address: echo answers datagrams sent to the interface's own address", ifname)
	}
	return me, nil
}

// joinAddrs lists addresses for a message: "10.0.0.1, 10.0.0.2".
func joinAddrs(ips []netip.Addr) string {
	var b strings.Builder
	for i, ip := range ips {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(ip.String())
	}
	return b.String()
}

// forMe reports whether the untagged IPv4 frame is a unicast datagram from
// a unicast source to me's MAC and one of its addresses, and so may be
// answered: the answer's source is the request's destination.
func (me *local) forMe(frame []byte) bool {
	const eth = packet.EthLen
	if [6]byte(frame[0:6]) != me.mac || frame[6]&1 != 0 { // not to us, or from a group address
		return false
	}
	src := netip.AddrFrom4([4]byte(frame[eth+12 : eth+16]))
	if src.IsUnspecified() || src.IsMulticast() || src.IsLoopback() || src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	dst := netip.AddrFrom4([4]byte(frame[eth+16 : eth+20]))
	for _, ip := range me.ips {
		if ip == dst {
			return true
		}
	}
	return false
}

// server answers datagrams on one socket. serve runs on one goroutine;
// the counters may be read from any.
type server struct {
	sock *xsk.Socket
	port uint16
	me   *local
	// idle waits, as -wait says, when nothing has arrived (the loop's
	// other methods are not used).
	idle *app.Loop
	// cpu is the CPU serve pins its thread to (-1: none); isolate keeps
	// the process's other threads off it.
	cpu     int
	isolate bool
	descs   []xsk.Desc
	stop    atomic.Bool
	// answered counts the datagrams answered; fragments and tagged the
	// ones for port that echo cannot answer (see verdict); dropped the
	// frames that were not datagrams for port sent to the addresses in
	// me (see local.forMe); unsent the answers given back untransmitted
	// when serve stopped with the TX ring full.
	answered, fragments, tagged, dropped, unsent atomic.Uint64
}

// report prints what the server did with the frames it received.
func (s *server) report(out io.Writer) {
	fmt.Fprintf(out, "answered %d datagrams; not answered: %d first fragments of datagrams larger than the MTU (no reassembly), %d VLAN-tagged, %d answers not sent (stopped with the TX ring full); dropped %d frames that were not unicast datagrams for port %d to the addresses served\n",
		s.answered.Load(), s.fragments.Load(), s.tagged.Load(), s.unsent.Load(), s.dropped.Load(), s.port)
}

// newServer makes a server for port on sock that answers datagrams to
// me, and waits and runs where c says (-wait, -spin, -nap, -cpu,
// -isolate).
func newServer(sock *xsk.Socket, port uint16, me *local, c *app.Config) *server {
	return &server{sock: sock, port: port, me: me, idle: app.NewLoop(sock, c),
		cpu: c.CPU, isolate: c.Isolate, descs: make([]xsk.Desc, c.Batch)}
}

// serve answers datagrams until stop is set, on a thread of its own,
// pinned to cpu when it is set.
func (s *server) serve() (err error) {
	unpin, err := app.PinThread(s.cpu)
	if err != nil {
		return err
	}
	defer unpin()
	if s.cpu >= 0 && s.isolate {
		restore, err := app.KeepOffCPU(s.cpu)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, restore()) }()
	}
	var drop []xsk.Desc
	for !s.stop.Load() {
		k, err := s.sock.Receive(s.descs)
		if err != nil {
			return err
		}
		if k == 0 {
			if err := s.idle.Idle(xsk.Readable); err != nil {
				return err
			}
			continue
		}
		s.idle.Busy()
		// Turn the good ones around in place, compacting them to the
		// front; give the rest back.
		out := s.descs[:0]
		drop = drop[:0]
		for _, d := range s.descs[:k] {
			l, v := reply(s.sock.Frame(d), s.port, s.me)
			switch v {
			case answered:
				d.Len = uint32(l)
				out = append(out, d)
				continue
			case fragment:
				s.fragments.Add(1)
			case tagged:
				s.tagged.Add(1)
			default:
				s.dropped.Add(1)
			}
			drop = append(drop, d)
		}
		if len(drop) > 0 {
			if err := s.sock.Release(drop); err != nil {
				return err
			}
		}
		if err := s.send(s.sock, out); err != nil {
			return err
		}
	}
	return nil
}

// txSocket is what send needs of the socket.
type txSocket interface {
	app.Transmitter
	Kick() error
	Release(descs []xsk.Desc) error
}

// send transmits the answers in out and counts them: answered the ones
// queued, unsent the ones given back because serve was stopped, or
// failed, before the TX ring had room for them.
func (s *server) send(sock txSocket, out []xsk.Desc) error {
	n, err := app.TransmitAll(sock, out, sock.Kick, &s.stop)
	s.answered.Add(uint64(n))
	if n < len(out) {
		s.unsent.Add(uint64(len(out) - n))
		err = errors.Join(err, sock.Release(out[n:]))
	}
	return err
}

// verdict is what reply made of a frame.
type verdict int

const (
	// answered: the frame now holds the answer.
	answered verdict = iota
	// notOurs: not a well-formed UDP/IPv4 datagram for the port, or not
	// one sent to the addresses served from a unicast source.
	notOurs
	// fragment: the first fragment of a datagram for the port. echo's
	// filter leaves fragments to the kernel, but a program that
	// redirects more may pass one on; answering needs the whole
	// datagram, and without reassembly here it cannot be answered.
	fragment
	// tagged: a well-formed datagram for the port behind a VLAN tag,
	// which the XDP filter looks through; echo answers untagged frames
	// only.
	tagged
)

// reply turns the UDP/IPv4 datagram to port on me in frame into its
// answer, in place, and returns the answer's length and answered;
// otherwise it leaves frame alone and says why not. A datagram from
// source port 0 wants no answer (RFC 768) and gets none. IP options are
// honoured in the request and left out of the answer: the UDP header and
// payload move up to follow a 20-byte IPv4 header. It allocates nothing.
//
// The incoming UDP checksum is not verified: a kernel that sends over veth
// (or any device with checksum offload) leaves it partial, for hardware
// that veth does not have to fill in. The IPv4 header checksum is always
// complete and is checked; the answer gets both checksums in full.
func reply(frame []byte, port uint16, me *local) (int, verdict) {
	const eth = packet.EthLen
	if len(frame) < packet.HeadersLen {
		return 0, notOurs
	}
	switch be16(frame[12:]) {
	case 0x0800:
	case 0x8100, 0x88a8:
		if be16(frame[16:]) == 0x0800 && forPort(frame, eth+4, port) {
			return 0, tagged
		}
		return 0, notOurs
	default:
		return 0, notOurs
	}
	if !forPort(frame, eth, port) || !me.forMe(frame) {
		return 0, notOurs
	}
	hl := int(frame[eth]&0x0f) * 4
	udp := eth + hl
	if ipChecksum(frame[eth:udp]) != 0 {
		return 0, notOurs
	}
	if flags := be16(frame[eth+6:]); flags&0x2000 != 0 { // more fragments
		return 0, fragment
	}
	total := int(be16(frame[eth+2:]))
	if total < hl+packet.UDPLen || eth+total > len(frame) {
		return 0, notOurs
	}
	ulen := int(be16(frame[udp+4:]))
	if ulen != total-hl || be16(frame[udp:]) == 0 {
		return 0, notOurs
	}
	var srcMAC, dstMAC [6]byte
	copy(srcMAC[:], frame[0:6])
	copy(dstMAC[:], frame[6:12])
	h := packet.UDP{
		SrcMAC: srcMAC[:], DstMAC: dstMAC[:],
		SrcIP: netip.AddrFrom4([4]byte(frame[eth+16 : eth+20])), DstIP: netip.AddrFrom4([4]byte(frame[eth+12 : eth+16])),
		SrcPort: port, DstPort: be16(frame[udp:]),
		ID: be16(frame[eth+4:]),
	}
	if hl > packet.IPv4Len {
		// Drop the options: the payload moves up behind a plain header.
		copy(frame[eth+packet.IPv4Len:], frame[udp:eth+total])
	}
	// Write rebuilds the headers around the payload and computes both
	// checksums.
	l, err := h.Write(frame, ulen-packet.UDPLen)
	if err != nil {
		return 0, notOurs
	}
	return l, answered
}

// forPort reports whether frame holds, at ip, the IPv4 header of an
// unfragmented datagram or first fragment whose UDP header is in frame and
// names port as its destination.
func forPort(frame []byte, ip int, port uint16) bool {
	if len(frame) < ip+packet.IPv4Len || frame[ip]>>4 != 4 || frame[ip+9] != 17 {
		return false
	}
	hl := int(frame[ip]&0x0f) * 4
	if hl < packet.IPv4Len || len(frame) < ip+hl+packet.UDPLen || be16(frame[ip+6:])&0x1fff != 0 {
		return false // malformed, or a fragment other than the first
	}
	return be16(frame[ip+hl+2:]) == port
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
