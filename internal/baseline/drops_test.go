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

// both returns the counters of v's host and peer ends.
func both(t *testing.T, v *netenv.Veth) [2]pktgen.Counters {
	return [2]pktgen.Counters{counters(t, v.Host), counters(t, v.Peer)}
}

// arrived waits until the n packets sent from v's peer end since before
// (from both) are accounted for at veth: taken by the host end (its
// rx_packets) or dropped on the way (the peer's tx_dropped: the CPU's
// backlog, which other traffic shares, was full). Then it waits a little
// longer, for the receiving socket to see them.
func arrived(t *testing.T, v *netenv.Veth, before [2]pktgen.Counters, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		now := both(t, v)
		rx, dropped := now[0].Sub(before[0]).RxPackets, now[1].Sub(before[1]).TxDropped
		if rx+dropped >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s took %d of %d packets, and veth dropped %d", v.Host.Name, rx, n, dropped)
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
		overflowThenClose(t, v, r, n, "frames sent to a one-page ring", func() (baseline.Counts, error) { return s.Send(frame[:l], n) })
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
		overflowThenClose(t, v, r, n, "datagrams sent to a 64 KiB buffer", func() (baseline.Counts, error) { return s.Send(n) })
	})
}

// overflowThenClose sends n packets from v's peer end with send to r, at
// the host end, which reads none; waits until veth has handed them over
// (see arrived); closes r, and checks that Stats still reports drops.
// what says what was sent, for the failure message.
func overflowThenClose(t *testing.T, v *netenv.Veth, r baseline.Receiver, n uint64, what string, send func() (baseline.Counts, error)) {
	t.Helper()
	hb := both(t, v)
	if c, err := send(); err != nil || c.Packets != n {
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
		t.Fatalf("Stats() after Close = %+v, want the drops of %d %s", st, n, what)
	}
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
