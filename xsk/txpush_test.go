package xsk_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// transmitFlow allocates n frames, writes frames first.. of fl into them
// and transmits them in one batch, which must all fit the TX ring.
func transmitFlow(t *testing.T, s *xsk.Socket, fl *flow, first, n int) error {
	t.Helper()
	descs := make([]xsk.Desc, n)
	if got, err := s.Alloc(descs); got != n || err != nil {
		t.Fatalf("alloc: %d of %d, %v", got, n, err)
	}
	for i := range descs {
		l, err := fl.write(s.Frame(descs[i])[:descs[i].Len], uint64(first+i))
		if err != nil {
			t.Fatal(err)
		}
		descs[i].Len = uint32(l)
	}
	k, err := s.Transmit(descs)
	if k != n {
		t.Fatalf("transmit queued %d of %d: %v", k, n, err)
	}
	return err
}

// TestCompleteSendsWhatTheKickLeft fills a small completion ring that
// the caller reaps itself (ManualRings): the kernel stops sending with
// the rest of the batch in the TX ring. Complete, which the caller calls
// to get its frames back, sends that rest; nothing else is called. Every
// frame queued reaches the peer and comes back.
func TestCompleteSendsWhatTheKickLeft(t *testing.T) {
	const batch = 200
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{
		TxOnly: true, ManualRings: true, Bind: xsk.BindCopy,
		NumFrames: 512, TxFrames: 256, FillRingSize: 128, RxRingSize: 128, TxRingSize: 256, CompletionRingSize: 32,
	})
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Host, v.Peer, 30)
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, batch, &got, time.Now().Add(10*time.Second)) }()

	if err := transmitFlow(t, s, fl, 0, batch); err != nil {
		t.Fatal(err)
	}
	completeAll(t, s, batch, done, nil)
}

// TestAllocSendsWhatTheKickLeft queues frames while the peer is down: the
// kernel drops the first one it tries and leaves the rest in the TX ring.
// Once the peer is up, a sender that waits for frames through Alloc (as
// one does when every transmit frame is in flight) gets them back, and
// the peer receives every frame the kernel did not drop.
func TestAllocSendsWhatTheKickLeft(t *testing.T) {
	const batch = 64
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{TxOnly: true, Bind: xsk.BindCopy, NumFrames: 128, TxFrames: batch, FillRingSize: 64, RxRingSize: 64})
	testenv.SetLink(t, v.Peer, false)
	fl := newFlow(v.Host, v.Peer, 30)
	// The batch takes every transmit frame.
	if err := transmitFlow(t, s, fl, 0, batch); err != nil {
		t.Fatal(err)
	}
	testenv.SetLink(t, v.Peer, true)
	peer := newPacketSocket(t, v.Peer)

	// Alloc until it has handed out every transmit frame.
	held := make([]xsk.Desc, batch)
	back := 0
	for deadline := time.Now().Add(10 * time.Second); back < batch && time.Now().Before(deadline); {
		n, err := s.Alloc(held[back:])
		if err != nil {
			t.Fatal(err)
		}
		back += n
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if err := s.Release(held[:back]); err != nil {
		t.Fatal(err)
	}
	if back != batch {
		t.Fatalf("Alloc got back %d of the %d frames queued; frames %+v", back, batch, s.Frames())
	}
	// The frames the kernel dropped while the peer was down count as
	// tx_dropped on the host end; the peer has all the others.
	dropped := txDropped(t, v.Host)
	if dropped == 0 || dropped >= batch {
		t.Fatalf("the kernel dropped %d of %d frames while the peer was down, want some but not all", dropped, batch)
	}
	var got atomic.Int64
	sn := peer.receiveAll(t, fl, batch-int(dropped), &got, time.Now().Add(10*time.Second))
	if sn.n != batch-int(dropped) {
		t.Fatalf("peer received %d of %d frames, the kernel dropped %d", sn.n, batch, dropped)
	}
	checkFramesHome(t, s)
}

