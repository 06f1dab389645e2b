package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
	"golang.org/x/sys/unix"
)

func request(t testing.TB, payload string) []byte {
	t.Helper()
	b := make([]byte, 2048)
	copy(b[packet.HeadersLen:], payload)
	h := packet.UDP{
		SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2},
		SrcIP: netip.MustParseAddr("10.1.2.1"), DstIP: netip.MustParseAddr("10.1.2.2"),
		SrcPort: 40000, DstPort: 9000, ID: 77,
	}
	n, err := h.Write(b, len(payload))
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// testLocal is the interface that request's datagrams are sent to.
var testLocal = &local{mac: [6]byte{2, 0, 0, 0, 0, 2}, ips: []netip.Addr{netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("10.1.2.2")}}

func TestReply(t *testing.T) {
	for _, payload := range []string{"", "x", "hello, world", strings.Repeat("abc", 400)} {
		f := request(t, payload)
		// A kernel sending over veth leaves the UDP checksum partial:
		// reply must not insist on it.
		f[packet.EthLen+packet.IPv4Len+6] ^= 0x5a
		l, v := reply(f, 9000, testLocal)
		if l != len(f) || v != answered {
			t.Fatalf("payload %q: reply length %d (verdict %d), want %d", payload, l, v, len(f))
		}
		p, err := packet.Parse(f[:l]) // checks both checksums
		if err != nil {
			t.Fatalf("payload %q: reply does not parse: %v", payload, err)
		}
		if p.SrcIP != netip.MustParseAddr("10.1.2.2") || p.DstIP != netip.MustParseAddr("10.1.2.1") ||
			p.SrcPort != 9000 || p.DstPort != 40000 ||
			!bytes.Equal(p.SrcMAC, []byte{2, 0, 0, 0, 0, 2}) || !bytes.Equal(p.DstMAC, []byte{2, 0, 0, 0, 0, 1}) {
			t.Fatalf("payload %q: reply headers %+v not turned around", payload, p)
		}
		if string(p.Payload) != payload {
			t.Fatalf("reply payload %q, want %q", p.Payload, payload)
		}
	}
}

// withOptions returns f with n bytes of IP options (NOPs ending in an
// EOL) inserted after the IPv4 header, and the header's length, total
// length and checksum fixed.
func withOptions(t testing.TB, f []byte, n int) []byte {
	t.Helper()
	const eth, ip = packet.EthLen, packet.EthLen + packet.IPv4Len
	g := make([]byte, 0, len(f)+n)
	g = append(g, f[:ip]...)
	for i := range n {
		if i == n-1 {
			g = append(g, 0) // end of options
		} else {
			g = append(g, 1) // no operation
		}
	}
	g = append(g, f[ip:]...)
	g[eth] = 0x40 | byte((packet.IPv4Len+n)/4)
	binary.BigEndian.PutUint16(g[eth+2:], binary.BigEndian.Uint16(f[eth+2:])+uint16(n))
	g[eth+10], g[eth+11] = 0, 0
	binary.BigEndian.PutUint16(g[eth+10:], ipChecksum(g[eth:ip+n]))
	if ipChecksum(g[eth:ip+n]) != 0 {
		t.Fatal("withOptions: bad header checksum")
	}
	return g
}

// TestReplyIPOptions answers requests whose IPv4 header carries options
// (IHL above 5), which the XDP filter redirects to echo: the answer is a
// plain datagram with a 20-byte header, both checksums right, addresses
// and ports turned around and the payload intact.
func TestReplyIPOptions(t *testing.T) {
	for _, n := range []int{4, 8, 40} {
		for _, payload := range []string{"", "hello, options", strings.Repeat("xyz", 300)} {
			f := withOptions(t, request(t, payload), n)
			l, v := reply(f, 9000, testLocal)
			if v != answered || l != len(f)-n {
				t.Fatalf("%d bytes of options, payload %q: reply length %d (verdict %d), want %d", n, payload, l, v, len(f)-n)
			}
			p, err := packet.Parse(f[:l]) // checks both checksums
			if err != nil {
				t.Fatalf("%d bytes of options: reply does not parse: %v", n, err)
			}
			if f[packet.EthLen] != 0x45 {
				t.Fatalf("%d bytes of options: reply's version/IHL %#x, want 0x45", n, f[packet.EthLen])
			}
			if p.SrcIP != netip.MustParseAddr("10.1.2.2") || p.DstIP != netip.MustParseAddr("10.1.2.1") ||
				p.SrcPort != 9000 || p.DstPort != 40000 ||
				!bytes.Equal(p.SrcMAC, []byte{2, 0, 0, 0, 0, 2}) || !bytes.Equal(p.DstMAC, []byte{2, 0, 0, 0, 0, 1}) {
				t.Fatalf("%d bytes of options: reply headers %+v not turned around", n, p)
			}
			if string(p.Payload) != payload {
				t.Fatalf("%d bytes of options: reply payload %q, want %q", n, p.Payload, payload)
			}
		}
	}
}

func TestReplyRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		mangle func([]byte) []byte
		want   verdict
	}{
		"other port":           {func(f []byte) []byte { f[36] ^= 1; return f }, notOurs},
		"bad ip sum":           {func(f []byte) []byte { f[24] ^= 1; return f }, notOurs},
		"later fragment":       {func(f []byte) []byte { f[21] = 1; return f }, notOurs},
		"not ipv4":             {func(f []byte) []byte { f[12] = 0x86; return f }, notOurs},
		"not udp":              {func(f []byte) []byte { f[23] = 6; return f }, notOurs},
		"truncated":            {func(f []byte) []byte { return f[:len(f)-1] }, notOurs},
		"short":                {func(f []byte) []byte { return f[:20] }, notOurs},
		"ihl 6, no options":    {func(f []byte) []byte { f[14] = 0x46; return f }, notOurs},
		"ihl 4":                {func(f []byte) []byte { f[14] = 0x44; return f }, notOurs},
		"version 6":            {func(f []byte) []byte { f[14] = 0x65; return f }, notOurs},
		"bad udp len":          {func(f []byte) []byte { f[39]++; return f }, notOurs},
		"options past total":   {func(f []byte) []byte { return withOptions(t, f, 8)[:len(f)+4] }, notOurs},
		"first fragment":       {func(f []byte) []byte { return setFlags(f, packet.EthLen, 0x2000) }, fragment},
		"vlan-tagged":          {func(f []byte) []byte { return tag(f, 0x8100) }, tagged},
		"qinq-tagged":          {func(f []byte) []byte { return tag(f, 0x88a8) }, tagged},
		"tagged, other port":   {func(f []byte) []byte { g := tag(f, 0x8100); g[40] ^= 1; return g }, notOurs},
		"tagged, not ipv4":     {func(f []byte) []byte { g := tag(f, 0x8100); g[16] = 0x86; return g }, notOurs},
		"tagged first frag":    {func(f []byte) []byte { return tag(setFlags(f, packet.EthLen, 0x2000), 0x8100) }, tagged},
		"fragment with opts":   {func(f []byte) []byte { return setFlags(withOptions(t, f, 4), packet.EthLen, 0x2000) }, fragment},
		"fragment, bad ip sum": {func(f []byte) []byte { f[14+6] |= 0x20; return f }, notOurs},
		"another MAC":          {func(f []byte) []byte { f[5] = 3; return f }, notOurs},
		"broadcast MAC":        {func(f []byte) []byte { copy(f, []byte{255, 255, 255, 255, 255, 255}); return f }, notOurs},
		"another IP":           {func(f []byte) []byte { return setIP(f, 16, 10, 1, 2, 3) }, notOurs},
		"broadcast IP":         {func(f []byte) []byte { return setIP(f, 16, 255, 255, 255, 255) }, notOurs},
		"multicast IP":         {func(f []byte) []byte { return setIP(f, 16, 239, 1, 2, 3) }, notOurs},
		"from multicast MAC":   {func(f []byte) []byte { f[6] = 1; return f }, notOurs},
		"from 0.0.0.0":         {func(f []byte) []byte { return setIP(f, 12, 0, 0, 0, 0) }, notOurs},
		"from broadcast":       {func(f []byte) []byte { return setIP(f, 12, 255, 255, 255, 255) }, notOurs},
		"from multicast":       {func(f []byte) []byte { return setIP(f, 12, 224, 0, 0, 1) }, notOurs},
		"from loopback":        {func(f []byte) []byte { return setIP(f, 12, 127, 0, 0, 1) }, notOurs},
		"from port 0":          {func(f []byte) []byte { f[34], f[35] = 0, 0; return f }, notOurs},
	} {
		f := tc.mangle(request(t, "payload"))
		orig := bytes.Clone(f)
		l, v := reply(f, 9000, testLocal)
		if l != 0 || v != tc.want {
			t.Errorf("%s: reply gave %d bytes, verdict %d; want 0, verdict %d", name, l, v, tc.want)
		}
		if !bytes.Equal(f, orig) {
			t.Errorf("%s: frame changed although not answered", name)
		}
	}
}

