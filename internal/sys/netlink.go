package sys

// This file is the only place in afxdp that speaks rtnetlink (genetlink.go
// asks generic netlink one question through nlRequest). It knows two
// requests, both about one interface's XDP hook: RTM_GETLINK, to learn which
// programs are attached (the IFLA_XDP nest), and RTM_SETLINK, to detach a
// program that was attached through netlink (IFLA_XDP_FD = -1) or to put
// such a program back after a failed replacement. afxdp's own programs are
// attached through bpf_links, with the bpf(2) system call.
//
// Messages are built and parsed with encoding/binary in the host's byte
// order, which is the order netlink uses; nothing here needs package unsafe.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// XDP attach states reported in IFLA_XDP_ATTACHED (enum xdp_attached in
// include/uapi/linux/if_link.h).
const (
	XDPAttachedNone  = 0 // no program
	XDPAttachedDrv   = 1 // one program, native (driver) mode
	XDPAttachedSKB   = 2 // one program, generic (skb) mode
	XDPAttachedHW    = 3 // one program, offloaded to the NIC
	XDPAttachedMulti = 4 // programs in more than one mode
)

// LinkXDP is what the kernel reports in the IFLA_XDP nest of RTM_NEWLINK
// for one interface. A zero program ID means "none in that mode".
type LinkXDP struct {
	Attached  uint8  // IFLA_XDP_ATTACHED, one of the XDPAttached* values
	ProgID    uint32 // IFLA_XDP_PROG_ID, set unless Attached is none or multi
	DrvProgID uint32 // IFLA_XDP_DRV_PROG_ID
	SKBProgID uint32 // IFLA_XDP_SKB_PROG_ID
	HWProgID  uint32 // IFLA_XDP_HW_PROG_ID
}

// QueryLinkXDP asks rtnetlink, with RTM_GETLINK, which XDP programs are
// attached to the interface ifindex in the calling thread's network
// namespace. An unknown ifindex gives an error that wraps unix.ENODEV.
func QueryLinkXDP(ifindex int) (LinkXDP, error) {
	var out LinkXDP
	err := queryLink(ifindex, func(attrs []attr) error {
		for _, a := range attrs {
			if a.typ != unix.IFLA_XDP {
				continue
			}
			nested, err := parseAttrs(a.val)
			if err != nil {
				return fmt.Errorf("IFLA_XDP: %w", err)
			}
			for _, n := range nested {
				switch n.typ {
				case unix.IFLA_XDP_ATTACHED:
					if len(n.val) >= 1 {
						out.Attached = n.val[0]
					}
				case unix.IFLA_XDP_PROG_ID:
					out.ProgID = attrU32(n.val)
				case unix.IFLA_XDP_DRV_PROG_ID:
					out.DrvProgID = attrU32(n.val)
				case unix.IFLA_XDP_SKB_PROG_ID:
					out.SKBProgID = attrU32(n.val)
				case unix.IFLA_XDP_HW_PROG_ID:
					out.HWProgID = attrU32(n.val)
				}
			}
		}
		return nil
	})
	if err != nil {
		return LinkXDP{}, err
	}
	return out, nil
}

// queryLink sends RTM_GETLINK for ifindex and hands the attributes of the
// interface's reply to fn. An unknown ifindex gives an error that wraps
// unix.ENODEV.
func queryLink(ifindex int, fn func([]attr) error) error {
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return fmt.Errorf("netlink RTM_GETLINK: ifindex %d: %w", ifindex, unix.ENODEV)
	}
	found := false
	err := rtnlRequest(unix.RTM_GETLINK, 0, ifindex, nil, func(m nlMsg) error {
		if m.Header.Type != unix.RTM_NEWLINK {
			return nil
		}
		if len(m.Data) < unix.SizeofIfInfomsg {
			return fmt.Errorf("short ifinfomsg (%d bytes)", len(m.Data))
		}
		if idx := int32(binary.NativeEndian.Uint32(m.Data[4:8])); int(idx) != ifindex {
			return nil
		}
		found = true
		attrs, err := parseAttrs(m.Data[unix.SizeofIfInfomsg:])
		if err != nil {
			return err
		}
		return fn(attrs)
	})
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("netlink RTM_GETLINK: ifindex %d: no reply for this interface: %w", ifindex, unix.ENODEV)
	}
	return nil
}