// txDropped is ep's count of frames dropped on transmit.
func txDropped(t *testing.T, ep netenv.Endpoint) uint64 {
	t.Helper()
	var n uint64
	if err := ep.Do(func() error {
		link, err := netlink.LinkByName(ep.Name)
		if err != nil {
			return err
		}
		n = link.Attrs().Statistics.TxDropped
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTransmitOnALinkThatIsDown queues frames while the socket's own link
// is down: Transmit queues them and says why they are not sent, Complete
// says so too while the link stays down, and once it is up Complete sends
// them all: every frame queued reaches the peer and comes back.
func TestTransmitOnALinkThatIsDown(t *testing.T) {
	const batch = 64
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{TxOnly: true, Bind: xsk.BindCopy, NumFrames: 128, TxFrames: batch, FillRingSize: 64, RxRingSize: 64})
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Host, v.Peer, 30)
	testenv.SetLink(t, v.Host, false)
	if err := transmitFlow(t, s, fl, 0, batch); !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("transmit on a link that is down: %v, want ENETDOWN", err)
	}
	if n, err := s.Complete(); n != 0 || !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("complete on a link that is down: %d, %v; want 0 and ENETDOWN", n, err)
	}
	testenv.SetLink(t, v.Host, true)

	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, batch, &got, time.Now().Add(10*time.Second)) }()
	completeAll(t, s, batch, done, unix.ENETDOWN)
}

// completeAll calls Complete until the batch frames queued on s have
// completed (failing on an error other than ignore) and checks that they
// all did, that the peer received them all (done reports it) and that the
// socket's statistics and frames agree.
func completeAll(t *testing.T, s *xsk.Socket, batch int, done <-chan *seen, ignore error) {
	t.Helper()
	completed := 0
	for deadline := time.Now().Add(10 * time.Second); completed < batch && time.Now().Before(deadline); {
		n, err := s.Complete()
		if err != nil && (ignore == nil || !errors.Is(err, ignore)) {
			t.Fatal(err)
		}
		completed += n
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	sn := <-done
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if completed != batch || sn.n != batch || st.TxPackets != uint64(batch) || st.Completed != uint64(batch) {
		t.Fatalf("queued %d frames: %d completed, peer received %d; stats %+v, frames %+v",
			batch, completed, sn.n, st, s.Frames())
	}
	checkFramesHome(t, s)
}

// TestTransmitBadDescOnALinkThatIsDown transmits a batch whose second
// descriptor is refused while the link is down: the error matches both
// ErrInvalidDesc, for the descriptor, and ENETDOWN, for the first frame,
// which was queued and not sent.
func TestTransmitBadDescOnALinkThatIsDown(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{TxOnly: true, Bind: xsk.BindCopy, NumFrames: 64, TxFrames: 64, FillRingSize: 64, RxRingSize: 64})
	testenv.SetLink(t, v.Host, false)
	descs := make([]xsk.Desc, 2)
	if n, err := s.Alloc(descs); n != 2 || err != nil {
		t.Fatalf("alloc: %d, %v", n, err)
	}
	descs[0].Len, descs[1].Len = 60, 0 // an empty packet is refused
	k, err := s.Transmit(descs)
	var oe *xsk.OpError
	if k != 1 || !errors.Is(err, xsk.ErrInvalidDesc) || !errors.Is(err, unix.ENETDOWN) || !errors.As(err, &oe) || oe.Op != "transmit" {
		t.Fatalf("transmit of a good and a bad descriptor on a link that is down: %d, %v; want 1 and an OpError matching ErrInvalidDesc and ENETDOWN", k, err)
	}
	if err := s.Release(descs[1:]); err != nil {
		t.Fatal(err)
	}
	testenv.SetLink(t, v.Host, true)
	for deadline := time.Now().Add(10 * time.Second); s.Frames().Tx > 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := s.Complete(); err != nil && !errors.Is(err, unix.ENETDOWN) {
			t.Fatal(err)
		}
	}
	if c := s.Frames(); c.Tx != 0 || c.Free != 64 {
		t.Fatalf("frames after the link came up: %+v", c)
	}
}