// setFlags sets the IPv4 flags and fragment offset of the header at ip to
// v and fixes its checksum.
func setFlags(f []byte, ip int, v uint16) []byte {
	binary.BigEndian.PutUint16(f[ip+6:], v)
	f[ip+10], f[ip+11] = 0, 0
	hl := int(f[ip]&0x0f) * 4
	binary.BigEndian.PutUint16(f[ip+10:], ipChecksum(f[ip:ip+hl]))
	return f
}

// setIP writes the IPv4 address a.b.c.d at offset off (12: source, 16:
// destination) of the untagged frame's IPv4 header and fixes its checksum.
func setIP(f []byte, off int, a, b, c, d byte) []byte {
	const eth = packet.EthLen
	copy(f[eth+off:], []byte{a, b, c, d})
	return setFlags(f, eth, binary.BigEndian.Uint16(f[eth+6:]))
}

// tag inserts a VLAN tag of type tpid (VLAN ID 5) after the MAC addresses.
func tag(f []byte, tpid uint16) []byte {
	g := append([]byte(nil), f[:12]...)
	g = binary.BigEndian.AppendUint16(g, tpid)
	g = binary.BigEndian.AppendUint16(g, 5)
	return append(g, f[12:]...)
}

func TestReplyAllocs(t *testing.T) {
	f := request(t, "payload")
	o := withOptions(t, request(t, "payload"), 8)
	frag := setFlags(request(t, "payload"), packet.EthLen, 0x2000)
	orig := bytes.Clone(o)
	if a := testing.AllocsPerRun(100, func() {
		reply(f, 9000, testLocal)
		reply(f, 40000, testLocal)
		copy(o, orig)
		reply(o, 9000, testLocal)
		reply(frag, 9000, testLocal)
	}); a != 0 {
		t.Fatalf("reply allocates %v times", a)
	}
}

// TestCheckFlags refuses -port 0, which would make the XDP filter match
// every UDP port (taking all UDP/IPv4 on the queue from the kernel),
// ports that do not fit 16 bits (70000 would serve 4464), and a -n below
// 1.
func TestCheckFlags(t *testing.T) {
	for _, tc := range []struct {
		port uint
		n    int
		want string // "": valid
	}{
		{9000, 1000, ""},
		{1, 1, ""},
		{65535, 1, ""},
		{0, 1000, "-port 0: must be between 1 and 65535"},
		{65536, 1000, "-port 65536: must be between 1 and 65535"},
		{70000, 1000, "-port 70000: must be between 1 and 65535"},
		{9000, -3, "-n -3: must be at least 1"},
		{9000, 0, "-n 0: must be at least 1"},
	} {
		p, err := checkFlags(tc.port, tc.n)
		switch {
		case tc.want == "" && (err != nil || uint(p) != tc.port):
			t.Errorf("-port %d -n %d: port %d, %v; want %d, valid", tc.port, tc.n, p, err, tc.port)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("-port %d -n %d: %v; want an error starting %q", tc.port, tc.n, err, tc.want)
		}
	}
	var c app.Config
	c.Defaults()
	if err := run(context.Background(), &c, 0, netip.Addr{}, 10, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "-port 0") {
		t.Errorf("run with port 0: %v; want it refused", err)
	}
}

// TestIdleFlag: -n counts the built-in client's datagrams, and with -i
// there is none, so -n given with -i is refused; -spin and -nap only with
// the wait they belong to.
func TestIdleFlag(t *testing.T) {
	var c app.Config
	c.Defaults()
	if why := idleFlag(&c, "n"); why != "" {
		t.Errorf("-n without -i: refused (%s)", why)
	}
	c.Interface = "eth0"
	if why := idleFlag(&c, "n"); !strings.Contains(why, "without -i") {
		t.Errorf("-n with -i: %q; want it refused as applying only without -i", why)
	}
	if why := idleFlag(&c, "spin"); !strings.Contains(why, "-wait hybrid") {
		t.Errorf("-spin with -wait spin: %q; want it refused", why)
	}
	if why := idleFlag(&c, "port"); why != "" {
		t.Errorf("-port with -i: refused (%s)", why)
	}
}

