package matrix

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/afxdp/afxdp/internal/cni"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
)

// UDP ports of the measurements.
const (
	serverPort = 9000 // B's receiver and echo
	clientPort = 9001 // A's sender and client
	vxlanPort  = 4789
	vxlanVNI   = 42
)

// UnavailableError says a topology cannot be built on this machine (the
// kernel lacks a link type, a CNI plugin is missing). Its cells are marked
// unavailable with Reason instead of failing the run.
type UnavailableError struct {
	Reason string
	Err    error
}

func (e *UnavailableError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// teardownError is a failure to remove what a topology was built of.
type teardownError struct{ err error }

func (e *teardownError) Error() string { return "tear down: " + e.err.Error() }
func (e *teardownError) Unwrap() error { return e.err }

// topo is one topology built between namespace A (the sender, client) and
// namespace B (the receiver, echo), with the host namespace the plugins ran
// in. All namespaces are anonymous: the kernel removes them, with their
// links and the XDP programs attached there, when the process ends, however
// it ends. Close removes them at once.
type topo struct {
	name string
	// nss are the namespaces by role, for counters: "A", "B", "host",
	// "wire" (where frames from outside come from).
	nss  map[string]*netenv.Netns
	A, B netenv.Endpoint
	// aNext is the MAC address A sends frames for B to (B itself, or the
	// gateway on routed topologies).
	aNext net.HardwareAddr

	// How pktgen feeds B: it sends gen frames out of genAt; passSinks
	// are veth ends on the way that need an XDP program for frames sent
	// with XDP to be taken in (a pass-through one is attached for rx).
	genAt     netenv.Endpoint
	genWhere  string
	genSrcMAC net.HardwareAddr
	genDstMAC net.HardwareAddr
	genSrcIP  netip.Addr
	passSinks []netenv.Endpoint
	// genSender replaces pktgen with an AF_PACKET sender in A; genWhere
	// then says why.
	genSender bool
	// underlay endpoints, for VXLAN: generated frames are encapsulated.
	vxlanOuter *[2]netenv.Endpoint

	// roles name the links by what they are in the topology ("B's veth"),
	// keyed by namespace role and link name: link names are random, and
	// counters named after them could not be compared across runs.
	roles map[string]string

	closers []func() error
}

// role names ep's link for counters.
func (t *topo) role(ep netenv.Endpoint, name string) {
	for r, ns := range t.nss {
		if ns == ep.NS {
			t.roles[r+"/"+ep.Name] = name
		}
	}
}

func (t *topo) Close() error {
	var errs []error
	for i := len(t.closers) - 1; i >= 0; i-- {
		errs = append(errs, t.closers[i]())
	}
	t.closers = nil
	return errors.Join(errs...)
}

func (t *topo) newNS(role string) (*netenv.Netns, error) {
	ns, err := netenv.NewNetns("")
	if err != nil {
		return nil, err
	}
	t.nss[role] = ns
	t.closers = append(t.closers, ns.Close)
	return ns, nil
}

// build makes topology name. On failure it removes what it made; a
// topology the machine cannot have gives an *UnavailableError.
func build(ctx context.Context, name, pluginDir string) (_ *topo, err error) {
	t := &topo{name: name, nss: map[string]*netenv.Netns{}, roles: map[string]string{}}
	defer func() {
		if err != nil {
			err = fmt.Errorf("build %s: %w", name, err)
			if cerr := t.Close(); cerr != nil {
				err = errors.Join(err, &teardownError{cerr})
			}
		}
	}()
	a, err := t.newNS("A")
	if err != nil {
		return nil, err
	}
	b, err := t.newNS("B")
	if err != nil {
		return nil, err
	}
	switch name {
	case "veth":
		v, err := netenv.NewVeth(&netenv.VethOptions{HostNS: a, PeerNS: b})
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, v.Close)
		t.A, t.B = v.Host, v.Peer
		t.role(t.A, "A's veth")
		t.role(t.B, "B's veth")
		t.aNext = t.B.MAC
		t.gen(t.A, "A's veth end", t.A.MAC, t.B.MAC, t.A.IP())
		t.passSinks = []netenv.Endpoint{t.B}
		return t, t.neighbours()
	case "ptp", "bridge":
		return t, t.buildPair(ctx, name, pluginDir)
	case "macvlan", "ipvlan-l2", "ipvlan-l3":
		return t, t.buildStacked(ctx, name, pluginDir)
	case "vxlan":
		return t, t.buildVXLAN()
	}
	return nil, fmt.Errorf("unknown topology %q", name)
}

