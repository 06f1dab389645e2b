package cni_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/afxdp/afxdp/internal/cni"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

func requireCNI(t *testing.T) {
	t.Helper()
	testenv.RequirePrivileged(t)
	for _, p := range []string{"ptp", "bridge", "macvlan", "ipvlan", "host-local"} {
		if _, err := os.Stat(filepath.Join(cni.DefaultPluginDir, p)); err != nil {
			if os.Getenv(testenv.RequireEnv) == "1" {
				t.Fatalf("CNI plugin missing (run .ci/deps.sh): %v", err)
			}
			t.Skipf("CNI plugin missing (apt-get install containernetworking-plugins): %v", err)
		}
	}
}

func readForward(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func linkExists(h *netlink.Handle, name string) bool {
	_, err := h.LinkByName(name)
	return err == nil
}

// exchange sends a datagram from the client side to a UDP echo socket in
// the server namespace at addr and checks that the echo comes back.
func exchange(t *testing.T, client, server func(func() error) error, addr netip.Addr) {
	t.Helper()
	var srv *net.UDPConn
	if err := server(func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: addr.AsSlice()})
		return err
	}); err != nil {
		t.Fatalf("listen in the container namespace on %s: %v", addr, err)
	}
	defer srv.Close()
	srvErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, from, err := srv.ReadFromUDP(buf)
		if err == nil {
			_, err = srv.WriteToUDP(append([]byte("pong:"), buf[:n]...), from)
		}
		srvErr <- err
	}()

	var cl *net.UDPConn
	if err := client(func() (err error) {
		cl, err = net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	cl.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, err := cl.Read(buf)
	if err != nil {
		t.Fatalf("no echo from %s: %v (server: %v)", srv.LocalAddr(), err, <-srvErr)
	}
	if got := string(buf[:n]); got != "pong:ping" {
		t.Errorf("echo %q, want pong:ping", got)
	}
	if err := <-srvErr; err != nil {
		t.Error(err)
	}
}

func hostDo(fn func() error) error { return fn() }

// checkInside checks that the interface is in the namespace with the
// attachment's address and MAC.
func checkInside(t *testing.T, ns *netenv.Netns, a *cni.Attachment) {
	t.Helper()
	l, err := ns.Handle().LinkByName(a.IfName)
	if err != nil {
		t.Fatalf("interface %s not in the namespace: %v", a.IfName, err)
	}
	if a.MAC != nil && l.Attrs().HardwareAddr.String() != a.MAC.String() {
		t.Errorf("MAC %s, result says %s", l.Attrs().HardwareAddr, a.MAC)
	}
	addrs, err := ns.Handle().AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, ad := range addrs {
		p, _ := netip.AddrFromSlice(ad.IP.To4())
		ones, _ := ad.Mask.Size()
		if netip.PrefixFrom(p, ones) == a.Addr {
			found = true
		}
	}
	if !found {
		t.Errorf("%s has addresses %v, want %s", a.IfName, addrs, a.Addr)
	}
}

// checkGone checks what Close must have removed.
func checkGone(t *testing.T, ns *netenv.Netns, a *cni.Attachment, hostLinks []string, forward string) {
	t.Helper()
	if linkExists(ns.Handle(), a.IfName) {
		t.Errorf("%s still in the namespace after Close", a.IfName)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, n := range hostLinks {
		if n != "" && linkExists(h, n) {
			t.Errorf("host link %s left after Close", n)
		}
	}
	if got := readForward(t); got != forward {
		t.Errorf("ip_forward %s after Close, want %s as before", got, forward)
	}
	if _, err := os.Stat(a.IPAMDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("IPAM dir %s left after Close (%v)", a.IPAMDir, err)
	}
}

// checkIPAM checks that host-local recorded the address for the container.
func checkIPAM(t *testing.T, a *cni.Attachment) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.IPAMDir, cni.NetworkName, a.Addr.Addr().String()))
	if err != nil || !strings.Contains(string(b), a.ContainerID) {
		t.Errorf("host-local reservation of %s: %q, %v; want it to name %s", a.Addr, b, err, a.ContainerID)
	}
}

