package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/testenv"
)

func request(t testing.TB, payload string) []byte {
	t.Helper()
	b := make([]byte, 2048)
	copy(b[packet.HeadersLen:], payload)
	h := packet.UDP{
		SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2},
		SrcIP: netip.MustParseAddr("10.1.2.1"), DstIP: netip.MustParseAddr("10.1.2.2"),
		SrcPort: 40000, DstPort: 9000, ID: 77,
	}
	n, err := h.Write(b, len(payload))
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

func TestReply(t *testing.T) {
	for _, payload := range []string{"", "x", "hello, world", strings.Repeat("abc", 400)} {
		f := request(t, payload)
		// A kernel sending over veth leaves the UDP checksum partial:
		// reply must not insist on it.
		f[packet.EthLen+packet.IPv4Len+6] ^= 0x5a
		l := reply(f, 9000)
		if l != len(f) {
			t.Fatalf("payload %q: reply length %d, want %d", payload, l, len(f))
		}
		p, err := packet.Parse(f[:l]) // checks both checksums
		if err != nil {
			t.Fatalf("payload %q: reply does not parse: %v", payload, err)
		}
		if p.SrcIP != netip.MustParseAddr("10.1.2.2") || p.DstIP != netip.MustParseAddr("10.1.2.1") ||
			p.SrcPort != 9000 || p.DstPort != 40000 ||
			!bytes.Equal(p.SrcMAC, []byte{2, 0, 0, 0, 0, 2}) || !bytes.Equal(p.DstMAC, []byte{2, 0, 0, 0, 0, 1}) {
			t.Fatalf("payload %q: reply headers %+v not turned around", payload, p)
		}
		if string(p.Payload) != payload {
			t.Fatalf("reply payload %q, want %q", p.Payload, payload)
		}
	}
}

func TestReplyRefuses(t *testing.T) {
	for name, mangle := range map[string]func([]byte) []byte{
		"other port":  func(f []byte) []byte { f[36] ^= 1; return f },
		"bad ip sum":  func(f []byte) []byte { f[24] ^= 1; return f },
		"fragment":    func(f []byte) []byte { f[20] |= 0x20; return f },
		"not ipv4":    func(f []byte) []byte { f[12] = 0x86; return f },
		"not udp":     func(f []byte) []byte { f[23] = 6; return f },
		"truncated":   func(f []byte) []byte { return f[:len(f)-1] },
		"short":       func(f []byte) []byte { return f[:20] },
		"ip options":  func(f []byte) []byte { f[14] = 0x46; return f },
		"bad udp len": func(f []byte) []byte { f[39]++; return f },
	} {
		f := mangle(request(t, "payload"))
		if l := reply(f, 9000); l != 0 {
			t.Errorf("%s: reply answered (%d bytes)", name, l)
		}
	}
}

func TestReplyAllocs(t *testing.T) {
	f := request(t, "payload")
	if a := testing.AllocsPerRun(100, func() { reply(f, 9000); reply(f, 40000) }); a != 0 {
		t.Fatalf("reply allocates %v times", a)
	}
}

// TestEcho runs the server on a veth pair and a kernel UDP client (net.Dial
// in the other namespace) that must get every datagram back intact. ARP
// goes through the kernel: the XDP filter passes it.
func TestEcho(t *testing.T) {
	testenv.RequirePrivileged(t)
	var c app.Config
	c.Defaults()
	c.Wait = app.WaitPoll
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &c, 9000, 500, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "500 of 500 datagrams came back intact") {
		t.Fatalf("client did not report 500 intact replies:\n%s", out.String())
	}
}