// TestServeFailureEndsRun checks what run relies on: when the server
// fails, a run that waits for Ctrl-C (-i) ends at once with the server's
// error instead of waiting on, and serve is stopped once the run ends.
func TestServeFailureEndsRun(t *testing.T) {
	boom := errors.New("boom")
	start := time.Now()
	err := serveWhile(context.Background(),
		func() error { time.Sleep(10 * time.Millisecond); return boom },
		func() {},
		func(ctx context.Context) error { <-ctx.Done(); return nil })
	if !errors.Is(err, boom) {
		t.Fatalf("serveWhile = %v; want the server's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("serveWhile returned %v after the server failed", d)
	}

	// The body ends first: serve is stopped, and the body's error wins
	// over a server that stopped cleanly (or found its socket closed).
	var stop atomic.Bool
	bodyErr := errors.New("client failed")
	err = serveWhile(context.Background(),
		func() error {
			for !stop.Load() {
				time.Sleep(time.Millisecond)
			}
			return net.ErrClosed
		},
		func() { stop.Store(true) },
		func(context.Context) error { return bodyErr })
	if !errors.Is(err, bodyErr) {
		t.Fatalf("serveWhile = %v; want the body's error", err)
	}
}

// TestEcho runs the server on a veth pair and a kernel UDP client (net.Dial
// in the other namespace) that must get every datagram back intact. ARP
// goes through the kernel: the XDP filter passes it.
func TestEcho(t *testing.T) {
	testenv.RequirePrivileged(t)
	var c app.Config
	c.Defaults()
	c.Wait = app.WaitPoll
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &c, 9000, netip.Addr{}, 500, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "500 of 500 datagrams came back intact") {
		t.Fatalf("client did not report 500 intact replies:\n%s", out.String())
	}
}

// TestEchoIgnoresGeneratorFlags: echo's built-in topology has a kernel
// UDP client and no packet generator, so -gen-cpu and -gen-batch, which
// it registers with the other flags, do nothing and must not stop it
// (under `taskset -c 1` the default -gen-cpu 0 names a CPU the process
// may not use).
func TestEchoIgnoresGeneratorFlags(t *testing.T) {
	testenv.RequirePrivileged(t)
	outside := testenv.CPUOutsideAffinity(t)
	var c app.Config
	c.Defaults()
	c.Wait = app.WaitPoll
	c.GenCPU, c.GenBatch = outside, 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &c, 9000, netip.Addr{}, 10, &out); err != nil {
		t.Fatalf("-gen-cpu %d -gen-batch 0: %v\n%s", outside, err, out.String())
	}
}

// echoOn starts a server for port 9000 on the peer end of a new veth
// pair whose host end is in a namespace of its own, over a socket opened
// with o (nil: echo's own, filtered to the port), and stops it when t
// ends.
func echoOn(t *testing.T, o *xsk.Options) (*netenv.Veth, *server) {
	t.Helper()
	testenv.RequirePrivileged(t)
	host := testenv.NewNetns(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{HostNS: host})
	return v, startServer(t, v, o, netip.Addr{})
}

// startServer starts a server for port 9000 on the peer end of v, over a
// socket opened with o (nil: echo's own, filtered to the port and to addr
// as -addr would be), and stops it when t ends.
func startServer(t *testing.T, v *netenv.Veth, o *xsk.Options, addr netip.Addr) *server {
	t.Helper()
	var c app.Config
	c.Defaults()
	c.Wait = app.WaitPoll
	return startServerWith(t, v, o, addr, &c)
}

