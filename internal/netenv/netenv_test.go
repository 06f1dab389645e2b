package netenv_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// linkNames lists the links that list (a namespace's LinkList) returns
// whose names start with one of prefixes.
func linkNames(t *testing.T, list func() ([]netlink.Link, error), prefixes ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, l := range testenv.Dump(t, "links", list) {
		for _, p := range prefixes {
			if strings.HasPrefix(l.Attrs().Name, p) {
				out[l.Attrs().Name] = true
			}
		}
	}
	return out
}

// closedNetns returns a namespace that has been closed.
func closedNetns(t *testing.T) *netenv.Netns {
	t.Helper()
	ns, err := netenv.NewNetns("")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestNewVethRefusesBadOptionsBeforeMakingAnything(t *testing.T) {
	testenv.RequirePrivileged(t)
	closed := closedNetns(t)
	// The host end goes to a namespace of the test's own, where a link
	// left behind cannot be confused with one that a test running
	// beside this one made in the caller's namespace.
	home := testenv.NewNetns(t)
	for _, tc := range []struct {
		name  string
		opts  netenv.VethOptions
		field string
		is    error
	}{
		{"ipv6 subnet", netenv.VethOptions{Subnet: netip.MustParsePrefix("fd00::/64")}, "Subnet", nil},
		{"ipv4-mapped subnet", netenv.VethOptions{Subnet: netip.MustParsePrefix("::ffff:10.1.2.0/120")}, "Subnet", nil},
		{"subnet not a /24", netenv.VethOptions{Subnet: netip.MustParsePrefix("10.1.0.0/16")}, "Subnet", nil},
		{"negative queues", netenv.VethOptions{Queues: -1}, "Queues", nil},
		{"too many queues", netenv.VethOptions{Queues: 65}, "Queues", nil},
		{"negative mtu", netenv.VethOptions{MTU: -1}, "MTU", nil},
		{"mtu below 68", netenv.VethOptions{MTU: 67}, "MTU", nil},
		{"mtu above 65535", netenv.VethOptions{MTU: 65536}, "MTU", nil},
		{"closed host namespace", netenv.VethOptions{HostNS: closed}, "HostNS", net.ErrClosed},
		{"closed peer namespace", netenv.VethOptions{PeerNS: closed}, "PeerNS", net.ErrClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.HostNS == nil {
				tc.opts.HostNS = home
			}
			before := testenv.Snapshot(t)
			links := linkNames(t, home.Handle().LinkList, "")
			var (
				v   *netenv.Veth
				err error
			)
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("NewVeth panicked: %v", r)
					}
				}()
				v, err = netenv.NewVeth(&tc.opts)
			}()
			if v != nil {
				v.Close()
				t.Fatal("NewVeth succeeded")
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("NewVeth: %v; want an error naming %s", err, tc.field)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("NewVeth: %v; want it to wrap %v", err, tc.is)
			}
			// A namespace NewVeth made would hold a file descriptor.
			if after := testenv.Snapshot(t); after.FDs != before.FDs {
				t.Errorf("fds: %d before, %d after", before.FDs, after.FDs)
			}
			for n := range linkNames(t, home.Handle().LinkList, "") {
				if !links[n] {
					t.Errorf("link %s left behind", n)
				}
			}
		})
	}
}

// TestStackRemovesLinkWhenMoveFails makes the move of a new link into its
// namespace fail (a link of the same name is there already) and checks
// that the link is gone from where it was made, though its index was not
// known yet.
func TestStackRemovesLinkWhenMoveFails(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	for _, parent := range []netenv.Endpoint{v.Host, v.Peer} {
		where := "the caller's namespace"
		if parent.NS != nil {
			where = "a namespace"
		}
		t.Run("parent in "+where, func(t *testing.T) {
			h, err := netlink.NewHandle()
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if parent.NS != nil {
				h = parent.NS.Handle()
			}
			target := testenv.NewNetns(t)
			name := netenv.RandomName("afxt")
			la := netlink.NewLinkAttrs()
			la.Name = name
			if err := target.Handle().LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: netenv.RandomName("afxt")}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { // in case the test fails
				if l, err := h.LinkByName(name); err == nil {
					h.LinkDel(l)
				}
			})

			la = netlink.NewLinkAttrs()
			la.Name = name
			la.ParentIndex = parent.Index
			mv := &netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}
			l, err := netenv.Stack(parent, mv, target, netip.Prefix{}, "macvlan")
			if err == nil {
				l.Close()
				t.Fatal("stack succeeded though the target namespace has a link of the same name")
			}
			if !errors.Is(err, unix.EEXIST) {
				t.Errorf("stack: %v; want EEXIST", err)
			}
			t.Log(err)
			if l, err := h.LinkByName(name); err == nil {
				t.Errorf("macvlan %s (index %d) left in %s after the failed move", name, l.Attrs().Index, where)
			}
		})
	}
}

