// Command sender is a fast-path UDP sender for an unprivileged container:
// it asks the afxdp agent (cmd/afxdp-agent) on the host for the XSKMAP of
// its interface, opens an AF_XDP socket on one queue with no XDP program of
// its own, sends sequence-numbered UDP/IPv4 frames (internal/packet's
// payload, which a receiver can verify byte by byte) at a given rate, and
// prints what it sent and the socket's statistics.
//
// It needs Linux 6.5 or later for the map-fd path (older kernels: the agent
// registers the socket, see -registration), CAP_NET_RAW and nothing else,
// an RLIMIT_MEMLOCK above its UMEM (-frames × 2048 bytes; default 2 MiB) or
// CAP_IPC_LOCK, and the agent's socket, which a container gets through a
// bind mount of <SocketDir>/<device>. Build it static to put it in an image:
//
//	CGO_ENABLED=0 go build -o /tmp/sender ./examples/sender
//	sender -dev eth0 -dst 10.79.2.1 -dst-port 7777 -rate 100000 -count 1000000
//
// Without -dst-mac the destination's MAC is resolved through the kernel's
// neighbour table (/proc/net/arp), after a datagram to the discard port (9)
// has made the kernel ask by ARP.
//
// Ctrl-C (SIGINT) or SIGTERM, which is how a container runtime stops it,
// ends the sending early: it still waits for the kernel to complete what
// was queued, prints what it sent and the statistics, and exits 0. While
// it is still waiting for the agent (-wait), it stops waiting and exits 1.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/umem"
	"github.com/afxdp/afxdp/xsk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0) // -h: the usage is what was asked for
		}
		fmt.Fprintln(os.Stderr, "sender:", err)
		os.Exit(1)
	}
}

type config struct {
	agentPath string
	pod       string
	dev       string
	queue     int
	dst       netip.Addr
	dstPort   int
	dstMAC    net.HardwareAddr
	srcPort   int
	rate      int
	size      int
	count     int
	frames    int
	reg       agent.Registration
	wait      time.Duration
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("sender", flag.ContinueOnError)
	var (
		c       config
		dst     = fs.String("dst", "", "destination IPv4 address (required)")
		dstMAC  = fs.String("dst-mac", "", "destination (next hop) MAC; default: resolved through the neighbour table")
		regName = fs.String("registration", "auto", "how the socket enters the agent's XSKMAP: auto, map-fd or agent")
	)
	fs.StringVar(&c.agentPath, "agent", "", "agent socket (default "+agent.DefaultSocketDir+"/<dev>/"+agent.SocketName+")")
	fs.StringVar(&c.pod, "pod", "", "pod name sent in /connect (default: the host name)")
	fs.StringVar(&c.dev, "dev", "eth0", "interface to send on")
	fs.IntVar(&c.queue, "queue", 0, "queue to send on")
	fs.IntVar(&c.dstPort, "dst-port", 7777, "destination UDP port")
	fs.IntVar(&c.srcPort, "src-port", 7777, "source UDP port")
	fs.IntVar(&c.rate, "rate", 0, "packets per second; 0: as fast as the socket goes")
	fs.IntVar(&c.size, "size", 64, "frame size in bytes, Ethernet header to payload (60 to 1514, and at most the MTU of -dev plus 14)")
	fs.IntVar(&c.count, "count", 1000, "packets to send")
	fs.IntVar(&c.frames, "frames", 1024, "UMEM frames of 2048 bytes (charged against RLIMIT_MEMLOCK)")
	fs.DurationVar(&c.wait, "wait", 0, "how long to keep trying to reach the agent's socket before giving up")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if c.dst, err = netip.ParseAddr(*dst); err != nil || !c.dst.Is4() {
		return nil, fmt.Errorf("-dst %q: want an IPv4 address", *dst)
	}
	if *dstMAC != "" {
		if c.dstMAC, err = net.ParseMAC(*dstMAC); err != nil || len(c.dstMAC) != 6 {
			return nil, fmt.Errorf("-dst-mac %q: want a 6-byte MAC", *dstMAC)
		}
	}
	switch *regName {
	case "auto":
		c.reg = agent.RegisterAuto
	case "map-fd":
		c.reg = agent.RegisterMapFD
	case "agent":
		c.reg = agent.RegisterAgent
	default:
		return nil, fmt.Errorf("-registration %q: want auto, map-fd or agent", *regName)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"-dst-port", c.dstPort}, {"-src-port", c.srcPort}} {
		if p.v < 1 || p.v > 65535 {
			return nil, fmt.Errorf("%s %d: must be between 1 and 65535", p.name, p.v)
		}
	}
	if min := packet.HeadersLen + packet.SeqLen; c.size < max(min, packet.MinFrame) || c.size > 1514 {
		return nil, fmt.Errorf("-size %d: must be between %d and 1514", c.size, max(min, packet.MinFrame))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"-queue", c.queue}, {"-rate", c.rate}, {"-count", c.count}} {
		if f.v < 0 {
			return nil, fmt.Errorf("%s %d: must not be negative", f.name, f.v)
		}
	}
	if c.frames < 2*rxFrames || c.frames > umem.MaxNumFrames {
		return nil, fmt.Errorf("-frames %d: must be between %d and %d", c.frames, 2*rxFrames, umem.MaxNumFrames)
	}
	if c.agentPath == "" {
		c.agentPath = filepath.Join(agent.DefaultSocketDir, c.dev, agent.SocketName)
	}
	return &c, nil
}

