package baseline_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
)

// arrived waits until v's host end has taken n packets more than it had
// at before, and a little longer, for the receiving socket to see them.
func arrived(t *testing.T, v *netenv.Veth, before pktgen.Counters, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); counters(t, v.Host).Sub(before).RxPackets < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s took %d of %d packets", v.Host.Name, counters(t, v.Host).Sub(before).RxPackets, n)
		}
	}
	time.Sleep(50 * time.Millisecond)
}

// TestDropsKeptAfterClose overflows each receiver (a one-block ring, a
// small socket buffer) without reading, closes it without asking for Stats
// first, and checks that Stats still reports the drops: the kernel's
// counters go with the socket, so Close must read them.
func TestDropsKeptAfterClose(t *testing.T) {
	const n = 900 // under veth's backlog of 1000: the drops are the receiver's
	t.Run("afpacket", func(t *testing.T) {
		v := newVeth(t)
		r, s := afPacketPair(t, v, &baseline.AFPacketRxOptions{BlockSize: os.Getpagesize(), Blocks: 1, DstPort: testPort})
		frame := make([]byte, 128)
		l := udpFrame(t, v.Peer, v.Host, 18, 0, frame)
		hb := counters(t, v.Host)
		if c, err := s.Send(frame[:l], n); err != nil || c.Packets != n {
			t.Fatalf("Send = %+v, %v", c, err)
		}
		arrived(t, v, hb, n)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		st, err := r.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Drops == 0 {
			t.Fatalf("Stats() after Close = %+v, want the drops of %d frames sent to a one-page ring", st, n)
		}
	})
	t.Run("udp", func(t *testing.T) {
		v := newVeth(t)
		r, err := baseline.NewUDPReceiver(netip.AddrPortFrom(v.Host.IP(), testPort), &baseline.UDPOptions{SockBuf: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, r)
		var s *baseline.UDPSender
		in(t, v.Peer, func() (err error) {
			s, err = baseline.NewUDPSender(netip.AddrPort{}, r.Addr(), nil)
			return err
		})
		closeLater(t, s)
		hb := counters(t, v.Host)
		if c, err := s.Send(n); err != nil || c.Packets != n {
			t.Fatalf("Send = %+v, %v", c, err)
		}
		arrived(t, v, hb, n)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		st, err := r.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Drops == 0 {
			t.Fatalf("Stats() after Close = %+v, want the drops of %d datagrams sent to a 64 KiB buffer", st, n)
		}
	})
}

// TestUDPReceiveTruncated sends datagrams longer than the receiver's
// buffers: Receive must count them with their lengths, hand none of the
// cut payloads to OnPacket, and return an error that names BufSize.
func TestUDPReceiveTruncated(t *testing.T) {
	v := newVeth(t)
	var cut int
	r, err := baseline.NewUDPReceiver(netip.AddrPortFrom(v.Host.IP(), testPort), &baseline.UDPOptions{BufSize: 1000, OnPacket: func([]byte) { cut++ }})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, r)
	var s *baseline.UDPSender
	in(t, v.Peer, func() (err error) {
		s, err = baseline.NewUDPSender(netip.AddrPort{}, r.Addr(), &baseline.UDPOptions{PayloadLen: 1200})
		return err
	})
	closeLater(t, s)
	if c, err := s.Send(4); err != nil || c.Packets != 4 {
		t.Fatalf("Send = %+v, %v", c, err)
	}
	var c baseline.Counts
	for deadline := time.Now().Add(5 * time.Second); c.Packets < 4 && time.Now().Before(deadline); {
		k, err := r.Receive(4-c.Packets, deadline)
		c.Packets, c.Bytes = c.Packets+k.Packets, c.Bytes+k.Bytes
		if err == nil || !strings.Contains(err.Error(), "BufSize") {
			t.Fatalf("Receive of 1200-byte datagrams into 1000-byte buffers = %+v, %v; want an error naming BufSize", k, err)
		}
	}
	if c.Packets != 4 || c.Bytes != 4*1200 || cut != 0 {
		t.Fatalf("received %+v and handed %d cut payloads to OnPacket; want 4 datagrams of 1200 bytes, none handed over", c, cut)
	}
}