func TestClosedNetnsFailsInsteadOfUsingCallersNamespace(t *testing.T) {
	testenv.RequirePrivileged(t)
	// The caller's namespace, where nothing may be made, is one of the
	// test's own (the constructors below run in it), so that a link
	// another test makes meanwhile is not counted as made here.
	home := testenv.NewNetns(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{HostNS: home})
	ns := closedNetns(t)

	if h, err := ns.Netlink(); !errors.Is(err, net.ErrClosed) || h != nil {
		t.Errorf("Netlink after Close = %v, %v; want nil and net.ErrClosed", h, err)
	}
	ran := false
	if err := ns.Do(func() error { ran = true; return nil }); !errors.Is(err, net.ErrClosed) || ran {
		t.Errorf("Do after Close = %v (fn ran: %v); want net.ErrClosed, fn not run", err, ran)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("Handle after Close did not panic")
			}
		}()
		ns.Handle().LinkByName(v.Host.Name)
	}()

	// A parent said to be in the closed namespace, whose index is that of
	// a link in ours: nothing may be made on our link.
	parent := netenv.Endpoint{Name: v.Host.Name, Index: v.Host.Index, NS: ns}
	ours := netenv.Endpoint{Name: v.Host.Name, Index: v.Host.Index, MAC: v.Host.MAC} // in the caller's namespace
	before := linkNames(t, home.Handle().LinkList, "")
	home.Do(func() error { makeNothing(t, parent, ours, ns); return nil })
	for n := range linkNames(t, home.Handle().LinkList, "") {
		if !before[n] {
			t.Errorf("link %s made in the caller's namespace", n)
		}
	}
}

// makeNothing tries to make links on parent, which is in the closed
// namespace ns, and on ours into ns; each must fail with net.ErrClosed.
// It reports with t.Errorf only, since it runs on a thread in another
// namespace.
func makeNothing(t *testing.T, parent, ours netenv.Endpoint, ns *netenv.Netns) {
	if l, err := netenv.NewMacvlan(parent, nil); !errors.Is(err, net.ErrClosed) {
		if l != nil {
			l.Close()
		}
		t.Errorf("NewMacvlan on a parent in a closed namespace: %v; want net.ErrClosed", err)
	}
	if l, err := netenv.NewIPVlan(parent, nil); !errors.Is(err, net.ErrClosed) {
		if l != nil {
			l.Close()
		}
		t.Errorf("NewIPVlan on a parent in a closed namespace: %v; want net.ErrClosed", err)
	}
	if l, err := netenv.NewMacvlan(ours, &netenv.MacvlanOptions{NS: ns}); !errors.Is(err, net.ErrClosed) {
		if l != nil {
			l.Close()
		}
		t.Errorf("NewMacvlan into a closed namespace: %v; want net.ErrClosed", err)
	}
}

// TestLinkCloseAfterItsNamespace closes a macvlan's namespace first: the
// link went with it, and Close says nothing more.
func TestLinkCloseAfterItsNamespace(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	ns, err := netenv.NewNetns("")
	if err != nil {
		t.Fatal(err)
	}
	l, err := netenv.NewMacvlan(v.Host, &netenv.MacvlanOptions{NS: ns})
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close of a link whose namespace is closed: %v", err)
	}
}

