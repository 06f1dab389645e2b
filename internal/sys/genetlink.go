package sys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// The "netdev" generic netlink family (include/uapi/linux/netdev.h, Linux
// 6.3+), which reports what XDP features each interface's driver has.
const (
	netdevFamily         = "netdev"
	netdevCmdDevGet      = 1 // NETDEV_CMD_DEV_GET
	netdevAttrIfindex    = 1 // NETDEV_A_DEV_IFINDEX
	netdevAttrXDPFeature = 3 // NETDEV_A_DEV_XDP_FEATURES, a u64 of NETDEV_XDP_ACT_*
)

// XDPActXSKZeroCopy is NETDEV_XDP_ACT_XSK_ZEROCOPY: the driver can bind
// AF_XDP sockets in zero-copy mode.
const XDPActXSKZeroCopy = 1 << 3

// ErrNoNetdevFamily is returned by QueryXDPFeatures when the kernel has no
// "netdev" generic netlink family (before Linux 6.3), so that the features
// are unknown.
var ErrNoNetdevFamily = errors.New(`no "netdev" generic netlink family (Linux 6.3+)`)

// QueryXDPFeatures returns the XDP features (NETDEV_XDP_ACT_* bits) that
// the driver of interface ifindex, in the calling thread's network
// namespace, advertises. An unknown ifindex gives an error that wraps
// unix.ENODEV; a kernel without the netdev family, ErrNoNetdevFamily.
func QueryXDPFeatures(ifindex int) (uint64, error) {
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		// The attribute is 32 bits: a larger ifindex would name another
		// interface, and the kernel answers 0 with ERANGE.
		return 0, fmt.Errorf("query xdp features of ifindex %d: %w", ifindex, unix.ENODEV)
	}
	family, err := genlFamily(netdevFamily)
	if errors.Is(err, unix.ENOENT) {
		return 0, ErrNoNetdevFamily
	}
	if err != nil {
		return 0, err
	}
	attrs := appendAttr(nil, netdevAttrIfindex, binary.NativeEndian.AppendUint32(nil, uint32(int32(ifindex))))
	var feats uint64
	found := false
	err = nlRequest(unix.NETLINK_GENERIC, "NETDEV_CMD_DEV_GET", family, 0, genlPayload(netdevCmdDevGet, attrs), func(m nlMsg) error {
		as, err := genlAttrs(m)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.typ == netdevAttrXDPFeature && len(a.val) >= 8 {
				feats, found = binary.NativeEndian.Uint64(a.val), true
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("query xdp features of ifindex %d: %w", ifindex, err)
	}
	if !found {
		return 0, fmt.Errorf("query xdp features of ifindex %d: the reply has no NETDEV_A_DEV_XDP_FEATURES", ifindex)
	}
	return feats, nil
}

// genlFamily resolves a generic netlink family's name to its ID.
func genlFamily(name string) (uint16, error) {
	attrs := appendAttr(nil, unix.CTRL_ATTR_FAMILY_NAME, append([]byte(name), 0))
	var id uint16
	err := nlRequest(unix.NETLINK_GENERIC, "CTRL_CMD_GETFAMILY", unix.GENL_ID_CTRL, 0, genlPayload(unix.CTRL_CMD_GETFAMILY, attrs), func(m nlMsg) error {
		as, err := genlAttrs(m)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.typ == unix.CTRL_ATTR_FAMILY_ID && len(a.val) >= 2 {
				id = binary.NativeEndian.Uint16(a.val)
			}
		}
		return nil
	})
	if err != nil {
		// ENOENT: the kernel has no such family.
		return 0, fmt.Errorf("resolve generic netlink family %q: %w", name, err)
	}
	if id == 0 {
		return 0, fmt.Errorf("resolve generic netlink family %q: the reply has no CTRL_ATTR_FAMILY_ID", name)
	}
	return id, nil
}

// genlPayload is a struct genlmsghdr (command, version 1, reserved)
// followed by attrs.
func genlPayload(cmd uint8, attrs []byte) []byte {
	return append([]byte{cmd, 1, 0, 0}, attrs...)
}

// genlAttrs parses the attributes after a reply's genlmsghdr.
func genlAttrs(m nlMsg) ([]attr, error) {
	if len(m.Data) < 4 {
		return nil, fmt.Errorf("short generic netlink reply (%d bytes)", len(m.Data))
	}
	return parseAttrs(m.Data[4:])
}
