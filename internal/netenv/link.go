package netenv

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

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

func (e Endpoint) handle() (*netlink.Handle, error) {
	if e.NS != nil {
		return e.NS.Handle(), nil
	}
	return netlink.NewHandle()
}

// VethOptions configures [NewVeth]. The zero value gives one queue, MTU 1500,
// the host end in the caller's namespace and the peer in a new anonymous one.
type VethOptions struct {
	// Queues is the number of RX and TX queues on each end. Default 1.
	Queues int
	// MTU of both ends. Default 1500.
	MTU int
	// HostNS holds the host end; nil means the caller's namespace.
	HostNS *Netns
	// PeerNS holds the peer end; nil means a new anonymous namespace that
	// the Veth owns and removes on Close.
	PeerNS *Netns
	// Subnet is the IPv4 /24 for the pair (host .1, peer .2). Default: a
	// random 10.x.y.0/24.
	Subnet netip.Prefix
	// NoAddr leaves both ends without IPv4 addresses.
	NoAddr bool
}

// Veth is a veth pair whose ends are up, with IPv6 disabled so that the
// kernel sends no neighbour discovery or MLD frames of its own.
type Veth struct {
	Host, Peer Endpoint

	ownNS     *Netns
	closeOnce sync.Once
	closeErr  error
}

// NewVeth makes a veth pair.
func NewVeth(opts *VethOptions) (_ *Veth, err error) {
	var o VethOptions
	if opts != nil {
		o = *opts
	}
	if o.Queues == 0 {
		o.Queues = 1
	}
	if o.Queues < 0 || o.Queues > 64 {
		return nil, fmt.Errorf("create veth: Queues %d: must be between 1 and 64", o.Queues)
	}
	if o.MTU == 0 {
		o.MTU = 1500
	}
	if !o.Subnet.IsValid() {
		o.Subnet = RandomSubnet()
	}

	v := &Veth{}
	defer func() {
		if err != nil {
			v.Close()
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

	hh, err := v.Host.handle()
	if err != nil {
		return nil, fmt.Errorf("create veth: netlink: %w", err)
	}
	if o.HostNS == nil {
		defer hh.Close()
	}

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
	if err := configure(&v.Host); err != nil {
		return nil, err
	}
	if err := configure(&v.Peer); err != nil {
		return nil, err
	}
	return v, nil
}

// configure disables IPv6, adds the address, brings the link up and fills in
// the index.
func configure(e *Endpoint) error {
	h, err := e.handle()
	if err != nil {
		return fmt.Errorf("configure %s: netlink: %w", e.Name, err)
	}
	if e.NS == nil {
		defer h.Close()
	}
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
// the Veth made. A second Close returns nil.
func (v *Veth) Close() error {
	v.closeOnce.Do(func() {
		var errs []error
		if v.Host.Index != 0 {
			errs = append(errs, deleteLink(v.Host))
		}
		if v.ownNS != nil {
			errs = append(errs, v.ownNS.Close())
		}
		v.closeErr = errors.Join(errs...)
	})
	return v.closeErr
}

func deleteLink(e Endpoint) error {
	h, err := e.handle()
	if err != nil {
		return fmt.Errorf("delete %s: netlink: %w", e.Name, err)
	}
	if e.NS == nil {
		defer h.Close()
	}
	l, err := h.LinkByIndex(e.Index)
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
	closeErr  error
}

// Close deletes the link. A second Close returns nil.
func (l *Link) Close() error {
	l.closeOnce.Do(func() { l.closeErr = deleteLink(l.Endpoint) })
	return l.closeErr
}

// MacvlanOptions configures [NewMacvlan].
type MacvlanOptions struct {
	// NS receives the macvlan; nil leaves it in the parent's namespace.
	NS *Netns
	// Addr is the macvlan's IPv4 address; zero means none.
	Addr netip.Prefix
	// Mode is the macvlan mode; default bridge.
	Mode netlink.MacvlanMode
}

// NewMacvlan makes a macvlan on top of parent.
func NewMacvlan(parent Endpoint, opts *MacvlanOptions) (*Link, error) {
	var o MacvlanOptions
	if opts != nil {
		o = *opts
	}
	if o.Mode == netlink.MACVLAN_MODE_DEFAULT {
		o.Mode = netlink.MACVLAN_MODE_BRIDGE
	}
	la := netlink.NewLinkAttrs()
	la.Name = RandomName("afxm")
	la.ParentIndex = parent.Index
	la.HardwareAddr = RandomMAC()
	return stack(parent, &netlink.Macvlan{LinkAttrs: la, Mode: o.Mode}, o.NS, o.Addr, "macvlan")
}

// IPVlanOptions configures [NewIPVlan].
type IPVlanOptions struct {
	NS   *Netns
	Addr netip.Prefix
	// Mode is L2 (default) or L3.
	Mode netlink.IPVlanMode
}

// NewIPVlan makes an ipvlan on top of parent. On a kernel built without
// CONFIG_IPVLAN it returns an error wrapping [ErrNotSupported].
func NewIPVlan(parent Endpoint, opts *IPVlanOptions) (*Link, error) {
	var o IPVlanOptions
	if opts != nil {
		o = *opts
	}
	la := netlink.NewLinkAttrs()
	la.Name = RandomName("afxi")
	la.ParentIndex = parent.Index
	return stack(parent, &netlink.IPVlan{LinkAttrs: la, Mode: o.Mode}, o.NS, o.Addr, "ipvlan")
}

func stack(parent Endpoint, nl netlink.Link, ns *Netns, addr netip.Prefix, kind string) (_ *Link, err error) {
	h, err := parent.handle()
	if err != nil {
		return nil, fmt.Errorf("create %s on %s: netlink: %w", kind, parent.Name, err)
	}
	if parent.NS == nil {
		defer h.Close()
	}
	name := nl.Attrs().Name
	if err := h.LinkAdd(nl); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("create %s on %s: kernel built without CONFIG_%s: %w: %w",
				kind, parent.Name, upper(kind), ErrNotSupported, err)
		}
		return nil, fmt.Errorf("create %s on %s: %w", kind, parent.Name, err)
	}
	l := &Link{Endpoint: Endpoint{Name: name, NS: parent.NS, Addr: addr}}
	defer func() {
		if err != nil {
			l.Close()
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
	lh, err := l.handle()
	if err != nil {
		return nil, err
	}
	if l.NS == nil {
		defer lh.Close()
	}
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

// RandomSubnet returns a random 10.x.y.0/24 prefix.
func RandomSubnet() netip.Prefix {
	var b [2]byte
	rand.Read(b[:])
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100 + b[0]%100, b[1], 0}), 24)
}