// run sends as args say; once ctx ends, it stops sending, but still
// reports.
func run(ctx context.Context, args []string, out io.Writer) error {
	c, err := parseFlags(args)
	if err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(c.dev)
	if err != nil {
		return fmt.Errorf("-dev %q: %w", c.dev, err)
	}
	// A longer frame does not fit the link, yet would count as sent:
	// veth drops one more than 4 bytes (a VLAN tag) longer in the kick
	// that sends it (tx_dropped), and a NIC's peer drops it.
	if ifi.MTU > 0 && c.size > ifi.MTU+packet.EthLen {
		return fmt.Errorf("-size %d: longer than the MTU %d of %s plus the %d-byte Ethernet header (at most %d)",
			c.size, ifi.MTU, c.dev, packet.EthLen, ifi.MTU+packet.EthLen)
	}
	src, err := ipv4Of(ifi)
	if err != nil {
		return err
	}
	if c.dstMAC == nil {
		if c.dstMAC, err = resolveMAC(c.dev, c.dst); err != nil {
			return err
		}
	}

	sock, err := dial(ctx, c)
	if err != nil {
		return err
	}
	defer sock.Close()
	fmt.Fprintf(out, "sender: %s queue %d (%s mode), socket registered by %s; %s:%d (%s) -> %s:%d (%s), %d-byte frames\n",
		c.dev, c.queue, sock.Mode(), sock.Registration(), src, c.srcPort, ifi.HardwareAddr, c.dst, c.dstPort, c.dstMAC, c.size)

	hdr := packet.UDP{
		SrcMAC: ifi.HardwareAddr, DstMAC: c.dstMAC,
		SrcIP: src, DstIP: c.dst,
		SrcPort: uint16(c.srcPort), DstPort: uint16(c.dstPort),
	}
	start := time.Now()
	sent, bytes, err := send(ctx, sock.Socket, &hdr, c)
	elapsed := time.Since(start)
	pps := float64(sent) / max(elapsed.Seconds(), 1e-9)
	if ctx.Err() != nil && sent < uint64(c.count) {
		fmt.Fprintf(out, "interrupted after %d of %d packets\n", sent, c.count)
	}
	fmt.Fprintf(out, "sent %d packets, %d bytes in %v (%.0f pps)\n", sent, bytes, elapsed.Round(time.Millisecond), pps)
	st, serr := sock.Stats()
	if serr == nil {
		fmt.Fprintf(out, "stats: tx_packets=%d tx_bytes=%d tx_batches=%d completed=%d tx_dropped=%d tx_wakeups=%d tx_invalid_descs=%d tx_ring_empty=%d\n",
			st.TxPackets, st.TxBytes, st.TxBatches, st.Completed, st.TxDropped, st.TxWakeups, st.TxInvalidDescs, st.TxRingEmpty)
	}
	return errors.Join(err, serr, sock.Close())
}