// startServerWith is startServer with the server's knobs (-wait, -cpu
// and the rest) from c.
func startServerWith(t *testing.T, v *netenv.Veth, o *xsk.Options, addr netip.Addr, c *app.Config) *server {
	t.Helper()
	var sock *xsk.Socket
	var err error
	me := &local{mac: [6]byte(v.Peer.MAC), ips: []netip.Addr{v.Peer.IP()}}
	if o == nil {
		sock, me, err = open(v.Peer.Name, c, 9000, addr, &v.Peer)
	} else {
		// A program that takes every frame takes ARP too.
		if err := pktgen.AddNeighbors(v); err != nil {
			t.Fatal(err)
		}
		err = v.Peer.Do(func() (err error) {
			sock, err = xsk.Open(v.Peer.Name, 0, o)
			return err
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(sock, 9000, me, c)
	served := make(chan error, 1)
	go func() { served <- s.serve() }()
	t.Cleanup(func() {
		s.stop.Store(true)
		if err := <-served; err != nil {
			t.Error(err)
		}
		if err := sock.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// sendFromHost sends a small datagram to port 9000 on the peer end from a
// kernel UDP socket on the host end, waits for its echo, and then sends a
// datagram of size bytes, which the kernel fragments on MTU 1500.
func sendFromHost(t *testing.T, v *netenv.Veth, size int) {
	t.Helper()
	err := v.Host.Do(func() error {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.Peer.IP(), 9000)))
		if err != nil {
			return err
		}
		defer conn.Close()
		buf := make([]byte, 100)
		if _, err := conn.Write([]byte("small")); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "small" {
			return fmt.Errorf("small datagram: reply %q, %v", buf[:n], err)
		}
		_, err = conn.Write(make([]byte, size))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestFirstFragmentCounted feeds echo's server the fragments of a
// datagram larger than the MTU, as an XDP program that redirects every
// frame would (echo's own filter leaves fragments to the kernel): the
// first fragment, which carries the UDP header for the port, cannot be
// answered and must be counted and reported as not answered rather than
// lost silently; the later ones carry no port and are not ours.
func TestFirstFragmentCounted(t *testing.T) {
	v, s := echoOn(t, &xsk.Options{})
	sendFromHost(t, v, 3000) // three fragments
	deadline := time.Now().Add(5 * time.Second)
	for (s.fragments.Load() == 0 || s.dropped.Load() < 2) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f, a, d := s.fragments.Load(), s.answered.Load(), s.dropped.Load(); f != 1 || a != 1 || d != 2 {
		t.Fatalf("first fragments %d, answered %d, not ours %d; want 1, 1, 2", f, a, d)
	}
	var out strings.Builder
	s.report(&out)
	if !strings.Contains(out.String(), "not answered: 1 first fragments") {
		t.Errorf("report does not show the fragment as not answered: %s", out.String())
	}
}

// TestFragmentedDatagramReachesKernel checks the other half, with echo's
// own filter: a datagram larger than the MTU is not taken from the kernel
// in part. All its fragments go on to the kernel, which reassembles it
// for a kernel UDP socket on the same port; echo sees none of it.
func TestFragmentedDatagramReachesKernel(t *testing.T) {
	v, s := echoOn(t, nil)
	var ln *net.UDPConn
	if err := v.Peer.Do(func() (err error) {
		ln, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.Peer.IP(), 9000)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sendFromHost(t, v, 3000)
	buf := make([]byte, 4000)
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := ln.Read(buf)
	if err != nil || n != 3000 {
		t.Fatalf("kernel socket on the port: %d bytes, %v; want the 3000-byte datagram (echo: %d fragments, %d not ours)",
			n, err, s.fragments.Load(), s.dropped.Load())
	}
	// The small datagram's reply can reach the client before the
	// server counts it as answered.
	for deadline := time.Now().Add(5 * time.Second); s.answered.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if f, a, d := s.fragments.Load(), s.answered.Load(), s.dropped.Load(); f != 0 || a != 1 || d != 0 {
		t.Errorf("echo: first fragments %d, answered %d, not ours %d; want 0, 1, 0", f, a, d)
	}
}

// fakeTxSocket takes room frames in all, then has no room: a TX ring that
// the kernel does not drain.
type fakeTxSocket struct {
	room     int
	kicks    int
	released []xsk.Desc
}

func (f *fakeTxSocket) Transmit(descs []xsk.Desc) (int, error) {
	m := min(f.room, len(descs))
	f.room -= m
	return m, nil
}

func (f *fakeTxSocket) Kick() error { f.kicks++; return nil }

func (f *fakeTxSocket) Release(descs []xsk.Desc) error {
	f.released = append(f.released, descs...)
	return nil
}

// TestStopWithTXRingFullCounts stops the server while the TX ring has room
// for only part of a batch of answers: the ones queued count as answered,
// and the rest are given back and reported, so that every frame received
// is accounted for.
func TestStopWithTXRingFullCounts(t *testing.T) {
	s := &server{port: 9000}
	s.stop.Store(true)
	sock := &fakeTxSocket{room: 3}
	out := make([]xsk.Desc, 8)
	for i := range out {
		out[i].Addr = uint64(i) << 11
	}
	if err := s.send(sock, out); err != nil {
		t.Fatal(err)
	}
	if a, u := s.answered.Load(), s.unsent.Load(); a != 3 || u != 5 {
		t.Fatalf("answered %d, unsent %d; want 3, 5", a, u)
	}
	if len(sock.released) != 5 || sock.released[0] != out[3] {
		t.Fatalf("released %v, want the last 5 of %v", sock.released, out)
	}
	var rep strings.Builder
	s.report(&rep)
	if !strings.Contains(rep.String(), "answered 3 datagrams") || !strings.Contains(rep.String(), "5 answers not sent") {
		t.Errorf("report does not account for the unsent answers: %s", rep.String())
	}
}

// TestServeRunsWhereConfigured checks that the server honours -cpu and
// -wait nap, which echo registers with the other common flags: its
// thread is pinned to that CPU alone and, while idle, naps in
// nanosleep(2) (rather than sleeping in poll(2), as it does with -wait
// poll), and it answers all the same.
func TestServeRunsWhereConfigured(t *testing.T) {
	testenv.RequirePrivileged(t)
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if all.Count() < 2 {
		t.Skip("needs two CPUs: pinned to the only one, a thread is not told apart")
	}
	cpu := 0
	for !all.IsSet(cpu) {
		cpu++
	}
	host := testenv.NewNetns(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{HostNS: host})
	var c app.Config
	c.Defaults()
	c.CPU, c.Wait, c.Nap = cpu, app.WaitNap, 20*time.Millisecond
	startServerWith(t, v, nil, netip.Addr{}, &c)

	// The server's thread is the one whose CPU set is {cpu}; once
	// found, it is seen napping: idle, it is in nanosleep(2) nearly
	// always.
	tid, napping := 0, false
	for deadline := time.Now().Add(10 * time.Second); !napping && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if tid == 0 {
			tid = pinnedThread(t, cpu)
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/syscall", tid))
		if err != nil {
			t.Fatal(err)
		}
		nr, _, _ := strings.Cut(string(b), " ")
		napping = nr == strconv.Itoa(unix.SYS_NANOSLEEP) || nr == strconv.Itoa(unix.SYS_CLOCK_NANOSLEEP)
	}
	if tid == 0 {
		t.Fatalf("-cpu %d: no thread of the process pinned to CPU %d alone", cpu, cpu)
	}
	if !napping {
		t.Fatalf("-wait nap: the server's thread %d never seen in nanosleep(2) while idle", tid)
	}
	sendFromHost(t, v, 100)
}

// pinnedThread returns a thread of this process whose CPU set is cpu
// alone, or 0.
func pinnedThread(t *testing.T, cpu int) int {
	t.Helper()
	tids, err := sys.ThreadIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tids {
		var set unix.CPUSet
		if unix.SchedGetaffinity(tid, &set) == nil && set.Count() == 1 && set.IsSet(cpu) {
			return tid
		}
	}
	return 0
}

// TestRefusesMissingOrDownInterface runs echo with -i naming an interface
// that is not there, and one that is down: both are refused naming -i and
// the interface, before anything is printed or attached. The missing one
// used to fail with "route ip+net: no such network interface", naming
// neither; on the down one echo served until interrupted, answering
// nothing. open, which tests call without run, names the interface too.
func TestRefusesMissingOrDownInterface(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	testenv.SetLink(t, v.Host, false)
	for name, want := range map[string]string{
		"afxnosuch0": "-i afxnosuch0: no such network interface",
		v.Host.Name:  fmt.Sprintf("-i %s: the interface is down", v.Host.Name),
	} {
		var c app.Config
		c.Defaults()
		c.Interface, c.Wait = name, app.WaitPoll
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		var out bytes.Buffer
		err := run(ctx, &c, 9000, netip.Addr{}, 1, &out)
		cancel()
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("-i %s: %v; want an error starting %q", name, err, want)
		}
		if out.Len() > 0 {
			t.Errorf("-i %s: printed before refusing:\n%s", name, out.String())
		}
	}
	var c app.Config
	c.Defaults()
	if _, _, err := open("afxnosuch0", &c, 9000, netip.Addr{}, nil); err == nil || !strings.HasPrefix(err.Error(), "interface afxnosuch0: ") {
		t.Errorf("open afxnosuch0: %v; want an error naming the interface", err)
	}
}
