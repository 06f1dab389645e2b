package packet

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
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

func FuzzParse(f *testing.F) {
	b := make([]byte, 100)
	n, _ := testUDP().Write(b, 30)
	f.Add(b[:n])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, err := Parse(frame)
		if err == nil && len(p.Payload) > len(frame) {
			t.Fatal("payload longer than frame")
		}
	})
}