// rxFrames is the number of receive frames.
const rxFrames = 64

// dial opens the socket through the agent, retrying for c.wait while the
// agent cannot be reached (its socket is not there yet, or not yet open to
// this user, or it hung up while starting or stopping), or until ctx ends.
// An answer from the agent, such as a refusal, is not retried: asking
// again would get the same answer.
func dial(ctx context.Context, c *config) (*agent.Socket, error) {
	deadline := time.Now().Add(c.wait)
	opts := &agent.SocketOptions{
		// Nearly every frame transmits; the few receive frames serve
		// whatever the agent's program redirects here.
		XSK: &xsk.Options{NumFrames: c.frames, TxFrames: c.frames - rxFrames,
			FillRingSize: rxFrames, RxRingSize: rxFrames},
		Registration: c.reg,
	}
	for {
		s, err := agent.DialSocket(c.agentPath, c.pod, c.dev, c.queue, opts)
		if err == nil || !unreachable(err) || time.Now().After(deadline) {
			return s, explainDial(err, c)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("-agent %q: interrupted while waiting for the agent (-wait %v): %w", c.agentPath, c.wait, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// unreachable reports whether err says that the agent could not be
// reached or talked to, rather than what the agent or the kernel answered.
func unreachable(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) || errors.Is(err, io.EOF)
}

// explainDial adds to an error that keeps this process from the agent
// what the likely cause is and what to do: a socket not there or with no
// agent behind it, the socket's permissions, the agent's /host_nak (with
// the user this process runs as), or a map update refused to -registration
// map-fd.
func explainDial(err error, c *config) error {
	switch {
	case errors.Is(err, agent.ErrRefused):
		return fmt.Errorf("%w: the agent refuses a UID its -allow-uid does not name, and this process runs as uid %d", err, os.Getuid())
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w: the socket is not open to uid %d, gid %d: the agent opens it to the group of its -socket-gid, or else to the user of its -allow-uid when that is its one non-root user",
			err, os.Getuid(), os.Getgid())
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: no agent socket there: is the agent serving %s, and its socket directory for %s mounted here (-wait waits for it)?", err, c.dev, c.dev)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: the socket is there, but no agent listens on it (stopped or killed; -wait waits for it to come back)", err)
	case errors.Is(err, syscall.EPERM) && c.reg == agent.RegisterMapFD:
		return fmt.Errorf("%w: the agent hands out a read-only map (-read-only-map), or this kernel (before 6.5) refuses an unprivileged map update: -registration auto or agent has the agent register the socket", err)
	}
	return err
}

// send transmits c.count frames, paced to c.rate, or fewer if ctx ends
// first, and waits until the kernel has completed all it queued. Frames
// written but not queued when ctx ends are given back.
func send(ctx context.Context, s *xsk.Socket, hdr *packet.UDP, c *config) (sent, bytes uint64, err error) {
	const batch = 64
	descs := make([]xsk.Desc, batch)
	payloadLen := c.size - packet.HeadersLen
	count := uint64(c.count)
	start := time.Now()
	var pending []xsk.Desc // allocated and written, not yet queued
	for sent < count && ctx.Err() == nil {
		want := min(count-sent, batch)
		if c.rate > 0 {
			due := uint64(time.Since(start).Seconds() * float64(c.rate))
			if due <= sent {
				next := start.Add(time.Duration(float64(sent+1) / float64(c.rate) * float64(time.Second)))
				time.Sleep(min(time.Until(next), 10*time.Millisecond))
				continue
			}
			want = min(want, due-sent)
		}
		if len(pending) == 0 {
			n, err := s.Alloc(descs[:want])
			if err != nil {
				return sent, bytes, err
			}
			if n == 0 {
				// Every frame is in flight: wait for room.
				if _, err := s.Wait(xsk.Writable, 10*time.Millisecond); err != nil {
					return sent, bytes, err
				}
				if _, err := s.Complete(); err != nil {
					return sent, bytes, err
				}
				continue
			}
			for i := range descs[:n] {
				f := s.Frame(descs[i])
				packet.FillPayload(f[packet.HeadersLen:packet.HeadersLen+payloadLen], sent+uint64(i))
				hdr.ID = uint16(sent + uint64(i))
				l, err := hdr.Write(f, payloadLen)
				if err != nil {
					return sent, bytes, err
				}
				descs[i].Len = uint32(l)
			}
			pending = descs[:n]
		}
		k, err := s.Transmit(pending)
		for _, d := range pending[:k] {
			bytes += uint64(d.Len)
		}
		sent += uint64(k)
		pending = pending[k:]
		if err != nil {
			return sent, bytes, err
		}
		if k == 0 {
			if _, err := s.Wait(xsk.Writable, 10*time.Millisecond); err != nil {
				return sent, bytes, err
			}
		}
	}
	if err := s.Release(pending); err != nil {
		return sent, bytes, err
	}
	// Wait for the kernel to complete every frame queued.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := s.Stats()
		if err != nil {
			return sent, bytes, err
		}
		if st.Completed >= sent {
			return sent, bytes, nil
		}
		if time.Now().After(deadline) {
			return sent, bytes, fmt.Errorf("%d of %d frames still not completed after 5s", sent-st.Completed, sent)
		}
		if err := s.Kick(); err != nil {
			return sent, bytes, err
		}
		s.Wait(xsk.Writable, time.Millisecond)
		if _, err := s.Complete(); err != nil {
			return sent, bytes, err
		}
	}
}