func TestStackedLinksRefuseBadOptions(t *testing.T) {
	testenv.RequirePrivileged(t)
	// The parent sits in a namespace of the test's own, where the links
	// are made, so that only this test's links are counted there.
	home := testenv.NewNetns(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{HostNS: home})
	v6 := netip.MustParsePrefix("fd00::1/64")
	before := linkNames(t, home.Handle().LinkList, "")
	for _, tc := range []struct {
		name  string
		make  func() (*netenv.Link, error)
		field string
	}{
		{"macvlan ipv6 addr", func() (*netenv.Link, error) {
			return netenv.NewMacvlan(v.Host, &netenv.MacvlanOptions{Addr: v6})
		}, "Addr"},
		{"macvlan mode", func() (*netenv.Link, error) {
			return netenv.NewMacvlan(v.Host, &netenv.MacvlanOptions{Mode: netlink.MACVLAN_MODE_SOURCE + 1})
		}, "Mode"},
		{"macvlan no parent index", func() (*netenv.Link, error) {
			return netenv.NewMacvlan(netenv.Endpoint{Name: v.Host.Name, NS: home}, nil)
		}, "parent index"},
		{"ipvlan ipv6 addr", func() (*netenv.Link, error) {
			return netenv.NewIPVlan(v.Host, &netenv.IPVlanOptions{Addr: v6})
		}, "Addr"},
		{"ipvlan mode", func() (*netenv.Link, error) {
			return netenv.NewIPVlan(v.Host, &netenv.IPVlanOptions{Mode: netlink.IPVLAN_MODE_MAX})
		}, "Mode"},
		{"vxlan ipv6 addr", func() (*netenv.Link, error) {
			return netenv.NewVXLAN(v.Host, &netenv.VXLANOptions{Remote: v.Peer.IP(), Addr: v6})
		}, "Addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tc.make()
			if l != nil {
				l.Close()
				t.Fatal("succeeded")
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("%v; want an error naming %s", err, tc.field)
			}
		})
	}
	for n := range linkNames(t, home.Handle().LinkList, "") {
		if !before[n] {
			t.Errorf("link %s left behind", n)
		}
	}
}

// A namespace name is one file name under /var/run/netns: a name that would
// put the mount anywhere else is refused before anything is made.
func TestNewNetnsRefusesBadNames(t *testing.T) {
	testenv.RequirePrivileged(t)
	escape := netenv.RandomName("afxn")
	for _, name := range []string{"../" + escape, "a/b", ".", "..", "x\x00y"} {
		ns, err := netenv.NewNetns(name)
		if err == nil {
			t.Errorf("NewNetns(%q) succeeded, path %s", name, ns.Path())
			ns.Close()
			continue
		}
		if !strings.Contains(err.Error(), "name") {
			t.Errorf("NewNetns(%q): %v; want an error about the name", name, err)
		}
	}
	if _, err := os.Stat("/var/run/" + escape); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/var/run/%s made outside /var/run/netns (%v)", escape, err)
		os.Remove("/var/run/" + escape)
	}
}

// TestVethCarriesFirstFrame: a frame sent the moment NewVeth returns
// reaches the peer. Setting the pair up only schedules the kernel's
// activation of its transmit path; a frame sent before that was dropped
// (tx_dropped) without an error to the sender.
func TestVethCarriesFirstFrame(t *testing.T) {
	testenv.RequirePrivileged(t)
	a := testenv.NewNetns(t)
	frame := make([]byte, 60)
	for i := range 20 {
		v, err := netenv.NewVeth(&netenv.VethOptions{HostNS: a})
		if err != nil {
			t.Fatal(err)
		}
		copy(frame[0:6], v.Peer.MAC)
		copy(frame[6:12], v.Host.MAC)
		frame[12], frame[13] = 0x88, 0xb5 // local experimental ethertype
		err = v.Host.Do(func() error {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			to := &unix.SockaddrLinklayer{Ifindex: v.Host.Index, Halen: 6}
			copy(to.Addr[:], v.Peer.MAC)
			return unix.Sendto(fd, frame, 0, to)
		})
		if err != nil {
			v.Close()
			t.Fatalf("send: %v", err)
		}
		host, herr := a.Handle().LinkByIndex(v.Host.Index)
		peer, perr := v.Peer.NS.Handle().LinkByIndex(v.Peer.Index)
		if herr != nil || perr != nil {
			v.Close()
			t.Fatal(herr, perr)
		}
		hs, ps := host.Attrs().Statistics, peer.Attrs().Statistics
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		if hs.TxDropped != 0 || ps.RxPackets != 1 {
			t.Fatalf("pair %d: the frame sent right after NewVeth: host end tx_dropped %d, peer received %d packets", i, hs.TxDropped, ps.RxPackets)
		}
	}
}

