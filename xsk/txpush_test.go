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

// TestAllocSendsWhatTheKickLeft queues a batch eight times the completion
// ring: the kernel stops sending whenever that ring is full, and the kick,
// which reaps between its system calls, gives up after a bounded number of
// them with the rest of the batch in the TX ring. A sender that waits for
// frames through Alloc (as one does when every transmit frame is in
// flight) gets them all back, and the peer receives every frame.
func TestAllocSendsWhatTheKickLeft(t *testing.T) {
	const batch = 64
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{TxOnly: true, Bind: xsk.BindCopy, NumFrames: 128, TxFrames: batch,
		FillRingSize: 64, RxRingSize: 64, TxRingSize: batch, CompletionRingSize: batch / 8})
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Host, v.Peer, 30)
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, batch, &got, time.Now().Add(10*time.Second)) }()
	// The batch takes every transmit frame.
	if err := transmitFlow(t, s, fl, 0, batch); err != nil {
		t.Fatal(err)
	}
	if c := s.Frames(); c.Tx == 0 {
		t.Fatalf("frames after Transmit: %+v; want some left in the TX ring", c)
	}

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
	sn := <-done
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if sn.n != batch || st.Completed != batch || st.TxDropped != 0 || txDropped(t, v.Host) != 0 {
		t.Fatalf("peer received %d of %d frames; stats %+v, interface tx_dropped %d", sn.n, batch, st, txDropped(t, v.Host))
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

// TestTransmitCountsWhatTheDeviceDrops transmits while the peer is down,
// so that the host end has no carrier: in copy mode the kernel drops
// every frame it tries (NET_XMIT_DROP), gives it back on the completion
// ring as if sent, and answers the sendto with EBUSY. Each such frame is
// counted in TxDropped, as many as the interface's tx_dropped, and the
// one Transmit tries them all rather than stopping at the first. Once the
// peer is up, frames are sent and arrive, and TxDropped stays as it was.
func TestTransmitCountsWhatTheDeviceDrops(t *testing.T) {
	const batch = 48
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &xsk.Options{TxOnly: true, Bind: xsk.BindCopy, NumFrames: 128, TxFrames: 64, FillRingSize: 64, RxRingSize: 64})
	fl := newFlow(v.Host, v.Peer, 30)
	dropped0 := txDropped(t, v.Host)
	testenv.SetLink(t, v.Peer, false)
	if err := transmitFlow(t, s, fl, 0, batch); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	dropped := txDropped(t, v.Host) - dropped0
	t.Logf("peer down: queued %d, completed %d, socket TxDropped %d, interface tx_dropped %d", st.TxPackets, st.Completed, st.TxDropped, dropped)
	if st.TxPackets != batch || st.Completed != batch || st.TxDropped != batch || dropped != batch {
		t.Fatalf("%d frames transmitted with the peer down: stats %+v, interface tx_dropped %d; want %d queued, completed, dropped and counted by both",
			batch, st, dropped, batch)
	}
	if c := s.Frames(); c.Tx != 0 {
		t.Fatalf("frames after Transmit with the peer down: %+v; want none left with the kernel", c)
	}

	// The same frames again, with the peer up: all sent, none dropped.
	// Had any of the first ones arrived, the peer would see it twice.
	testenv.SetLink(t, v.Peer, true)
	peer := newPacketSocket(t, v.Peer)
	var got atomic.Int64
	done := make(chan *seen)
	go func() { done <- peer.receiveAll(t, fl, batch, &got, time.Now().Add(10*time.Second)) }()
	if err := transmitFlow(t, s, fl, 0, batch); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); s.Frames().Tx > 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := s.Complete(); err != nil {
			t.Fatal(err)
		}
	}
	sn := <-done
	if st, err = s.Stats(); err != nil {
		t.Fatal(err)
	}
	dropped = txDropped(t, v.Host) - dropped0
	if sn.n != batch || st.TxPackets != 2*batch || st.Completed != 2*batch || st.TxDropped != batch || dropped != batch {
		t.Fatalf("%d more frames with the peer up: peer received %d; stats %+v, interface tx_dropped %d; want all sent, %d dropped in all",
			batch, sn.n, st, dropped, batch)
	}
	checkFramesHome(t, s)

	// Counting a drop allocates nothing.
	testenv.SetLink(t, v.Peer, false)
	one := make([]xsk.Desc, 1)
	rounds := 0
	allocs := testing.AllocsPerRun(50, func() {
		rounds++
		if n, err := s.Alloc(one); n != 1 || err != nil {
			t.Fatalf("alloc: %d, %v", n, err)
		}
		one[0].Len = 60
		if n, err := s.Transmit(one); n != 1 || err != nil {
			t.Fatalf("transmit: %d, %v", n, err)
		}
	})
	if st, err = s.Stats(); err != nil {
		t.Fatal(err)
	}
	if allocs != 0 || st.TxDropped != uint64(batch+rounds) {
		t.Fatalf("%d frames sent one at a time with the peer down: %v allocations each, TxDropped %d; want none and %d",
			rounds, allocs, st.TxDropped, batch+rounds)
	}
}