// ipv4Of returns the first IPv4 address of ifi.
func ipv4Of(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv4 address", ifi.Name)
}

// resolveMAC finds the MAC of dst's next hop on dev: the route's gateway,
// or dst itself when it is on the link. It looks in the neighbour table
// and, when the entry is missing, sends a datagram to the discard port so
// that the kernel resolves it by ARP.
func resolveMAC(dev string, dst netip.Addr) (net.HardwareAddr, error) {
	hop, err := nextHop(dev, dst)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(3 * time.Second)
	probed := false
	for {
		mac, err := lookupARP(dev, hop)
		if err != nil || mac != nil {
			return mac, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("resolve MAC of %s on %s: no ARP answer; give -dst-mac", hop, dev)
		}
		if !probed {
			probed = true
			if u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9))); err == nil {
				u.Write([]byte("arp"))
				u.Close()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextHop returns the gateway of dev's most specific IPv4 route to dst
// (/proc/net/route), or dst when that route has none.
func nextHop(dev string, dst netip.Addr) (netip.Addr, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read routes: %w", err)
	}
	defer f.Close()
	best, hop := -1, dst
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 8 || fl[0] != dev {
			continue
		}
		d, err1 := hexAddr(fl[1])
		g, err2 := hexAddr(fl[2])
		m, err3 := hexAddr(fl[7])
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		bits := 0
		for _, b := range m.As4() {
			for ; b&0x80 != 0; b <<= 1 {
				bits++
			}
		}
		if p := netip.PrefixFrom(d, bits); p.Contains(dst) && bits > best {
			best, hop = bits, dst
			if !g.IsUnspecified() {
				hop = g
			}
		}
	}
	if best < 0 {
		return netip.Addr{}, fmt.Errorf("no route to %s on %s", dst, dev)
	}
	return hop, sc.Err()
}

// hexAddr parses an address of /proc/net/route: 8 hex digits, in the
// machine's (little-endian) byte order.
func hexAddr(s string) (netip.Addr, error) {
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.AddrFrom4([4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}), nil
}

// lookupARP returns ip's complete entry on dev in /proc/net/arp, or nil.
func lookupARP(dev string, ip netip.Addr) (net.HardwareAddr, error) {
	b, err := os.ReadFile("/proc/net/arp")
	if err != nil {
		return nil, fmt.Errorf("read neighbour table: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// IP address, HW type, Flags, HW address, Mask, Device
		fl := strings.Fields(line)
		if len(fl) < 6 || fl[0] != ip.String() || fl[5] != dev || fl[2] == "0x0" {
			continue
		}
		return net.ParseMAC(fl[3])
	}
	return nil, nil
}