// DetachLinkXDP removes the XDP program that was attached through netlink
// (not through a bpf_link) to ifindex in the mode given by flags
// (unix.XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE or XDP_FLAGS_HW_MODE).
//
// If expectedFD is not negative, it must be a file descriptor of the program
// the caller believes is attached; the kernel then detaches only if that
// program is still the one attached (XDP_FLAGS_REPLACE with
// IFLA_XDP_EXPECTED_FD) and otherwise fails with EEXIST. This keeps a caller
// from removing a program that someone attached after it looked.
//
// If a bpf_link holds the hook in that mode, the kernel refuses with EBUSY.
func DetachLinkXDP(ifindex int, flags uint32, expectedFD int) error {
	return setLinkXDP(ifindex, -1, flags, expectedFD)
}

// AttachLinkXDP attaches the program progFD to ifindex through netlink, in
// the mode given by flags, and only if no program is attached in that mode
// (XDP_FLAGS_UPDATE_IF_NOEXIST is added): otherwise the kernel fails with
// EBUSY. Unlike a bpf_link, such an attachment outlives the process; it
// lasts until someone detaches it.
func AttachLinkXDP(ifindex int, progFD int, flags uint32) error {
	if progFD < 0 {
		return fmt.Errorf("netlink RTM_SETLINK: ifindex %d: program fd %d: %w", ifindex, progFD, unix.EBADF)
	}
	return setLinkXDP(ifindex, progFD, flags|unix.XDP_FLAGS_UPDATE_IF_NOEXIST, -1)
}

// setLinkXDP sends RTM_SETLINK with an IFLA_XDP nest: progFD (-1 for
// none), flags and, if expectedFD is not negative, XDP_FLAGS_REPLACE with
// IFLA_XDP_EXPECTED_FD.
func setLinkXDP(ifindex int, progFD int, flags uint32, expectedFD int) error {
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return fmt.Errorf("netlink RTM_SETLINK: ifindex %d: %w", ifindex, unix.ENODEV)
	}
	var nest []byte
	nest = appendAttr(nest, unix.IFLA_XDP_FD, binary.NativeEndian.AppendUint32(nil, uint32(int32(progFD))))
	if expectedFD >= 0 {
		flags |= unix.XDP_FLAGS_REPLACE
		nest = appendAttr(nest, unix.IFLA_XDP_EXPECTED_FD, binary.NativeEndian.AppendUint32(nil, uint32(int32(expectedFD))))
	}
	nest = appendAttr(nest, unix.IFLA_XDP_FLAGS, binary.NativeEndian.AppendUint32(nil, flags))
	attrs := appendAttr(nil, unix.IFLA_XDP|unix.NLA_F_NESTED, nest)

	return rtnlRequest(unix.RTM_SETLINK, unix.NLM_F_ACK, ifindex, attrs, func(nlMsg) error { return nil })
}

// nlSeq numbers requests; each request uses its own socket, so the number
// only guards against stray messages.
var nlSeq atomic.Uint32

// rtnlRequest sends one request with an ifinfomsg for ifindex followed by
// attrs, and calls fn for every reply message until the kernel's final
// answer: an NLMSG_ERROR (an error or, with NLM_F_ACK, the acknowledgement)
// or, for a request without NLM_F_ACK, the first non-error reply.
func rtnlRequest(typ uint16, flags uint16, ifindex int, attrs []byte, fn func(nlMsg) error) error {
	op := "RTM_GETLINK"
	if typ == unix.RTM_SETLINK {
		op = "RTM_SETLINK"
	}
	payload := make([]byte, 0, unix.SizeofIfInfomsg+len(attrs))
	// struct ifinfomsg: family, pad, type, index, flags, change.
	payload = append(payload, unix.AF_UNSPEC, 0, 0, 0)
	payload = binary.NativeEndian.AppendUint32(payload, uint32(int32(ifindex)))
	payload = binary.NativeEndian.AppendUint32(payload, 0)
	payload = binary.NativeEndian.AppendUint32(payload, 0)
	payload = append(payload, attrs...)
	return nlRequest(unix.NETLINK_ROUTE, op, typ, flags, payload, fn)
}

