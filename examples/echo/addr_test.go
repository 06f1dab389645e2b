package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// twoAddrVeth makes a veth pair whose host end is in a namespace of its
// own and whose peer end has a second IPv4 address, the one after its
// first in the same subnet, which it returns.
func twoAddrVeth(t *testing.T) (*netenv.Veth, netip.Addr) {
	t.Helper()
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{HostNS: testenv.NewNetns(t)})
	second := v.Peer.IP().Next()
	h := v.Peer.NS.Handle()
	l, err := h.LinkByName(v.Peer.Name)
	if err != nil {
		t.Fatal(err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: second.AsSlice(), Mask: net.CIDRMask(v.Peer.Addr.Bits(), 32)}}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("add %s to %s: %v", second, v.Peer.Name, err)
	}
	return v, second
}

// TestAddrServesOneAddress serves one of two addresses of an interface
// with -addr. A kernel UDP client of that address gets its answers; the
// datagrams for the same port to the other address stay with the kernel,
// which delivers them to a kernel socket bound there, and echo neither
// receives nor answers them. Without -addr the filter would name no
// address and echo would take (and answer) those too.
func TestAddrServesOneAddress(t *testing.T) {
	for _, which := range []string{"first", "second"} {
		t.Run(which, func(t *testing.T) {
			v, second := twoAddrVeth(t)
			served, other := v.Peer.IP(), second
			if which == "second" {
				served, other = other, served
			}
			s := startServer(t, v, nil, served)
			if !slices.Equal(s.me.ips, []netip.Addr{served}) {
				t.Fatalf("echo answers to %v; want only -addr %s", s.me.ips, served)
			}
			var kernel *net.UDPConn
			if err := v.Peer.Do(func() (err error) {
				kernel, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(other, 9000)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer kernel.Close()

			dial := func(to netip.Addr) *net.UDPConn {
				var c *net.UDPConn
				if err := v.Host.Do(func() (err error) {
					c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 9000)))
					return err
				}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			const n = 20
			buf := make([]byte, 200)
			toServed := dial(served)
			for i := range n {
				msg := fmt.Sprintf("to %s, %d", served, i)
				if _, err := toServed.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				toServed.SetReadDeadline(time.Now().Add(5 * time.Second))
				m, err := toServed.Read(buf)
				if err != nil || string(buf[:m]) != msg {
					t.Fatalf("datagram %d to -addr %s: reply %q, %v; want it back", i, served, buf[:m], err)
				}
			}

			toOther := dial(other)
			for i := range n {
				msg := fmt.Sprintf("to %s, %d", other, i)
				if _, err := toOther.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				kernel.SetReadDeadline(time.Now().Add(5 * time.Second))
				m, err := kernel.Read(buf)
				if err != nil || string(buf[:m]) != msg {
					t.Fatalf("datagram %d to the other address %s: kernel socket there got %q, %v; want it (echo: answered %d, dropped %d)",
						i, other, buf[:m], err, s.answered.Load(), s.dropped.Load())
				}
			}
			// The kernel socket does not answer, and neither may echo.
			toOther.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if m, err := toOther.Read(buf); err == nil {
				t.Errorf("a reply %q from the other address %s", buf[:m], other)
			}

			waitFor(func() bool { return s.answered.Load() >= n })
			st, err := s.sock.Stats()
			if err != nil {
				t.Fatal(err)
			}
			a, f, tg, d, u := s.answered.Load(), s.fragments.Load(), s.tagged.Load(), s.dropped.Load(), s.unsent.Load()
			if a != n || f+tg+d+u != 0 || st.RxPackets != n {
				t.Errorf("echo received %d, answered %d, fragments %d, tagged %d, dropped %d, unsent %d; want %d received and answered, nothing else",
					st.RxPackets, a, f, tg, d, u, n)
			}
		})
	}
}

// TestParseAddr refuses -addr values that are not a specified IPv4
// address, naming the flag and the value.
func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "": valid
	}{
		{"", ""},
		{"10.1.2.3", ""},
		{"192.0.2.255", ""},
		{"garbage", `-addr "garbage": not an IPv4 address`},
		{"10.1.2.256", `-addr "10.1.2.256": not an IPv4 address`},
		{"10.1.2.3/24", `-addr "10.1.2.3/24": not an IPv4 address`},
		{" 10.1.2.3", `-addr " 10.1.2.3": not an IPv4 address`},
		{"::1", "-addr ::1: must be an IPv4 address"},
		{"2001:db8::1", "-addr 2001:db8::1: must be an IPv4 address"},
		{"::ffff:10.1.2.3", "-addr ::ffff:10.1.2.3: must be an IPv4 address"},
		{"0.0.0.0", "-addr 0.0.0.0: must be one of the interface's IPv4 addresses"},
	} {
		a, err := parseAddr(tc.in)
		switch {
		case tc.want == "" && (err != nil || tc.in == "" && a.IsValid() || tc.in != "" && a.String() != tc.in):
			t.Errorf("-addr %q: %v, %v; want it valid", tc.in, a, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("-addr %q: %v; want an error starting %q", tc.in, err, tc.want)
		}
	}
	// run and open check an address given to them too, before they build
	// or bind anything.
	var c app.Config
	c.Defaults()
	v6 := netip.MustParseAddr("2001:db8::1")
	if err := run(context.Background(), &c, 9000, v6, 10, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "-addr 2001:db8::1: must be an IPv4 address") {
		t.Errorf("run with -addr %s: %v; want it refused", v6, err)
	}
	if _, _, err := open("lo", &c, 9000, netip.IPv4Unspecified(), nil); err == nil || !strings.HasPrefix(err.Error(), "-addr 0.0.0.0:") {
		t.Errorf("open with -addr 0.0.0.0: %v; want it refused", err)
	}
}