// TestVXLANSameVNIAndPortTwice makes two VXLAN devices with the default VNI
// and port in one namespace, as tests running side by side in the caller's
// namespace do: the kernel refuses the second with EEXIST, which for a
// device of a random name must be explained as the VNI and port being
// taken, and nothing may be left behind.
func TestVXLANSameVNIAndPortTwice(t *testing.T) {
	testenv.RequirePrivileged(t)
	home := testenv.NewNetns(t)
	v1 := testenv.NewVeth(t, &netenv.VethOptions{HostNS: home})
	v2 := testenv.NewVeth(t, &netenv.VethOptions{HostNS: home})
	l1, err := netenv.NewVXLAN(v1.Host, &netenv.VXLANOptions{Remote: v1.Peer.IP()})
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	before := linkNames(t, home.Handle().LinkList, "")
	l2, err := netenv.NewVXLAN(v2.Host, &netenv.VXLANOptions{Remote: v2.Peer.IP()})
	if err == nil {
		l2.Close()
		t.Fatal("a second VXLAN device with the same VNI and port in one namespace was made")
	}
	t.Log(err)
	if !errors.Is(err, unix.EEXIST) {
		t.Errorf("NewVXLAN: %v; want it to wrap EEXIST", err)
	}
	for _, want := range []string{"VNI 42", "Port 4789"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NewVXLAN: %v; want an error naming %s", err, want)
		}
	}
	for n := range linkNames(t, home.Handle().LinkList, "") {
		if !before[n] {
			t.Errorf("link %s left behind", n)
		}
	}
	// Another VNI is free.
	l3, err := netenv.NewVXLAN(v2.Host, &netenv.VXLANOptions{VNI: 43, Remote: v2.Peer.IP()})
	if err != nil {
		t.Fatalf("VNI 43 beside VNI 42: %v", err)
	}
	if err := l3.Close(); err != nil {
		t.Error(err)
	}
}

// TestRandomSubnetAvoidsSubnetsInUse fills a namespace with routes for all
// of 10.0.0.0/8 but one /24 and checks that RandomSubnet, there, and
// NewVeth, with its host end there, take that /24: a subnet in use, by
// the host or by a veth of a test running beside, would take traffic to
// the wrong link.
func TestRandomSubnetAvoidsSubnetsInUse(t *testing.T) {
	ns := testenv.NewNetns(t)
	free := netip.MustParsePrefix("10.150.7.0/24")
	// 10.0.0.0/8 but free is the sibling of free's /b prefix for each
	// b from 9 to 24.
	for b := 9; b <= 24; b++ {
		a := free.Addr().As4()
		a[(b-1)/8] ^= 1 << (7 - (b-1)%8)
		dst := netip.PrefixFrom(netip.AddrFrom4(a), b).Masked()
		r := &netlink.Route{Type: unix.RTN_BLACKHOLE, Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(b, 32)}}
		if err := ns.Handle().RouteAdd(r); err != nil {
			t.Fatalf("add route %s: %v", dst, err)
		}
	}

	netenv.ForgetSubnets()
	v, err := netenv.NewVeth(&netenv.VethOptions{HostNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if got := v.Host.Addr.Masked(); got != free {
		t.Errorf("NewVeth with its host end in a namespace where only %s is free: subnet %s", free, got)
	}

	netenv.ForgetSubnets()
	var got netip.Prefix
	if err := ns.Do(func() error { got = netenv.RandomSubnet(); return nil }); err != nil {
		t.Fatal(err)
	}
	if got != free {
		t.Errorf("RandomSubnet in a namespace where only %s is free = %s", free, got)
	}
}

// TestRandomSubnetNotTwice checks that RandomSubnet does not return a
// subnet twice in a row, before the first one is on a link.
func TestRandomSubnetNotTwice(t *testing.T) {
	seen := map[netip.Prefix]bool{}
	for range 500 {
		p := netenv.RandomSubnet()
		if seen[p] {
			t.Fatalf("RandomSubnet returned %s twice", p)
		}
		seen[p] = true
	}
}

// TestNetnsString names a named namespace by its name and an anonymous
// one as such, so that the errors of Do ("in netns %s") read well.
func TestNetnsString(t *testing.T) {
	testenv.RequirePrivileged(t)
	anon := testenv.NewNetns(t)
	if s := anon.String(); !strings.HasPrefix(s, "(anonymous, fd ") || !strings.HasSuffix(s, ")") {
		t.Errorf("anonymous namespace: String() = %q, want (anonymous, fd N)", s)
	}
	name := netenv.RandomName("afxstr")
	named, err := netenv.NewNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	if s := named.String(); s != name {
		t.Errorf("named namespace: String() = %q, want %q", s, name)
	}
}
