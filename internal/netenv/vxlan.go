package netenv

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// VXLANOptions configures [NewVXLAN]. Remote is required; the rest have
// defaults.
type VXLANOptions struct {
	// VNI is the VXLAN network identifier. Default 42. Two VXLAN
	// devices in one namespace must differ in VNI or Port: the kernel
	// refuses the second with EEXIST.
	VNI int
	// Port is the UDP destination port of the tunnel. Default 4789 (IANA).
	Port int
	// Remote is the underlay address of the other tunnel end. Frames for
	// unknown destinations go there (a point-to-point overlay, as flannel's
	// per-node routes make it).
	Remote netip.Addr
	// Addr is the overlay address of the VXLAN device; zero means none.
	Addr netip.Prefix
	// MTU of the VXLAN device. Default: the kernel's (the underlay's MTU
	// minus the 50 bytes of encapsulation).
	MTU int
}

// NewVXLAN makes a VXLAN device on top of underlay, in underlay's
// namespace, with its address set and up. On a kernel built without
// CONFIG_VXLAN it returns an error wrapping [ErrNotSupported]. Close
// deletes it; deleting the underlay's namespace does too.
func NewVXLAN(underlay Endpoint, opts *VXLANOptions) (*Link, error) {
	var o VXLANOptions
	if opts != nil {
		o = *opts
	}
	if o.VNI == 0 {
		o.VNI = 42
	}
	if o.Port == 0 {
		o.Port = 4789
	}
	switch {
	case o.VNI < 0 || o.VNI >= 1<<24:
		return nil, fmt.Errorf("create vxlan on %s: VNI %d: must be between 1 and %d", underlay.Name, o.VNI, 1<<24-1)
	case o.Port < 0 || o.Port > 65535:
		return nil, fmt.Errorf("create vxlan on %s: Port %d: must be between 1 and 65535", underlay.Name, o.Port)
	case !o.Remote.Is4():
		return nil, fmt.Errorf("create vxlan on %s: Remote %v: must be an IPv4 address", underlay.Name, o.Remote)
	case o.MTU < 0:
		return nil, fmt.Errorf("create vxlan on %s: MTU %d: must not be negative", underlay.Name, o.MTU)
	}
	if err := checkStack(underlay, nil, o.Addr); err != nil {
		return nil, fmt.Errorf("create vxlan on %s: %w", underlay.Name, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = RandomName("afxv")
	la.HardwareAddr = RandomMAC()
	la.MTU = o.MTU
	vx := &netlink.Vxlan{
		LinkAttrs:    la,
		VxlanId:      o.VNI,
		VtepDevIndex: underlay.Index,
		Group:        o.Remote.AsSlice(),
		Port:         o.Port,
		Learning:     true,
		UDPCSum:      true,
	}
	if underlay.Addr.IsValid() {
		vx.SrcAddr = underlay.IP().AsSlice()
	}
	return stack(underlay, vx, nil, o.Addr, "vxlan")
}
