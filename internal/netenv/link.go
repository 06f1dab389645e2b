package netenv

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotSupported is returned (wrapped) when the kernel lacks a link type,
// for example a kernel built without CONFIG_IPVLAN.
var ErrNotSupported = errors.New("not supported by this kernel")

// Endpoint is one network interface of a topology.
type Endpoint struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	// Addr is the interface's IPv4 address with its prefix length.
	Addr netip.Prefix
	// NS is the namespace holding the interface; nil means the namespace
	// of the process that built the topology.
	NS *Netns
}

// IP is the interface's IPv4 address.
func (e Endpoint) IP() netip.Addr { return e.Addr.Addr() }

// Do runs fn inside the endpoint's namespace.
func (e Endpoint) Do(fn func() error) error {
	if e.NS == nil {
		return fn()
	}
	return e.NS.Do(fn)
}

// handle returns a netlink handle in e's namespace and a function that
// releases it. A closed namespace gives an error wrapping [net.ErrClosed]
// rather than a handle that would act in the caller's namespace.
func (e Endpoint) handle() (*netlink.Handle, func(), error) {
	if e.NS != nil {
		h, err := e.NS.Netlink()
		if err != nil {
			return nil, nil, err
		}
		return h, func() {}, nil
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, nil, err
	}
	return h, h.Close, nil
}

// VethOptions configures [NewVeth]. The zero value gives one queue, MTU 1500,
// the host end in the caller's namespace and the peer in a new anonymous one.
type VethOptions struct {
	// Queues is the number of RX and TX queues on each end, from 1 to 64.
	// Default 1.
	Queues int
	// MTU of both ends, in bytes, from 68 to 65535. Default 1500.
	MTU int
	// HostNS holds the host end; nil means the caller's namespace. It
	// must be open.
	HostNS *Netns
	// PeerNS holds the peer end; nil means a new anonymous namespace that
	// the Veth owns and removes on Close. It must be open.
	PeerNS *Netns
	// Subnet is the IPv4 /24 for the pair (host .1, peer .2); any other
	// prefix is refused. Default: a random 10.x.y.0/24 that no address or
	// route overlaps in the caller's namespace, HostNS or PeerNS (see
	// RandomSubnet).
	Subnet netip.Prefix
	// NoAddr leaves both ends without IPv4 addresses.
	NoAddr bool
}

// Veth is a veth pair whose ends are up, with IPv6 disabled so that the
// kernel sends no neighbour discovery or MLD frames of its own.
type Veth struct {
	Host, Peer Endpoint

	ownNS     *Netns
	made      bool // the pair exists (Host.Index may not be known yet)
	closeOnce sync.Once
}

// NewVeth makes a veth pair. It checks opts before it makes anything, and
// on failure removes what it made.
func NewVeth(opts *VethOptions) (_ *Veth, err error) {
	var o VethOptions
	if opts != nil {
		o = *opts
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("create veth: %w", err)
	}

	v := &Veth{}
	defer func() {
		if err != nil {
			err = errors.Join(err, v.Close())
		}
	}()
	if o.PeerNS == nil {
		v.ownNS, err = NewNetns("")
		if err != nil {
			return nil, err
		}
		o.PeerNS = v.ownNS
	}

	v.Host = Endpoint{Name: RandomName("afxh"), MAC: RandomMAC(), NS: o.HostNS}
	v.Peer = Endpoint{Name: RandomName("afxp"), MAC: RandomMAC(), NS: o.PeerNS}
	if !o.NoAddr {
		base := o.Subnet.Masked().Addr().As4()
		base[3] = 1
		v.Host.Addr = netip.PrefixFrom(netip.AddrFrom4(base), 24)
		base[3] = 2
		v.Peer.Addr = netip.PrefixFrom(netip.AddrFrom4(base), 24)
	}

	hh, release, err := v.Host.handle()
	if err != nil {
		return nil, fmt.Errorf("create veth: netlink: %w", err)
	}
	defer release()

	la := netlink.NewLinkAttrs()
	la.Name = v.Host.Name
	la.MTU = o.MTU
	la.HardwareAddr = v.Host.MAC
	la.NumTxQueues = o.Queues
	la.NumRxQueues = o.Queues
	link := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         v.Peer.Name,
		PeerHardwareAddr: v.Peer.MAC,
		PeerNamespace:    netlink.NsFd(int(o.PeerNS.NsHandle())),
		PeerNumTxQueues:  uint32(o.Queues),
		PeerNumRxQueues:  uint32(o.Queues),
		PeerMTU:          uint32(o.MTU),
	}
	if err := hh.LinkAdd(link); err != nil {
		return nil, fmt.Errorf("create veth %s: %w", v.Host.Name, err)
	}
	v.made = true
	if err := configure(&v.Host); err != nil {
		return nil, err
	}
	if err := configure(&v.Peer); err != nil {
		return nil, err
	}
	if err := waitActive(v.Host); err != nil {
		return nil, err
	}
	if err := waitActive(v.Peer); err != nil {
		return nil, err
	}
	return v, nil
}

