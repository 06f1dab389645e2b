package baseline_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestAFPacketReceiveKeepsDeadline fills several ring blocks and receives
// with a deadline that passes while the first frame is handled: Receive
// must stop there (at the end of that block) rather than go on through
// every block the kernel has filled, which under a steady stream of frames
// would be never; the next call takes the rest.
func TestAFPacketReceiveKeepsDeadline(t *testing.T) {
	v := newVeth(t)
	const n = 300
	var deadline time.Time
	slow := true
	r, s := afPacketPair(t, v, &baseline.AFPacketRxOptions{
		BlockSize: os.Getpagesize(), // a few dozen frames a block
		Blocks:    64,
		DstPort:   testPort,
		OnPacket: func([]byte) {
			if slow {
				slow = false
				time.Sleep(time.Until(deadline) + 10*time.Millisecond)
			}
		},
	})
	frame := make([]byte, 128)
	l := udpFrame(t, v.Peer, v.Host, 18, 0, frame)
	if c, err := s.Send(frame[:l], n); err != nil || c.Packets != n {
		t.Fatalf("Send = %+v, %v", c, err)
	}
	time.Sleep(100 * time.Millisecond) // for the kernel to fill (and retire) the blocks

	deadline = time.Now().Add(10 * time.Millisecond)
	first, err := r.Receive(0, deadline)
	if err != nil {
		t.Fatal(err)
	}
	if first.Packets == 0 || first.Packets >= n {
		t.Fatalf("Receive whose deadline passed during its first frame took %d of %d frames, want those of one block", first.Packets, n)
	}
	rest, err := r.Receive(n-first.Packets, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if first.Packets+rest.Packets != n {
		t.Fatalf("received %d+%d frames, want %d", first.Packets, rest.Packets, n)
	}
}

// TestAFPacketReceiveAfterLinkDown takes the receiver's interface down and
// up again. The kernel then sets ENETDOWN on the socket, which makes poll
// return at once until it is read: Receive must report it (rather than
// spin on poll until its deadline whenever no frame is ready) and go on
// receiving afterwards.
func TestAFPacketReceiveAfterLinkDown(t *testing.T) {
	v := newVeth(t)
	r, s := afPacketPair(t, v, &baseline.AFPacketRxOptions{DstPort: testPort})
	testenv.SetLink(t, v.Host, false)
	testenv.SetLink(t, v.Host, true)
	c, err := r.Receive(0, time.Now().Add(100*time.Millisecond))
	if !errors.Is(err, unix.ENETDOWN) || c.Packets != 0 {
		t.Fatalf("Receive after the interface went down = %+v, %v; want ENETDOWN", c, err)
	}
	// The peer lost its carrier with the host end: until the link
	// watcher has given it its queueing discipline back, the frames it
	// sends are dropped.
	for _, e := range []netenv.Endpoint{v.Host, v.Peer} {
		if err := e.WaitActive(); err != nil {
			t.Fatal(err)
		}
	}
	const n = 100
	frame := make([]byte, 128)
	l := udpFrame(t, v.Peer, v.Host, 18, 0, frame)
	if c, err := s.Send(frame[:l], n); err != nil || c.Packets != n {
		t.Fatalf("Send = %+v, %v", c, err)
	}
	if c, err := r.Receive(n, time.Now().Add(5*time.Second)); err != nil || c.Packets != n {
		t.Fatalf("Receive after the interface came back = %+v, %v; want %d frames", c, err, n)
	}
}