// nlRequest sends one request of type typ with payload on a new socket of
// the netlink protocol proto, and calls fn for every reply message as
// rtnlRequest describes. op names the request in errors.
func nlRequest(proto int, op string, typ uint16, flags uint16, payload []byte, fn func(nlMsg) error) error {
	fail := func(err error) error { return fmt.Errorf("netlink %s: %w", op, err) }

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return fail(os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	// Ask for the kernel's explanation with errors ("Can't replace active
	// BPF XDP link"); kernels without extended ACKs ignore the absence.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(os.NewSyscallError("bind", err))
	}

	seq := nlSeq.Add(1)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(payload))
	msg = append(msg, payload...)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], typ)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|flags)
	binary.NativeEndian.PutUint32(msg[8:12], seq)
	binary.NativeEndian.PutUint32(msg[12:16], 0)

	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(os.NewSyscallError("sendto", err))
	}

	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_TRUNC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fail(os.NewSyscallError("recvfrom", err))
		}
		if n > len(buf) {
			return fail(fmt.Errorf("reply of %d bytes does not fit a %d-byte buffer", n, len(buf)))
		}
		msgs, err := parseMessages(buf[:n])
		if err != nil {
			return fail(fmt.Errorf("parse reply: %w", err))
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if err := parseNlError(m); err != nil {
					return fail(err)
				}
				return nil // acknowledgement
			case unix.NLMSG_DONE:
				return nil
			}
			if err := fn(m); err != nil {
				return fail(err)
			}
			if flags&unix.NLM_F_ACK == 0 && m.Header.Flags&unix.NLM_F_MULTI == 0 {
				return nil
			}
		}
	}
}

// parseNlError decodes an NLMSG_ERROR payload: struct nlmsgerr (an errno,
// negated, and the request's header, plus its payload unless NLM_F_CAPPED),
// then extended-ACK attributes when NLM_F_ACK_TLVS is set. It returns nil
// for an acknowledgement (errno 0).
func parseNlError(m nlMsg) error {
	if len(m.Data) < 4 {
		return fmt.Errorf("short NLMSG_ERROR (%d bytes)", len(m.Data))
	}
	code := int32(binary.NativeEndian.Uint32(m.Data[0:4]))
	if code == 0 {
		return nil
	}
	errno := unix.Errno(-code)
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(m.Data) < 4+unix.SizeofNlMsghdr {
		return errno
	}
	off := 4 + unix.SizeofNlMsghdr
	if m.Header.Flags&unix.NLM_F_CAPPED == 0 {
		// The whole request was echoed, padded to the netlink alignment.
		n := int(binary.NativeEndian.Uint32(m.Data[4:8]))
		off = 4 + (n+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)
	}
	if off > len(m.Data) {
		return errno
	}
	attrs, err := parseAttrs(m.Data[off:])
	if err != nil {
		return errno
	}
	for _, a := range attrs {
		if a.typ == unix.NLMSGERR_ATTR_MSG {
			text := string(a.val)
			for len(text) > 0 && text[len(text)-1] == 0 {
				text = text[:len(text)-1]
			}
			if text != "" {
				return fmt.Errorf("%w (kernel: %q)", errno, text)
			}
		}
	}
	return errno
}

// nlMsg is one netlink message: its header and the payload after it.
type nlMsg struct {
	Header unix.NlMsghdr
	Data   []byte
}

func parseMessages(b []byte) ([]nlMsg, error) {
	var out []nlMsg
	for len(b) >= unix.SizeofNlMsghdr {
		h := unix.NlMsghdr{
			Len:   binary.NativeEndian.Uint32(b[0:4]),
			Type:  binary.NativeEndian.Uint16(b[4:6]),
			Flags: binary.NativeEndian.Uint16(b[6:8]),
			Seq:   binary.NativeEndian.Uint32(b[8:12]),
			Pid:   binary.NativeEndian.Uint32(b[12:16]),
		}
		l := int(h.Len)
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return nil, fmt.Errorf("message of type %d: bad length %d with %d bytes left", h.Type, l, len(b))
		}
		out = append(out, nlMsg{Header: h, Data: b[unix.SizeofNlMsghdr:l]})
		l = nlAlign(l)
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out, nil
}

// attr is one netlink attribute; typ has the NLA_F_NESTED and
// NLA_F_NET_BYTEORDER bits cleared.
type attr struct {
	typ uint16
	val []byte
}

func parseAttrs(b []byte) ([]attr, error) {
	var out []attr
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofRtAttr || l > len(b) {
			return nil, fmt.Errorf("attribute %d: bad length %d with %d bytes left", typ, l, len(b))
		}
		out = append(out, attr{typ: typ, val: b[unix.SizeofRtAttr:l]})
		l = nlAlign(l)
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out, nil
}

func appendAttr(b []byte, typ uint16, val []byte) []byte {
	l := unix.SizeofRtAttr + len(val)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for range nlAlign(l) - l {
		b = append(b, 0)
	}
	return b
}

func attrU32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.NativeEndian.Uint32(b)
}

func nlAlign(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }
