package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestKernelAcceptsChecksums sends frames that Write built out of an
// AF_PACKET socket on one end of a veth pair and receives them with a
// kernel UDP socket on the other, which drops a frame whose IPv4 or UDP
// checksum is wrong: every payload length (odd ones too, and the one whose
// UDP checksum comes out as zero) arrives whole; a frame with a checksum
// flipped does not, so the kernel did check.
func TestKernelAcceptsChecksums(t *testing.T) {
	testenv.RequirePrivileged(t)
	a, b := testenv.NewNetns(t), testenv.NewNetns(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{HostNS: a, PeerNS: b})

	var rx int
	if err := v.Peer.Do(func() (err error) {
		rx, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		return errors.Join(
			unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv),
			unix.Bind(rx, &unix.SockaddrInet4{Port: 5000, Addr: v.Peer.IP().As4()}))
	}); err != nil {
		t.Fatalf("UDP socket in B: %v", err)
	}
	t.Cleanup(func() { unix.Close(rx) })
	var tx int
	if err := v.Host.Do(func() (err error) {
		tx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatalf("AF_PACKET socket in A: %v", err)
	}
	t.Cleanup(func() { unix.Close(tx) })
	to := &unix.SockaddrLinklayer{Ifindex: v.Host.Index, Halen: 6}
	copy(to.Addr[:], v.Peer.MAC)

	u := &UDP{SrcMAC: v.Host.MAC, DstMAC: v.Peer.MAC, SrcIP: v.Host.IP(), DstIP: v.Peer.IP(), SrcPort: 4000, DstPort: 5000}
	buf := make([]byte, 2048)
	send := func(frame []byte) {
		t.Helper()
		if err := unix.Sendto(tx, frame, 0, to); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	in := make([]byte, 2048)
	recv := func() []byte {
		t.Helper()
		n, from, err := unix.Recvfrom(rx, in, 0)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if sa, ok := from.(*unix.SockaddrInet4); !ok || sa.Port != 4000 || sa.Addr != v.Host.IP().As4() {
			t.Fatalf("received from %+v", from)
		}
		return in[:n]
	}
	build := func(plen int, seq uint64) []byte {
		t.Helper()
		FillPayload(buf[HeadersLen:HeadersLen+plen], seq)
		u.ID = uint16(seq)
		n, err := u.Write(buf, plen)
		if err != nil {
			t.Fatal(err)
		}
		return buf[:max(n, MinFrame)] // padded as on the wire
	}

	for _, plen := range []int{SeqLen, 9, 17, 18, 19, 100, 101, 1471, 1472} {
		frame := build(plen, uint64(plen))
		want := bytes.Clone(frame[HeadersLen : HeadersLen+plen])
		send(frame)
		if got := recv(); !bytes.Equal(got, want) {
			t.Errorf("payload of %d bytes: the kernel delivered %d bytes, not what was sent", plen, len(got))
		}
	}

	// The payload whose UDP checksum sums to zero, which Write must
	// send as 0xffff: 0 would say "no checksum".
	zero := func() []byte {
		for w := range 1 << 16 {
			FillPayload(buf[HeadersLen:HeadersLen+20], 1)
			binary.BigEndian.PutUint16(buf[HeadersLen+18:], uint16(w))
			n, err := u.Write(buf, 20)
			if err != nil {
				t.Fatal(err)
			}
			if binary.BigEndian.Uint16(buf[EthLen+IPv4Len+6:]) == 0xffff {
				return buf[:max(n, MinFrame)]
			}
		}
		t.Fatal("no payload gives a UDP checksum of zero")
		return nil
	}()
	want := bytes.Clone(zero[HeadersLen : HeadersLen+20])
	send(zero)
	if got := recv(); !bytes.Equal(got, want) {
		t.Errorf("checksum 0xffff: received %x, want %x", got, want)
	}

	// A wrong checksum is dropped: the marker sent after it is what
	// arrives next.
	for _, at := range []struct {
		name string
		off  int
	}{{"IPv4 header", EthLen + 10}, {"UDP", EthLen + IPv4Len + 6}} {
		bad := bytes.Clone(build(30, 77))
		bad[at.off] ^= 0x01
		send(bad)
		marker := build(31, 78)
		send(marker)
		got := recv()
		if seq, ok := CheckPayload(got); !ok || seq != 78 {
			t.Errorf("a frame with a wrong %s checksum was delivered (seq %d, %d bytes)", at.name, seq, len(got))
			recv()
		}
	}
}
