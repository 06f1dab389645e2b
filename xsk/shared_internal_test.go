package xsk

import (
	"errors"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestClosedSharingSocketGivesBackSentFrames closes sockets that share a
// UMEM with frames they transmitted and never reaped (ManualRings): the
// frames their completion ring had returned come back to the UMEM at the
// open socket's next Complete, where Alloc hands them out again, and the
// ones the kernel never sent (the link was down) count as lost, not as in
// flight.
func TestClosedSharingSocketGivesBackSentFrames(t *testing.T) {
	const sent = 64
	v1 := testenv.NewVeth(t, nil)
	v2 := testenv.NewVeth(t, nil)
	v3 := testenv.NewVeth(t, nil)
	o := Options{NumFrames: 4096, FillRingSize: 256, CompletionRingSize: 256}
	a, err := Open(v1.Host.Name, 0, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	txFrames := a.UMEM().Options().TxFrames
	bo := o
	bo.NumFrames, bo.ShareUMEM, bo.ManualRings = 0, a, true

	// transmit sends sent frames on s, which reaps nothing itself.
	transmit := func(s *Socket) error {
		descs := make([]Desc, sent)
		if n, err := s.Alloc(descs); n != sent || err != nil {
			t.Fatalf("alloc: %d of %d, %v", n, sent, err)
		}
		for i := range descs {
			descs[i].Len = 60
		}
		n, err := s.Transmit(descs)
		if n != sent {
			t.Fatalf("transmit queued %d of %d: %v", n, sent, err)
		}
		return err
	}

	// b's frames are sent: wait until its completion ring holds them all.
	b, err := Open(v2.Host.Name, 0, &bo)
	if err != nil {
		t.Fatal(err)
	}
	if err := transmit(b); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); b.rings.CompletionRing().Available(sent) < sent; {
		if time.Now().After(deadline) {
			t.Fatalf("the kernel completed %d of %d frames", b.rings.CompletionRing().Available(sent), sent)
		}
		time.Sleep(time.Millisecond)
	}
	lost := a.Frames().Lost + b.rings.Held()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Complete(); err != nil {
		t.Fatal(err)
	}
	if c := a.Frames(); c.Tx != 0 || c.Lost != lost || c.Total() != 4096 {
		t.Fatalf("after the sharing socket closed: %+v, want none in flight and %d lost", c, lost)
	}
	all := make([]Desc, txFrames+1)
	if n, _ := a.Alloc(all); n != txFrames {
		t.Fatalf("a allocated %d transmit frames after b closed, want all %d", n, txFrames)
	}
	if err := a.Release(all[:txFrames]); err != nil {
		t.Fatal(err)
	}

	// c's link is down: the kick fails and the frames stay in its TX
	// ring, never sent.
	c, err := Open(v3.Host.Name, 0, &bo)
	if err != nil {
		t.Fatal(err)
	}
	testenv.SetLink(t, v3.Host, false)
	if err := transmit(c); !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("transmit on a link that is down: %v, want ENETDOWN", err)
	}
	lost = a.Frames().Lost + c.rings.Held() + sent
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Complete(); err != nil {
		t.Fatal(err)
	}
	if cn := a.Frames(); cn.Tx != 0 || cn.Lost != lost || cn.Total() != 4096 {
		t.Fatalf("after the socket with unsent frames closed: %+v, want none in flight and %d lost", cn, lost)
	}
	if n, _ := a.Alloc(all); n != txFrames-sent {
		t.Fatalf("a allocated %d transmit frames, want the %d not lost", n, txFrames-sent)
	}
}