func TestAttachPTP(t *testing.T) {
	requireCNI(t)
	ns := testenv.NewNamedNetns(t, netenv.RandomName("afxc"))
	forward := readForward(t)
	subnet := netenv.RandomSubnet()
	a, err := cni.Attach(context.Background(), cni.Config{Plugin: "ptp", Subnet: subnet, NetnsPath: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if !subnet.Contains(a.Addr.Addr()) || a.IfName != "eth0" || a.HostIf == "" {
		t.Errorf("attachment %+v: want eth0 in %s with a host veth", a, subnet)
	}
	checkInside(t, ns, a)
	checkIPAM(t, a)
	if readForward(t) != "1" {
		t.Error("ptp did not turn ip_forward on; the restore test proves nothing")
	}
	exchange(t, hostDo, ns.Do, a.Addr.Addr())
	host := a.HostIf
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checkGone(t, ns, a, []string{host}, forward)
}

func TestAttachBridge(t *testing.T) {
	requireCNI(t)
	ns := testenv.NewNamedNetns(t, netenv.RandomName("afxc"))
	forward := readForward(t)
	subnet := netenv.RandomSubnet()
	a, err := cni.Attach(context.Background(), cni.Config{
		Plugin: "bridge", Subnet: subnet, NetnsPath: ns.Path(), IfName: "net1",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if a.Bridge == "" || a.HostIf == "" || a.IfName != "net1" {
		t.Errorf("attachment %+v: want a bridge, a host veth, net1", a)
	}
	if want := subnet.Addr().Next(); a.Gateway != want {
		t.Errorf("gateway %s, want %s", a.Gateway, want)
	}
	if !linkExists(mustHandle(t), a.Bridge) {
		t.Fatalf("bridge %s not made", a.Bridge)
	}
	checkInside(t, ns, a)
	checkIPAM(t, a)
	// The host reaches the container through the bridge's gateway address.
	exchange(t, hostDo, ns.Do, a.Addr.Addr())
	links := []string{a.Bridge, a.HostIf}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	checkGone(t, ns, a, links, forward)
}

func TestAttachMacvlan(t *testing.T) {
	requireCNI(t)
	ns := testenv.NewNamedNetns(t, netenv.RandomName("afxc"))
	forward := readForward(t)
	subnet := netenv.RandomSubnet()
	// The master is a veth end in this namespace; its peer, in another
	// namespace, is the container's neighbour on the same link.
	v := testenv.NewVeth(t, &netenv.VethOptions{NoAddr: true})
	peerAddr := netip.PrefixFrom(netip.AddrFrom4([4]byte{subnet.Addr().As4()[0], subnet.Addr().As4()[1], subnet.Addr().As4()[2], 254}), 24)
	addPeerAddr(t, v, peerAddr)

	a, err := cni.Attach(context.Background(), cni.Config{
		Plugin: "macvlan", Master: v.Host.Name, Subnet: subnet, NetnsPath: ns.Path(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if a.HostIf != "" || a.MAC == nil {
		t.Errorf("attachment %+v: want no host interface and a MAC", a)
	}
	checkInside(t, ns, a)
	checkIPAM(t, a)
	exchange(t, v.Peer.Do, ns.Do, a.Addr.Addr())
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	checkGone(t, ns, a, nil, forward)
	if !linkExists(mustHandle(t), v.Host.Name) {
		t.Errorf("master %s removed by Close", v.Host.Name)
	}
}

func TestAttachIPVlan(t *testing.T) {
	requireCNI(t)
	ns := testenv.NewNamedNetns(t, netenv.RandomName("afxc"))
	subnet := netenv.RandomSubnet()
	v := testenv.NewVeth(t, &netenv.VethOptions{NoAddr: true})
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "afxdp-cni-ipam-*"))
	a, err := cni.Attach(context.Background(), cni.Config{
		Plugin: "ipvlan", Master: v.Host.Name, Subnet: subnet, NetnsPath: ns.Path(),
	})
	if err == nil {
		// A kernel with ipvlan: the attachment must work like macvlan.
		defer a.Close()
		peerAddr := netip.PrefixFrom(netip.AddrFrom4([4]byte{subnet.Addr().As4()[0], subnet.Addr().As4()[1], subnet.Addr().As4()[2], 254}), 24)
		addPeerAddr(t, v, peerAddr)
		checkInside(t, ns, a)
		exchange(t, v.Peer.Do, ns.Do, a.Addr.Addr())
		return
	}
	if !errors.Is(err, netenv.ErrNotSupported) || !strings.Contains(err.Error(), "CONFIG_IPVLAN") {
		t.Fatalf("Attach ipvlan: %v; want ErrNotSupported naming CONFIG_IPVLAN", err)
	}
	var perr *cni.Error
	if !errors.As(err, &perr) || perr.Plugin != "ipvlan" || perr.Command != "ADD" {
		t.Errorf("error %v does not carry the plugin's ADD error", err)
	}
	t.Log(err)
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "afxdp-cni-ipam-*"))
	if len(after) > len(before) {
		t.Errorf("failed Attach left IPAM dirs: %v (before %v)", after, before)
	}
	if linkExists(ns.Handle(), "eth0") {
		t.Error("failed Attach left eth0 in the namespace")
	}
}

func TestAttachValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  cni.Config
		want string
	}{
		{"plugin", cni.Config{Plugin: "vxlan", NetnsPath: "/proc/self/ns/net"}, "Plugin"},
		{"netns", cni.Config{Plugin: "ptp"}, "NetnsPath"},
		{"netnsmissing", cni.Config{Plugin: "ptp", NetnsPath: "/var/run/netns/afxdp-none"}, "NetnsPath"},
		{"netnsnotnetns", cni.Config{Plugin: "ptp", NetnsPath: "/proc/self/exe"}, "not a network namespace"},
		{"master", cni.Config{Plugin: "macvlan", NetnsPath: "/proc/self/ns/net"}, "Master"},
		{"ifname", cni.Config{Plugin: "ptp", NetnsPath: "/proc/self/ns/net", IfName: "a/b"}, "IfName"},
		{"subnet", cni.Config{Plugin: "ptp", NetnsPath: "/proc/self/ns/net", Subnet: netip.MustParsePrefix("fd00::/64")}, "Subnet"},
		{"plugindir", cni.Config{Plugin: "ptp", NetnsPath: "/proc/self/ns/net", PluginDir: "/nonexistent"}, "containernetworking-plugins"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cni.Attach(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Attach: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func addPeerAddr(t *testing.T, v *netenv.Veth, p netip.Prefix) {
	t.Helper()
	h := v.Peer.NS.Handle()
	l, err := h.LinkByName(v.Peer.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}); err != nil {
		t.Fatal(err)
	}
}

func mustHandle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// Two attachments on one bridge that the first Attach made: closing the
// first must leave the bridge to the second, whose veth is still a port of
// it; closing the second removes it.
func TestAttachSharedBridge(t *testing.T) {
	requireCNI(t)
	host := forwardHost(t)
	br := netenv.RandomName("afxb")
	subnet := netenv.RandomSubnet()
	a := attachIn(t, host, cni.Config{Plugin: "bridge", Bridge: br, Subnet: subnet})
	b := attachIn(t, host, cni.Config{Plugin: "bridge", Bridge: br, Subnet: subnet})
	h := host.Handle()
	closeIn(t, host, a)
	l, err := h.LinkByName(b.HostIf)
	if err != nil {
		t.Fatalf("second attachment's host veth %s: %v", b.HostIf, err)
	}
	bl, err := h.LinkByName(br)
	if err != nil {
		t.Fatalf("bridge %s deleted by the first Close while the second attachment uses it: %v", br, err)
	}
	if l.Attrs().MasterIndex != bl.Attrs().Index {
		t.Errorf("%s is no longer a port of %s", b.HostIf, br)
	}
	closeIn(t, host, b)
	if linkExists(h, br) {
		t.Errorf("bridge %s left after both attachments closed", br)
	}
}

// A second Attach with an interface name the namespace already has fails,
// and its clean-up (DEL, which the plugins run by interface name) must not
// remove the first attachment's interface.
func TestAttachIfNameInUse(t *testing.T) {
	requireCNI(t)
	for _, plugin := range []string{"ptp", "bridge"} {
		t.Run(plugin, func(t *testing.T) {
			host := forwardHost(t)
			ns := testenv.NewNamedNetns(t, netenv.RandomName("afxc"))
			var first *cni.Attachment
			if err := host.Do(func() (err error) {
				first, err = cni.Attach(context.Background(), cni.Config{Plugin: plugin, NetnsPath: ns.Path()})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { host.Do(first.Close) })
			var second *cni.Attachment
			err := host.Do(func() (err error) {
				second, err = cni.Attach(context.Background(), cni.Config{Plugin: plugin, NetnsPath: ns.Path()})
				return err
			})
			if err == nil {
				host.Do(second.Close)
				t.Fatal("second Attach with the same IfName succeeded")
			}
			if !strings.Contains(err.Error(), "IfName") {
				t.Errorf("second Attach: %v; want an error naming IfName", err)
			}
			t.Log(err)
			checkInside(t, ns, first)
			if !linkExists(host.Handle(), first.HostIf) {
				t.Errorf("first attachment's host veth %s removed by the failed Attach", first.HostIf)
			}
		})
	}
}

// A Master that does not exist is named in the error. The plugins say
// only "Link not found", and their DEL after the failed ADD fails the same
// way, adding a second error.
func TestAttachMissingMaster(t *testing.T) {
	requireCNI(t)
	for _, plugin := range []string{"macvlan", "ipvlan"} {
		t.Run(plugin, func(t *testing.T) {
			ns := testenv.NewNetns(t)
			master := netenv.RandomName("afxm")
			a, err := cni.Attach(context.Background(), cni.Config{Plugin: plugin, Master: master, NetnsPath: ns.Path()})
			if err == nil {
				a.Close()
				t.Fatalf("Attach with a missing Master %s: no error", master)
			}
			t.Log(err)
			if want := fmt.Sprintf("Master %q: no such link", master); !strings.Contains(err.Error(), want) {
				t.Errorf("Attach with a missing Master: %v; want an error containing %q", err, want)
			}
			if strings.Contains(err.Error(), "DEL") {
				t.Errorf("Attach with a missing Master ran the plugin: %v", err)
			}
		})
	}
}

// failingIPAM makes a plugin directory holding the real ptp, bridge and
// macvlan plugins and a host-local that fails DEL, and ADD too when
// failAdd: the plugins release the address before they delete the
// interface, so such a DEL stops before the interface goes.
func failingIPAM(t *testing.T, failAdd bool) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{"ptp", "bridge", "macvlan"} {
		if err := os.Symlink(filepath.Join(cni.DefaultPluginDir, p), filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	fail := `echo '{"cniVersion":"1.0.0","code":11,"msg":"injected IPAM failure"}'; exit 1`
	script := "#!/bin/sh\ncase \"$CNI_COMMAND\" in\nDEL) " + fail + " ;;\n"
	if failAdd {
		script += "ADD) " + fail + " ;;\n"
	}
	script += "esac\nexec " + filepath.Join(cni.DefaultPluginDir, "host-local") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "host-local"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// When DEL fails, the interface that ADD made is removed all the same, by
// a failed Attach and by Close, and the DEL's error is returned: by Close,
// to one of the Closes called at the same time, and not again by a later
// one.
func TestFailedDELLeavesNoInterface(t *testing.T) {
	requireCNI(t)
	for _, plugin := range []string{"ptp", "bridge", "macvlan"} {
		for _, failAdd := range []bool{true, false} {
			name := plugin + "/close"
			if failAdd {
				name = plugin + "/attach"
			}
			t.Run(name, func(t *testing.T) {
				dir := failingIPAM(t, failAdd)
				host := forwardHost(t)
				v := testenv.NewVeth(t, &netenv.VethOptions{HostNS: host, NoAddr: true})
				ns := testenv.NewNetns(t)
				before, err := host.Handle().LinkList()
				if err != nil {
					t.Fatal(err)
				}
				var a *cni.Attachment
				err = host.Do(func() (err error) {
					a, err = cni.Attach(context.Background(), cni.Config{
						Plugin: plugin, Master: v.Host.Name, NetnsPath: ns.Path(), PluginDir: dir,
					})
					return err
				})
				if failAdd {
					if err == nil {
						host.Do(a.Close)
						t.Fatal("Attach with an IPAM plugin that fails ADD: no error")
					}
				} else {
					if err != nil {
						t.Fatal(err)
					}
					if !linkExists(ns.Handle(), a.IfName) {
						t.Fatalf("%s not made", a.IfName)
					}
					err = testenv.FailsOnce(t, "Close", 8, func() error { return host.Do(a.Close) })
				}
				t.Log(err)
				if err == nil || !strings.Contains(err.Error(), "DEL: injected IPAM failure") {
					t.Errorf("error %v, want one naming the failed DEL", err)
				}
				if linkExists(ns.Handle(), "eth0") {
					t.Error("eth0 left in the namespace after the failed DEL")
				}
				after, err := host.Handle().LinkList()
				if err != nil {
					t.Fatal(err)
				}
				if len(after) != len(before) {
					t.Errorf("host namespace has %d links after, %d before", len(after), len(before))
				}
				if got := forwardIn(t, host); got != "0" {
					t.Errorf("ip_forward %s after, want 0 as before", got)
				}
			})
		}
	}
}
