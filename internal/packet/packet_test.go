package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"testing"

	"github.com/afxdp/afxdp/internal/testenv"
)

func testUDP() *UDP {
	return &UDP{
		SrcMAC:  net.HardwareAddr{0x02, 0, 0, 0, 0, 1},
		DstMAC:  net.HardwareAddr{0x02, 0, 0, 0, 0, 2},
		SrcIP:   netip.MustParseAddr("10.1.2.3"),
		DstIP:   netip.MustParseAddr("10.1.2.4"),
		SrcPort: 4000,
		DstPort: 5000,
		ID:      7,
	}
}

func TestRoundTrip(t *testing.T) {
	for _, plen := range []int{SeqLen, 18, 19, 100, 1458} {
		b := make([]byte, 2048)
		FillPayload(b[HeadersLen:HeadersLen+plen], uint64(plen)*31)
		u := testUDP()
		n, err := u.Write(b, plen)
		if err != nil {
			t.Fatal(err)
		}
		if n != FrameLen(plen) {
			t.Fatalf("len %d, want %d", n, FrameLen(plen))
		}
		p, err := Parse(b[:n])
		if err != nil {
			t.Fatalf("payload %d: %v", plen, err)
		}
		if p.SrcIP != u.SrcIP || p.DstIP != u.DstIP || p.SrcPort != 4000 || p.DstPort != 5000 ||
			!bytes.Equal(p.SrcMAC, u.SrcMAC) || !bytes.Equal(p.DstMAC, u.DstMAC) {
			t.Fatalf("parsed %+v", p)
		}
		seq, ok := CheckPayload(p.Payload)
		if !ok || seq != uint64(plen)*31 {
			t.Fatalf("payload check: seq %d ok %v", seq, ok)
		}
		// Ethernet padding after the IP packet is ignored.
		if _, err := Parse(b[:n+10]); err != nil {
			t.Fatalf("padded: %v", err)
		}
	}
}