// activeTimeout bounds waitActive.
const activeTimeout = 5 * time.Second

// WaitActive waits (up to 5 s) until e's link is operationally up, which
// a link set up, or a veth whose peer was set up again, is only some time
// later: see waitActive.
func (e Endpoint) WaitActive() error { return waitActive(e) }

// waitActive waits until e's link is operationally up. Setting a veth
// pair up only schedules that: the kernel's link watcher marks it up and
// gives it its transmit queueing discipline once the carrier is on, and
// until then every frame sent out of it is dropped (counted in
// tx_dropped).
func waitActive(e Endpoint) error {
	h, release, err := e.handle()
	if err != nil {
		return fmt.Errorf("wait for %s: netlink: %w", e.Name, err)
	}
	defer release()
	deadline := time.Now().Add(activeTimeout)
	for {
		l, err := h.LinkByIndex(e.Index)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", e.Name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s: not up (%s) %v after it was set up", e.Name, l.Attrs().OperState, activeTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// validate checks o and fills in its defaults.
func (o *VethOptions) validate() error {
	if o.Queues == 0 {
		o.Queues = 1
	}
	if o.MTU == 0 {
		o.MTU = 1500
	}
	switch {
	case o.Queues < 0 || o.Queues > 64:
		return fmt.Errorf("Queues %d: must be between 1 and 64", o.Queues)
	case o.MTU < 68 || o.MTU > 65535:
		return fmt.Errorf("MTU %d: must be between 68 and 65535", o.MTU)
	case o.Subnet.IsValid() && (!o.Subnet.Addr().Is4() || o.Subnet.Bits() != 24):
		return fmt.Errorf("Subnet %s: must be an IPv4 /24", o.Subnet)
	}
	if err := checkOpen("HostNS", o.HostNS); err != nil {
		return err
	}
	if err := checkOpen("PeerNS", o.PeerNS); err != nil {
		return err
	}
	if !o.Subnet.IsValid() && !o.NoAddr {
		o.Subnet = randomSubnet(o.HostNS, o.PeerNS)
	}
	return nil
}

// checkOpen refuses a closed namespace given in the option named field.
func checkOpen(field string, ns *Netns) error {
	if ns != nil && ns.closed.Load() {
		return fmt.Errorf("%s %s: %w", field, ns, net.ErrClosed)
	}
	return nil
}

// checkAddr refuses an address that is not an IPv4 prefix, in the option
// named field; the zero value (no address) passes.
func checkAddr(field string, p netip.Prefix) error {
	if p.IsValid() && !p.Addr().Is4() {
		return fmt.Errorf("%s %s: must be an IPv4 prefix", field, p)
	}
	return nil
}

// configure disables IPv6, adds the address, brings the link up and fills in
// the index.
func configure(e *Endpoint) error {
	h, release, err := e.handle()
	if err != nil {
		return fmt.Errorf("configure %s: netlink: %w", e.Name, err)
	}
	defer release()
	l, err := h.LinkByName(e.Name)
	if err != nil {
		return fmt.Errorf("configure %s: %w", e.Name, err)
	}
	e.Index = l.Attrs().Index
	if err := e.Do(func() error { return disableIPv6(e.Name) }); err != nil {
		return err
	}
	if e.Addr.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{
			IP:   e.Addr.Addr().AsSlice(),
			Mask: net.CIDRMask(e.Addr.Bits(), 32),
		}}
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("configure %s: add address %s: %w", e.Name, e.Addr, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("configure %s: set up: %w", e.Name, err)
	}
	return nil
}

func disableIPv6(ifname string) error {
	p := filepath.Join("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // kernel without IPv6
		}
		return fmt.Errorf("disable ipv6 on %s: %w", ifname, err)
	}
	return nil
}