func (t *topo) gen(at netenv.Endpoint, where string, src, dst net.HardwareAddr, srcIP netip.Addr) {
	t.genAt, t.genWhere, t.genSrcMAC, t.genDstMAC, t.genSrcIP = at, where, src, dst, srcIP
}

// twoSubnets returns two different random /24s. Each CNI attachment has
// its own host-local store, so the two containers get addresses from
// different ranges; routes (the ones an orchestrator's default route would
// cover) join them.
func twoSubnets() (netip.Prefix, netip.Prefix) {
	for {
		x, y := netenv.RandomSubnet(), netenv.RandomSubnet()
		if x != y {
			return x, y
		}
	}
}

// attach runs a CNI plugin for ns from inside the host namespace (the
// plugin is a child process of a thread that is in it), and arranges for
// DEL to run there too.
func (t *topo) attach(ctx context.Context, ns *netenv.Netns, c cni.Config) (*cni.Attachment, netenv.Endpoint, error) {
	host := t.nss["host"]
	c.NetnsPath = ns.Path()
	var att *cni.Attachment
	err := host.Do(func() error {
		var err error
		att, err = cni.Attach(ctx, c)
		return err
	})
	if err != nil {
		var ep netenv.Endpoint
		if errors.Is(err, netenv.ErrNotSupported) {
			return nil, ep, &UnavailableError{Reason: "not available: kernel built without CONFIG_" + configName(c.Plugin), Err: err}
		}
		if errors.Is(err, os.ErrNotExist) && strings.Contains(err.Error(), "find plugin") {
			// The plugin, or the host-local IPAM plugin it needs.
			missing := c.Plugin
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
				missing = filepath.Base(pe.Path)
			}
			return nil, ep, &UnavailableError{Reason: "not available: CNI plugin " + missing + " not installed (containernetworking-plugins)", Err: err}
		}
		return nil, ep, err
	}
	t.closers = append(t.closers, func() error { return host.Do(att.Close) })
	l, err := ns.Handle().LinkByName(att.IfName)
	if err != nil {
		return nil, netenv.Endpoint{}, fmt.Errorf("find %s made by cni %s: %w", att.IfName, c.Plugin, err)
	}
	ep := netenv.Endpoint{Name: att.IfName, Index: l.Attrs().Index, MAC: l.Attrs().HardwareAddr, Addr: att.Addr, NS: ns}
	if err := ep.Do(func() error { return disableIPv6(ep.Name) }); err != nil {
		return nil, ep, err
	}
	return att, ep, nil
}

func configName(plugin string) string {
	switch plugin {
	case "ipvlan":
		return "IPVLAN"
	case "macvlan":
		return "MACVLAN"
	case "bridge":
		return "BRIDGE"
	}
	return strings.ToUpper(plugin)
}

// disableIPv6 keeps the kernel from sending router solicitations and MLD
// reports that would show in the counters.
func disableIPv6(ifname string) error {
	p := filepath.Join("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
	if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable ipv6 on %s: %w", ifname, err)
	}
	return nil
}

// buildPair builds ptp or bridge: a veth pair per container with its host
// end in the host namespace.
func (t *topo) buildPair(ctx context.Context, plugin, dir string) error {
	if _, err := t.newNS("host"); err != nil {
		return err
	}
	sa, sb := twoSubnets()
	br := ""
	if plugin == "bridge" {
		// One L2 segment, one subnet: the bridge plugin refuses a
		// second gateway address on its bridge.
		br, sb = netenv.RandomName("mxbr"), sa
	}
	attA, A, err := t.attach(ctx, t.nss["A"], cni.Config{Plugin: plugin, Subnet: sa, Bridge: br, PluginDir: dir})
	if err != nil {
		return err
	}
	attB, B, err := t.attach(ctx, t.nss["B"], cni.Config{Plugin: plugin, Subnet: sb, Bridge: br, PluginDir: dir})
	if err != nil {
		return err
	}
	t.A, t.B = A, B
	host := t.nss["host"].Handle()
	hostEnd := func(att *cni.Attachment) (netenv.Endpoint, error) {
		l, err := host.LinkByName(att.HostIf)
		if err != nil {
			return netenv.Endpoint{}, fmt.Errorf("find host end %q of %s: %w", att.HostIf, att.IfName, err)
		}
		return netenv.Endpoint{Name: att.HostIf, Index: l.Attrs().Index, MAC: l.Attrs().HardwareAddr, NS: t.nss["host"]}, nil
	}
	hA, err := hostEnd(attA)
	if err != nil {
		return err
	}
	hB, err := hostEnd(attB)
	if err != nil {
		return err
	}
	t.role(A, "A's veth")
	t.role(B, "B's veth")
	t.role(hA, "host end of A's veth")
	t.role(hB, "host end of B's veth")
	if plugin == "ptp" {
		// Routed: each container reaches the other through its gateway,
		// the host end of its pair.
		gwA, gwB := attA.Gateway, attB.Gateway
		if !gwA.IsValid() || !gwB.IsValid() {
			return errors.New("ptp result has no gateway")
		}
		if err := addRoute(A, sb, gwA); err != nil {
			return err
		}
		if err := addRoute(B, sa, gwB); err != nil {
			return err
		}
		t.aNext = hA.MAC
		err = errors.Join(
			addNeigh(A, gwA, hA.MAC), addNeigh(B, gwB, hB.MAC),
			addNeigh(hA, A.IP(), A.MAC), addNeigh(hB, B.IP(), B.MAC))
		// Not pktgen: the host's forwarding rewrites the Ethernet
		// header and TTL of each live frame in place, and BPF_PROG_RUN
		// sends the recycled page again as it is, so most generated
		// frames came back addressed to B and the host dropped them
		// as otherhost.
		t.gen(A, "pktgen cannot feed a routed hop: forwarding rewrites its live frames in place", A.MAC, hA.MAC, A.IP())
		t.genSender = true
	} else {
		// Each attachment has its own host-local store, so both got
		// the subnet's first address: B moves to the next one.
		if B.Addr == A.Addr {
			next := netip.PrefixFrom(A.Addr.Addr().Next(), A.Addr.Bits())
			if err := readdress(&B, next); err != nil {
				return err
			}
			t.B = B
		}
		t.aNext = B.MAC
		err = t.neighbours()
		t.gen(A, "A's eth0, into the bridge", A.MAC, B.MAC, A.IP())
	}
	t.passSinks = []netenv.Endpoint{hA}
	return err
}

// buildStacked builds macvlan or ipvlan on a veth uplink in the host
// namespace, whose other end (in the "wire" namespace) plays the network
// outside: macvlan and ipvlan have no XDP transmit for pktgen to inject
// into, so receive measurements bring frames in through the uplink, as
// from a NIC.
func (t *topo) buildStacked(ctx context.Context, name, dir string) error {
	host, err := t.newNS("host")
	if err != nil {
		return err
	}
	wire, err := t.newNS("wire")
	if err != nil {
		return err
	}
	up, err := netenv.NewVeth(&netenv.VethOptions{HostNS: host, PeerNS: wire, NoAddr: true})
	if err != nil {
		return err
	}
	t.closers = append(t.closers, up.Close)
	plugin, mode := name, "bridge"
	if strings.HasPrefix(name, "ipvlan") {
		plugin, mode = "ipvlan", strings.TrimPrefix(name, "ipvlan-")
	}
	sa, sb := twoSubnets()
	_, A, err := t.attach(ctx, t.nss["A"], cni.Config{Plugin: plugin, Mode: mode, Master: up.Host.Name, Subnet: sa, PluginDir: dir})
	if err != nil {
		return err
	}
	_, B, err := t.attach(ctx, t.nss["B"], cni.Config{Plugin: plugin, Mode: mode, Master: up.Host.Name, Subnet: sb, PluginDir: dir})
	if err != nil {
		return err
	}
	t.A, t.B = A, B
	kind := strings.TrimSuffix(strings.TrimSuffix(name, "-l2"), "-l3")
	t.role(A, "A's "+kind)
	t.role(B, "B's "+kind)
	t.role(up.Host, "uplink veth, host end")
	t.role(up.Peer, "uplink veth, wire end")
	if err := addRoute(A, sb, netip.Addr{}); err != nil {
		return err
	}
	if err := addRoute(B, sa, netip.Addr{}); err != nil {
		return err
	}
	t.aNext = B.MAC
	t.gen(up.Peer, "the uplink, from the wire namespace", up.Peer.MAC, B.MAC, A.IP())
	t.passSinks = []netenv.Endpoint{up.Host}
	return t.neighbours()
}

// buildVXLAN builds a VXLAN device in each namespace over a veth underlay
// between them. The underlay's MTU is 1550 so that the overlay carries
// 1500-byte packets.
func (t *topo) buildVXLAN() error {
	a, b := t.nss["A"], t.nss["B"]
	u, err := netenv.NewVeth(&netenv.VethOptions{HostNS: a, PeerNS: b, MTU: 1550})
	if err != nil {
		return err
	}
	t.closers = append(t.closers, u.Close)
	overlay := netenv.RandomSubnet().Masked().Addr().As4()
	ip := func(last byte) netip.Prefix {
		x := overlay
		x[3] = last
		return netip.PrefixFrom(netip.AddrFrom4(x), 24)
	}
	mk := func(under, remote netenv.Endpoint, addr netip.Prefix) (*netenv.Link, error) {
		l, err := netenv.NewVXLAN(under, &netenv.VXLANOptions{VNI: vxlanVNI, Port: vxlanPort, Remote: remote.IP(), Addr: addr, MTU: 1500})
		if errors.Is(err, netenv.ErrNotSupported) {
			return nil, &UnavailableError{Reason: "not available: kernel built without CONFIG_VXLAN", Err: err}
		}
		if err != nil {
			return nil, err
		}
		t.closers = append(t.closers, l.Close)
		return l, nil
	}
	vA, err := mk(u.Host, u.Peer, ip(1))
	if err != nil {
		return err
	}
	vB, err := mk(u.Peer, u.Host, ip(2))
	if err != nil {
		return err
	}
	t.A, t.B = vA.Endpoint, vB.Endpoint
	t.role(t.A, "A's vxlan")
	t.role(t.B, "B's vxlan")
	t.role(u.Host, "A's underlay veth")
	t.role(u.Peer, "B's underlay veth")
	t.aNext = t.B.MAC
	t.gen(u.Host, "A's underlay veth end, VXLAN-encapsulated", t.A.MAC, t.B.MAC, t.A.IP())
	t.passSinks = []netenv.Endpoint{u.Peer}
	t.vxlanOuter = &[2]netenv.Endpoint{u.Host, u.Peer}
	return errors.Join(t.neighbours(),
		addNeigh(u.Host, u.Peer.IP(), u.Peer.MAC), addNeigh(u.Peer, u.Host.IP(), u.Host.MAC))
}

// neighbours adds permanent ARP entries for A and B on each other, so that
// no ARP exchange happens during a measurement.
func (t *topo) neighbours() error {
	return errors.Join(addNeigh(t.A, t.B.IP(), t.B.MAC), addNeigh(t.B, t.A.IP(), t.A.MAC))
}

func addNeigh(at netenv.Endpoint, ip netip.Addr, mac net.HardwareAddr) error {
	n := &netlink.Neigh{LinkIndex: at.Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: ip.AsSlice(), HardwareAddr: mac}
	var err error
	if at.NS != nil {
		err = at.NS.Handle().NeighSet(n)
	} else {
		err = netlink.NeighSet(n)
	}
	if err != nil {
		return fmt.Errorf("add neighbour %s on %s: %w", ip, at.Name, err)
	}
	return nil
}

// readdress replaces ep's IPv4 address with addr.
func readdress(ep *netenv.Endpoint, addr netip.Prefix) error {
	h := ep.NS.Handle()
	l, err := h.LinkByIndex(ep.Index)
	if err != nil {
		return fmt.Errorf("readdress %s: %w", ep.Name, err)
	}
	ipn := func(p netip.Prefix) *netlink.Addr {
		return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	}
	// Delete first: deleting a primary address takes its secondaries
	// with it unless promote_secondaries is set.
	if err := h.AddrDel(l, ipn(ep.Addr)); err != nil {
		return fmt.Errorf("readdress %s: delete %s: %w", ep.Name, ep.Addr, err)
	}
	if err := h.AddrAdd(l, ipn(addr)); err != nil {
		return fmt.Errorf("readdress %s: add %s: %w", ep.Name, addr, err)
	}
	ep.Addr = addr
	return nil
}

// addRoute adds a route to dst on ep's interface: through gw, or on-link
// when gw is zero.
func addRoute(ep netenv.Endpoint, dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{
		LinkIndex: ep.Index,
		Dst:       &net.IPNet{IP: dst.Masked().Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)},
	}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := ep.NS.Handle().RouteReplace(r); err != nil {
		return fmt.Errorf("add route to %s on %s: %w", dst, ep.Name, err)
	}
	return nil
}

// genFrame is the frame pktgen sends for a measurement at size: UDP from A
// to B's server port, VXLAN-encapsulated on the vxlan topology.
func (t *topo) genFrame(size int) ([]byte, error) {
	pl := payloadLen(size)
	inner := make([]byte, frameLen(size))
	packet.FillPayload(inner[packet.HeadersLen:], 0)
	u := packet.UDP{SrcMAC: t.genSrcMAC, DstMAC: t.genDstMAC, SrcIP: t.genSrcIP, DstIP: t.B.IP(),
		SrcPort: clientPort, DstPort: serverPort}
	if _, err := u.Write(inner, pl); err != nil {
		return nil, err
	}
	if t.vxlanOuter == nil {
		return inner, nil
	}
	ua, ub := t.vxlanOuter[0], t.vxlanOuter[1]
	const vxHdr = 8
	outer := make([]byte, packet.HeadersLen+vxHdr+len(inner))
	vx := outer[packet.HeadersLen:]
	vx[0] = 0x08 // I flag: the VNI is valid
	vx[4], vx[5], vx[6] = byte(vxlanVNI>>16), byte(vxlanVNI>>8), byte(vxlanVNI)
	copy(vx[vxHdr:], inner)
	o := packet.UDP{SrcMAC: ua.MAC, DstMAC: ub.MAC, SrcIP: ua.IP(), DstIP: ub.IP(), SrcPort: 49152, DstPort: vxlanPort}
	if _, err := o.Write(outer, vxHdr+len(inner)); err != nil {
		return nil, err
	}
	return outer, nil
}

// requestFrame is a UDP frame from A to B's server port as A's raw senders
// build it.
func (t *topo) requestFrame(buf []byte, payload int) (int, error) {
	u := packet.UDP{SrcMAC: t.A.MAC, DstMAC: t.aNext, SrcIP: t.A.IP(), DstIP: t.B.IP(),
		SrcPort: clientPort, DstPort: serverPort}
	return u.Write(buf, payload)
}

// linkCounters reads the counters of every link in the topology's
// namespaces, keyed by the link's role ("B's veth"); a link without one is
// named by its namespace and type ("host's bridge").
func (t *topo) linkCounters() (map[string]netlink.LinkStatistics, error) {
	out := map[string]netlink.LinkStatistics{}
	for _, nsRole := range slices.Sorted(maps.Keys(t.nss)) {
		links, err := t.nss[nsRole].Handle().LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links in %s: %w", nsRole, err)
		}
		slices.SortFunc(links, func(a, b netlink.Link) int { return a.Attrs().Index - b.Attrs().Index })
		for _, l := range links {
			s := l.Attrs().Statistics
			if s == nil || l.Attrs().Name == "lo" {
				continue
			}
			name, ok := t.roles[nsRole+"/"+l.Attrs().Name]
			if !ok {
				name = nsRole + "'s " + l.Type()
				for i := 2; ; i++ {
					if _, dup := out[name]; !dup {
						break
					}
					name = fmt.Sprintf("%s's %s #%d", nsRole, l.Type(), i)
				}
			}
			out[name] = *s
		}
	}
	return out, nil
}