// Checksums worked out by hand for 10.0.0.1:1234 -> 10.0.0.2:5678, ID
// 0x1c46, payload "hello": the IPv4 header's 16-bit words sum to 0xf57b
// (complement 0x0a84); pseudo-header 0x1421 + UDP header 0x1b0d + payload
// 0x43d2 sum to 0x7300 (complement 0x8cff).
func TestKnownChecksums(t *testing.T) {
	u := &UDP{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"),
		SrcPort: 1234, DstPort: 5678, ID: 0x1c46,
	}
	b := make([]byte, 64)
	copy(b[HeadersLen:], "hello")
	n, err := u.Write(b, 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := uint16(b[24])<<8 | uint16(b[25]); got != 0x0a84 {
		t.Errorf("ip checksum %#04x, want 0x0a84", got)
	}
	if got := uint16(b[40])<<8 | uint16(b[41]); got != 0x8cff {
		t.Errorf("udp checksum %#04x, want 0x8cff", got)
	}
	if _, err := Parse(b[:n]); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptionDetected(t *testing.T) {
	b := make([]byte, 128)
	FillPayload(b[HeadersLen:HeadersLen+40], 9)
	n, err := testUDP().Write(b, 40)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{15, 22, 30, 36, 45, n - 1} {
		c := bytes.Clone(b[:n])
		c[off] ^= 0x40
		if _, err := Parse(c); err == nil {
			if p, _ := Parse(c); p.Payload != nil {
				if _, ok := CheckPayload(p.Payload); ok {
					t.Errorf("flipping byte %d went unnoticed", off)
				}
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	u := testUDP()
	if _, err := u.Write(make([]byte, 10), 0); !errors.Is(err, ErrShort) {
		t.Errorf("short buffer: %v", err)
	}
	bad := *u
	bad.SrcMAC = nil
	if _, err := bad.Write(make([]byte, 100), 0); err == nil {
		t.Error("nil MAC accepted")
	}
	bad = *u
	bad.DstIP = netip.MustParseAddr("::1")
	if _, err := bad.Write(make([]byte, 100), 0); err == nil {
		t.Error("IPv6 address accepted")
	}
	if _, err := u.Write(make([]byte, 100), -1); err == nil {
		t.Error("negative payload accepted")
	}
	for _, f := range [][]byte{nil, make([]byte, 41), make([]byte, 60)} {
		if _, err := Parse(f); err == nil {
			t.Errorf("parse of %d zero bytes succeeded", len(f))
		}
	}
}

func TestWriteAllocatesNothing(t *testing.T) {
	b := make([]byte, 256)
	u := testUDP()
	allocs := testing.AllocsPerRun(100, func() {
		FillPayload(b[HeadersLen:HeadersLen+22], 5)
		if _, err := u.Write(b, 22); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}

// FuzzParse: whatever the input, Parse does not panic; what it accepts is a
// datagram whose payload is the frame's bytes right after the UDP header,
// within the IPv4 total length, whose fields are the frame's, and which,
// written out again by UDP.Write with the same payload, parses back to the
// same values.
func FuzzParse(f *testing.F) {
	b := make([]byte, 100)
	n, _ := testUDP().Write(b, 30)
	f.Add(b[:n])
	f.Add(append(bytes.Clone(b[:n]), 0, 0, 0, 0)) // Ethernet padding
	noSum := bytes.Clone(b[:n])
	noSum[HeadersLen-2], noSum[HeadersLen-1] = 0, 0 // no UDP checksum
	f.Add(noSum)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, err := Parse(frame)
		if err != nil {
			return
		}
		ihl := int(frame[EthLen]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(frame[EthLen+2:]))
		start, end := EthLen+ihl+UDPLen, EthLen+total
		if len(p.Payload) != end-start || len(p.Payload) > 0 && &p.Payload[0] != &frame[start] {
			t.Fatalf("payload of %d bytes is not frame[%d:%d] (IHL %d, total length %d)", len(p.Payload), start, end, ihl, total)
		}
		udp := frame[EthLen+ihl:]
		if p.SrcPort != binary.BigEndian.Uint16(udp[0:]) || p.DstPort != binary.BigEndian.Uint16(udp[2:]) ||
			p.SrcIP.As4() != [4]byte(frame[EthLen+12:]) || p.DstIP.As4() != [4]byte(frame[EthLen+16:]) ||
			!bytes.Equal(p.DstMAC, frame[0:6]) || !bytes.Equal(p.SrcMAC, frame[6:12]) {
			t.Fatalf("fields %+v are not the frame's", p)
		}
		u := &UDP{SrcMAC: p.SrcMAC, DstMAC: p.DstMAC, SrcIP: p.SrcIP, DstIP: p.DstIP, SrcPort: p.SrcPort, DstPort: p.DstPort}
		out := make([]byte, HeadersLen+len(p.Payload))
		copy(out[HeadersLen:], p.Payload)
		m, err := u.Write(out, len(p.Payload))
		if err != nil {
			t.Fatalf("write back what Parse accepted: %v", err)
		}
		q, err := Parse(out[:m])
		if err != nil {
			t.Fatalf("parse what was written back: %v", err)
		}
		if !bytes.Equal(q.SrcMAC, p.SrcMAC) || !bytes.Equal(q.DstMAC, p.DstMAC) || q.SrcIP != p.SrcIP || q.DstIP != p.DstIP ||
			q.SrcPort != p.SrcPort || q.DstPort != p.DstPort || !bytes.Equal(q.Payload, p.Payload) {
			t.Fatalf("written back and parsed again: %+v, want %+v", q, p)
		}
	})
}

// TestHostileInput: lengths and headers a caller or the wire can give
// are refused with an error, never a panic.
func TestHostileInput(t *testing.T) {
	u := testUDP()
	b := make([]byte, 2048)
	for _, plen := range []int{math.MaxInt, math.MaxInt - HeadersLen + 1, math.MaxInt / 2, 1 << 40, 0xffff, 0xffff - IPv4Len - UDPLen + 1, math.MinInt} {
		testenv.NoPanic(t, "Write", func() {
			if _, err := u.Write(b, plen); err == nil {
				t.Errorf("Write of a %d-byte payload into %d bytes succeeded", plen, len(b))
			}
		})
	}
	big := make([]byte, HeadersLen+0xffff)
	if _, err := u.Write(big, 0xffff-IPv4Len-UDPLen); err != nil {
		t.Errorf("the largest IPv4 datagram: %v", err)
	}
	if _, err := u.Write(big, 0xffff-IPv4Len-UDPLen+1); err == nil {
		t.Error("a payload one byte past the largest IPv4 datagram was accepted")
	}

	FillPayload(b[HeadersLen:HeadersLen+30], 3)
	n, err := u.Write(b, 30)
	if err != nil {
		t.Fatal(err)
	}
	good := b[:n]
	// reIPsum recomputes the IPv4 header checksum of f after an edit,
	// so that the parser has to find what else is wrong.
	reIPsum := func(f []byte) []byte {
		ihl := int(f[EthLen]&0x0f) * 4
		f[EthLen+10], f[EthLen+11] = 0, 0
		if EthLen+ihl <= len(f) {
			binary.BigEndian.PutUint16(f[EthLen+10:], ^fold(sum(f[EthLen:EthLen+ihl], 0)))
		}
		return f
	}
	edit := func(f func(c []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"IHL 15, frame too short for it": edit(func(c []byte) []byte { c[EthLen] = 0x4f; return reIPsum(c) }),
		"IHL 4":                          edit(func(c []byte) []byte { c[EthLen] = 0x44; return c }),
		"IHL 0":                          edit(func(c []byte) []byte { c[EthLen] = 0x40; return c }),
		"version 6":                      edit(func(c []byte) []byte { c[EthLen] = 0x65; return reIPsum(c) }),
		"IPv6 ethertype":                 edit(func(c []byte) []byte { c[12], c[13] = 0x86, 0xdd; return c }),
		"VLAN tag":                       edit(func(c []byte) []byte { c[12], c[13] = 0x81, 0x00; return c }),
		"total length 0":                 edit(func(c []byte) []byte { c[EthLen+2], c[EthLen+3] = 0, 0; return reIPsum(c) }),
		"total length past the frame":    edit(func(c []byte) []byte { c[EthLen+2], c[EthLen+3] = 0xff, 0xff; return reIPsum(c) }),
		"total length below headers":     edit(func(c []byte) []byte { c[EthLen+3] = 27; c[EthLen+2] = 0; return reIPsum(c) }),
		"UDP length 0":                   edit(func(c []byte) []byte { c[EthLen+IPv4Len+4], c[EthLen+IPv4Len+5] = 0, 0; return c }),
		"UDP length 7":                   edit(func(c []byte) []byte { c[EthLen+IPv4Len+4], c[EthLen+IPv4Len+5] = 0, 7; return c }),
		"UDP length past the packet":     edit(func(c []byte) []byte { c[EthLen+IPv4Len+4], c[EthLen+IPv4Len+5] = 0xff, 0xff; return c }),
		"TCP":                            edit(func(c []byte) []byte { c[EthLen+9] = 6; return reIPsum(c) }),
		"cut in the UDP header":          good[:EthLen+IPv4Len+4],
		"cut in the IPv4 header":         good[:EthLen+10],
		"cut in the payload":             good[:n-1],
		"Ethernet header only":           good[:EthLen],
		// A fragment is not a whole datagram: a later one's first
		// bytes are payload, whatever they look like.
		"later fragment": edit(func(c []byte) []byte {
			binary.BigEndian.PutUint16(c[EthLen+6:], 100) // offset 800 bytes, no MF
			return reIPsum(c)
		}),
		"first fragment": edit(func(c []byte) []byte {
			binary.BigEndian.PutUint16(c[EthLen+6:], 0x2000) // MF
			return reIPsum(c)
		}),
	}
	for name, f := range cases {
		testenv.NoPanic(t, "Parse "+name, func() {
			if p, err := Parse(f); err == nil {
				t.Errorf("%s: parsed as %+v", name, p)
			}
		})
	}

	// IHL above 5: the options are skipped and still checksummed.
	opt := make([]byte, n+4)
	copy(opt, good[:EthLen+IPv4Len])
	copy(opt[EthLen+IPv4Len+4:], good[EthLen+IPv4Len:])
	opt[EthLen] = 0x46
	copy(opt[EthLen+IPv4Len:], []byte{1, 1, 1, 0}) // NOP NOP NOP EOL
	binary.BigEndian.PutUint16(opt[EthLen+2:], uint16(n+4-EthLen))
	reIPsum(opt)
	p, err := Parse(opt)
	if err != nil {
		t.Fatalf("IHL 6: %v", err)
	}
	if _, ok := CheckPayload(p.Payload); !ok || len(p.Payload) != 30 || p.SrcPort != u.SrcPort || p.DstPort != u.DstPort {
		t.Errorf("IHL 6: parsed %+v", p)
	}
	opt[EthLen+IPv4Len] = 7 // an option byte: the header checksum covers it
	if _, err := Parse(opt); err == nil {
		t.Error("IHL 6: a changed option went unnoticed")
	}
}