// Close deletes the pair (deleting one end removes both) and the namespace
// the Veth made. The first Close reports every failure; later ones return
// nil. Closes called at the same time wait for the first.
func (v *Veth) Close() (err error) {
	v.closeOnce.Do(func() {
		var errs []error
		if v.made {
			errs = append(errs, deleteLink(v.Host))
		}
		if v.ownNS != nil {
			errs = append(errs, v.ownNS.Close())
		}
		err = errors.Join(errs...)
	})
	return err
}

// deleteLink deletes e's link: by index, or by name when a constructor
// unwinds before it learnt the index (the name is random, and the link is
// still in the namespace where it was made or last moved). A link whose
// namespace was closed has gone, or goes, with the namespace.
func deleteLink(e Endpoint) error {
	h, release, err := e.handle()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: netlink: %w", e.Name, err)
	}
	defer release()
	var l netlink.Link
	if e.Index != 0 {
		l, err = h.LinkByIndex(e.Index)
	} else {
		l, err = h.LinkByName(e.Name)
	}
	if err != nil {
		var lnf netlink.LinkNotFoundError
		if errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) {
			return nil // already gone, e.g. with its peer or namespace
		}
		return fmt.Errorf("delete %s: %w", e.Name, err)
	}
	if l.Attrs().Name != e.Name {
		return nil // index reused by another link
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", e.Name, err)
	}
	return nil
}

// Link is a single virtual link stacked on another, such as a macvlan.
type Link struct {
	Endpoint

	closeOnce sync.Once
}

// Close deletes the link. The first Close reports a failure; later ones
// return nil. Closes called at the same time wait for the first.
func (l *Link) Close() (err error) {
	l.closeOnce.Do(func() { err = deleteLink(l.Endpoint) })
	return err
}

// MacvlanOptions configures [NewMacvlan].
type MacvlanOptions struct {
	// NS receives the macvlan; nil leaves it in the parent's namespace.
	// It must be open.
	NS *Netns
	// Addr is the macvlan's IPv4 address with its prefix length; zero
	// means none.
	Addr netip.Prefix
	// Mode is the macvlan mode, up to MACVLAN_MODE_SOURCE; default bridge.
	Mode netlink.MacvlanMode
}

// NewMacvlan makes a macvlan on top of parent. It checks opts before it
// makes anything, and on failure removes what it made.
func NewMacvlan(parent Endpoint, opts *MacvlanOptions) (*Link, error) {
	var o MacvlanOptions
	if opts != nil {
		o = *opts
	}
	if o.Mode == netlink.MACVLAN_MODE_DEFAULT {
		o.Mode = netlink.MACVLAN_MODE_BRIDGE
	}
	if err := checkStack(parent, o.NS, o.Addr); err != nil {
		return nil, fmt.Errorf("create macvlan on %s: %w", parent.Name, err)
	}
	if o.Mode > netlink.MACVLAN_MODE_SOURCE {
		return nil, fmt.Errorf("create macvlan on %s: Mode %d: must be at most %d (source)", parent.Name, o.Mode, netlink.MACVLAN_MODE_SOURCE)
	}
	la := netlink.NewLinkAttrs()
	la.Name = RandomName("afxm")
	la.ParentIndex = parent.Index
	la.HardwareAddr = RandomMAC()
	return stack(parent, &netlink.Macvlan{LinkAttrs: la, Mode: o.Mode}, o.NS, o.Addr, "macvlan")
}

