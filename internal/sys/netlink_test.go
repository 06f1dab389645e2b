package sys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestAttrRoundTrip(t *testing.T) {
	inner := appendAttr(nil, unix.IFLA_XDP_ATTACHED, []byte{XDPAttachedDrv})
	inner = appendAttr(inner, unix.IFLA_XDP_DRV_PROG_ID, []byte{42, 0, 0, 0})
	b := appendAttr(nil, unix.IFLA_MTU, []byte{0xdc, 0x05, 0, 0})
	b = appendAttr(b, unix.IFLA_XDP|unix.NLA_F_NESTED, inner)
	if len(b)%unix.NLA_ALIGNTO != 0 {
		t.Fatalf("length %d not aligned", len(b))
	}
	attrs, err := parseAttrs(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(attrs) != 2 || attrs[1].typ != unix.IFLA_XDP {
		t.Fatalf("got %+v", attrs)
	}
	nested, err := parseAttrs(attrs[1].val)
	if err != nil {
		t.Fatal(err)
	}
	if len(nested) != 2 || !bytes.Equal(nested[0].val, []byte{XDPAttachedDrv}) || attrU32(nested[1].val) != 42 {
		t.Fatalf("nested %+v", nested)
	}
}

func TestParseNlError(t *testing.T) {
	hdr := func(flags uint16, payload []byte) nlMsg {
		return nlMsg{Header: unix.NlMsghdr{Type: unix.NLMSG_ERROR, Flags: flags}, Data: payload}
	}
	ack := make([]byte, 4+unix.SizeofNlMsghdr)
	if err := parseNlError(hdr(0, ack)); err != nil {
		t.Errorf("ack: %v", err)
	}

	// -EBUSY, the request's header (capped), and an extended ACK message.
	b := []byte{0xf0, 0xff, 0xff, 0xff} // -16
	b = append(b, make([]byte, unix.SizeofNlMsghdr)...)
	b = appendAttr(b, unix.NLMSGERR_ATTR_MSG, []byte("Can't replace active BPF XDP link\x00"))
	err := parseNlError(hdr(unix.NLM_F_ACK_TLVS|unix.NLM_F_CAPPED, b))
	if !errors.Is(err, unix.EBUSY) || !bytes.Contains([]byte(err.Error()), []byte("active BPF XDP link")) {
		t.Errorf("extended ack: %v", err)
	}
	// Not capped: the whole request follows, here one of 22 bytes padded
	// to 24, and the attributes start after the padding.
	req := make([]byte, 22)
	binary.NativeEndian.PutUint32(req, uint32(len(req)))
	u := append([]byte{0xf0, 0xff, 0xff, 0xff}, req...)
	u = append(u, 0, 0)
	u = appendAttr(u, unix.NLMSGERR_ATTR_MSG, []byte("Can't replace active BPF XDP link\x00"))
	err = parseNlError(hdr(unix.NLM_F_ACK_TLVS, u))
	if !errors.Is(err, unix.EBUSY) || !bytes.Contains([]byte(err.Error()), []byte("active BPF XDP link")) {
		t.Errorf("extended ack after an unaligned request: %v", err)
	}
	if err := parseNlError(hdr(0, b[:4])); !errors.Is(err, unix.EBUSY) {
		t.Errorf("bare errno: %v", err)
	}
	if err := parseNlError(hdr(0, b[:2])); err == nil {
		t.Error("short error accepted")
	}
}

// FuzzParse checks that no reply, however malformed, makes the parsers
// panic or loop.
func FuzzParse(f *testing.F) {
	f.Add(appendAttr(nil, unix.IFLA_XDP, appendAttr(nil, unix.IFLA_XDP_PROG_ID, []byte{1, 2, 3, 4})))
	f.Add([]byte{20, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		parseAttrs(b)
		if msgs, err := parseMessages(b); err == nil {
			for _, m := range msgs {
				parseNlError(m)
			}
		}
	})
}