// TestAddrNotOnInterfaceRefused refuses an -addr that is not one of the
// interface's IPv4 addresses, leaving no XDP program on it, and any -addr
// without -i.
func TestAddrNotOnInterfaceRefused(t *testing.T) {
	v, second := twoAddrVeth(t)
	var c app.Config
	c.Defaults()
	c.Wait = app.WaitPoll
	foreign := second.Next()
	sock, _, err := open(v.Peer.Name, &c, 9000, foreign, &v.Peer)
	want := fmt.Sprintf("-addr %s: not an IPv4 address of interface %s (it has %s, %s)", foreign, v.Peer.Name, v.Peer.IP(), second)
	if err == nil {
		sock.Close()
	}
	if err == nil || !strings.HasSuffix(err.Error(), want) { // behind "in netns ...: "
		t.Fatalf("open with -addr %s: %v; want %q", foreign, err, want)
	}
	l, err := v.Peer.NS.Handle().LinkByName(v.Peer.Name)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("an XDP program (id %d) is attached to %s after -addr was refused", x.ProgId, v.Peer.Name)
	}

	// Without -i the pair's subnet is random: -addr is refused before
	// anything is built.
	var out bytes.Buffer
	err = run(context.Background(), &c, 9000, netip.MustParseAddr("192.0.2.1"), 10, &out)
	if err == nil || err.Error() != "-addr 192.0.2.1: needs -i: the built-in pair's addresses are in a random subnet" || out.Len() != 0 {
		t.Errorf("run without -i, -addr 192.0.2.1: %v; want it refused\n%s", err, out.String())
	}
}

// TestSeveralAddrsNotice runs echo with -i on an interface with two IPv4
// addresses: without -addr it says at start that the filter names neither
// and suggests -addr; with -addr it names the address it serves and says
// nothing of the kind.
func TestSeveralAddrsNotice(t *testing.T) {
	v, second := twoAddrVeth(t)
	var c app.Config
	c.Defaults()
	c.Wait = app.WaitPoll
	c.Interface = v.Peer.Name
	// With -i, run serves until ctx ends: an ended one makes it stop as
	// soon as it has started.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	runIn := func(addr netip.Addr) string {
		var out bytes.Buffer
		if err := v.Peer.Do(func() error { return run(ctx, &c, 9000, addr, 1, &out) }); err != nil {
			t.Fatalf("-i %s -addr %v: %v\n%s", v.Peer.Name, addr, err, out.String())
		}
		return out.String()
	}
	out := runIn(netip.Addr{})
	notice := fmt.Sprintf("notice: %s has 2 IPv4 addresses (%s, %s)", v.Peer.Name, v.Peer.IP(), second)
	if !strings.Contains(out, notice) || !strings.Contains(out, "-addr serves one") {
		t.Errorf("without -addr: no notice %q suggesting -addr in\n%s", notice, out)
	}
	out = runIn(second)
	if start := fmt.Sprintf("echo on %s queue 0, address %s port 9000", v.Peer.Name, second); !strings.Contains(out, start) || strings.Contains(out, "notice") {
		t.Errorf("with -addr %s: want %q and no notice in\n%s", second, start, out)
	}
}