// IPVlanOptions configures [NewIPVlan].
type IPVlanOptions struct {
	// NS receives the ipvlan; nil leaves it in the parent's namespace.
	// It must be open.
	NS *Netns
	// Addr is the ipvlan's IPv4 address with its prefix length; zero
	// means none.
	Addr netip.Prefix
	// Mode is L2 (default), L3 or L3S.
	Mode netlink.IPVlanMode
}

// NewIPVlan makes an ipvlan on top of parent. On a kernel built without
// CONFIG_IPVLAN it returns an error wrapping [ErrNotSupported]. It checks
// opts before it makes anything, and on failure removes what it made.
func NewIPVlan(parent Endpoint, opts *IPVlanOptions) (*Link, error) {
	var o IPVlanOptions
	if opts != nil {
		o = *opts
	}
	if err := checkStack(parent, o.NS, o.Addr); err != nil {
		return nil, fmt.Errorf("create ipvlan on %s: %w", parent.Name, err)
	}
	if o.Mode >= netlink.IPVLAN_MODE_MAX {
		return nil, fmt.Errorf("create ipvlan on %s: Mode %d: must be L2, L3 or L3S", parent.Name, o.Mode)
	}
	la := netlink.NewLinkAttrs()
	la.Name = RandomName("afxi")
	la.ParentIndex = parent.Index
	return stack(parent, &netlink.IPVlan{LinkAttrs: la, Mode: o.Mode}, o.NS, o.Addr, "ipvlan")
}

// checkStack checks what stack needs of its caller: a parent with an index
// in an open namespace, an open NS and an IPv4 Addr.
func checkStack(parent Endpoint, ns *Netns, addr netip.Prefix) error {
	if parent.Index <= 0 {
		return fmt.Errorf("parent index %d: must be positive", parent.Index)
	}
	if err := checkOpen("parent namespace", parent.NS); err != nil {
		return err
	}
	if err := checkOpen("NS", ns); err != nil {
		return err
	}
	return checkAddr("Addr", addr)
}

// stack adds nl on parent, in parent's namespace, moves it to ns (unless
// nil), and configures it. Once the link exists, every failure deletes it
// again, wherever it is by then.
func stack(parent Endpoint, nl netlink.Link, ns *Netns, addr netip.Prefix, kind string) (_ *Link, err error) {
	h, release, err := parent.handle()
	if err != nil {
		return nil, fmt.Errorf("create %s on %s: netlink: %w", kind, parent.Name, err)
	}
	defer release()
	name := nl.Attrs().Name
	if err := h.LinkAdd(nl); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("create %s on %s: kernel built without CONFIG_%s: %w: %w",
				kind, parent.Name, upper(kind), ErrNotSupported, err)
		}
		// The name is random: a VXLAN device's EEXIST means that
		// another one in the namespace has its VNI and port, as
		// two made with the defaults side by side do.
		if vx, ok := nl.(*netlink.Vxlan); ok && errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create %s on %s: VNI %d, Port %d: another VXLAN device in the namespace has them: %w",
				kind, parent.Name, vx.VxlanId, vx.Port, err)
		}
		return nil, fmt.Errorf("create %s on %s: %w", kind, parent.Name, err)
	}
	// Until configure learns the index, Close finds the link by its
	// (random) name in l.NS, which follows the link when it moves.
	l := &Link{Endpoint: Endpoint{Name: name, NS: parent.NS, Addr: addr}}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	if ns != nil && ns != parent.NS {
		created, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("create %s %s: %w", kind, name, err)
		}
		if err := h.LinkSetNsFd(created, int(ns.NsHandle())); err != nil {
			return nil, fmt.Errorf("move %s %s to %s: %w", kind, name, ns, err)
		}
		l.NS = ns
	}
	if err := configure(&l.Endpoint); err != nil {
		return nil, err
	}
	lh, lrelease, err := l.handle()
	if err != nil {
		return nil, fmt.Errorf("create %s %s: netlink: %w", kind, name, err)
	}
	defer lrelease()
	got, err := lh.LinkByIndex(l.Index)
	if err != nil {
		return nil, fmt.Errorf("create %s %s: %w", kind, name, err)
	}
	l.MAC = got.Attrs().HardwareAddr
	return l, nil
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// RandomMAC returns a random unicast, locally administered MAC address.
func RandomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&0xfc | 0x02
	return m
}

// RandomSubnet returns a random 10.x.y.0/24 prefix, x from 100 to 199, that
// no IPv4 address or route (a default route aside) overlaps in the calling
// thread's network namespace, and that it has not returned lately in this
// process: a /24 already on a link there, the host's or the veth of a test
// running beside, would take one of the two's traffic to the other's
// link. Another process may still take it before the caller uses it.
// When every candidate is in use (a route for all of 10.0.0.0/8, say), it
// returns one at random.
func RandomSubnet() netip.Prefix { return randomSubnet() }

// Candidates of randomSubnet: 10.100.0.0/24 to 10.199.255.0/24.
const (
	subnetFirst = 10<<24 | 100<<16
	subnetCount = 100 << 8
)

// handedOut holds the subnets randomSubnet returned lately, which the
// caller may not have put on a link yet; it is emptied when it has
// handedOutMax of them.
var handedOut struct {
	sync.Mutex
	m map[netip.Prefix]bool
}

const handedOutMax = 1024

// randomSubnet is RandomSubnet, also avoiding what is in use in nss (nil
// ones skipped). It looks through the candidates from a random one on,
// and returns that one when all are in use. Routes of every routing table
// count; a namespace whose addresses and routes it cannot read, none.
func randomSubnet(nss ...*Netns) netip.Prefix {
	var b [4]byte
	rand.Read(b[:])
	start := int(binary.LittleEndian.Uint32(b[:]) % subnetCount)
	inUse := prefixesInUse(nss)
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.m == nil || len(handedOut.m) >= handedOutMax {
		handedOut.m = map[netip.Prefix]bool{}
	}
	candidate := func(i int) netip.Prefix {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], uint32(subnetFirst+((start+i)%subnetCount)<<8))
		return netip.PrefixFrom(netip.AddrFrom4(a), 24)
	}
	pick := candidate(0)
	for i := range subnetCount {
		p := candidate(i)
		if !handedOut.m[p] && !slices.ContainsFunc(inUse, p.Overlaps) {
			pick = p
			break
		}
	}
	handedOut.m[pick] = true
	return pick
}

// prefixesInUse lists the prefixes of the IPv4 addresses and routes, but
// default routes, in the calling thread's namespace and in nss. A
// namespace it cannot read (closed, say) adds nothing.
func prefixesInUse(nss []*Netns) []netip.Prefix {
	var out []netip.Prefix
	add := func(h *netlink.Handle) {
		addrs, _ := h.AddrList(nil, netlink.FAMILY_V4)
		for _, a := range addrs {
			if p, ok := ipNetPrefix(a.IPNet); ok {
				out = append(out, p)
			}
		}
		routes, _ := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		for _, r := range routes {
			if p, ok := ipNetPrefix(r.Dst); ok && p.Bits() > 0 {
				out = append(out, p)
			}
		}
	}
	if h, err := netlink.NewHandle(); err == nil {
		add(h)
		h.Close()
	}
	for _, ns := range nss {
		if ns == nil {
			continue
		}
		if h, err := ns.Netlink(); err == nil {
			add(h)
		}
	}
	return out
}

// ipNetPrefix converts an IPv4 net.IPNet; a nil one (a default route's
// Dst) is not converted.
func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	if len(n.Mask) == net.IPv6len && a.Is4In6() {
		bits -= 96
	}
	return netip.PrefixFrom(a.Unmap(), bits).Masked(), true
}
