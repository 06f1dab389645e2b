package baseline_test

import (
	"errors"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
)

// setMTU sets the MTU of ep's link, in its namespace.
func setMTU(t testing.TB, ep netenv.Endpoint, mtu int) {
	t.Helper()
	in(t, ep, func() error {
		l, err := netlink.LinkByIndex(ep.Index)
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(l, mtu)
	})
}

// txPair makes an AF_PACKET sender with opts on v's host end and a receiver
// on its peer end that keeps only the frames to testPort and hands them to
// seqs.
func txPair(t *testing.T, v *netenv.Veth, opts *baseline.AFPacketTxOptions, seqs *seqSet) (*baseline.AFPacketSender, *baseline.AFPacketReceiver) {
	t.Helper()
	s, err := baseline.NewAFPacketSender(v.Host.Index, opts)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, s)
	var r *baseline.AFPacketReceiver
	in(t, v.Peer, func() (err error) {
		r, err = baseline.NewAFPacketReceiver(v.Peer.Index, &baseline.AFPacketRxOptions{DstPort: testPort, OnPacket: seqs.frame})
		return err
	})
	closeLater(t, r)
	return s, r
}

// sendSeqs sends frames with sequence numbers 0..n-1 from v's host end and
// checks that the peer's receiver got exactly those.
func sendSeqs(t *testing.T, v *netenv.Veth, s *baseline.AFPacketSender, r *baseline.AFPacketReceiver, seqs *seqSet, n uint64) {
	t.Helper()
	receiveAll(t, r, n, func() {
		paced(t, n, backlogChunk, func(k uint64) error {
			c, err := s.SendFunc(k, func(seq uint64, b []byte) int { return udpFrame(t, v.Host, v.Peer, 18, seq, b) })
			if err == nil && c.Packets != k {
				err = errors.New("short send")
			}
			return err
		}, seqs.n.Load)
	})
	seqs.check()
}

// TestAFPacketSenderRecoversFromOversizedFrame sends a frame longer than
// the device's MTU, which the kernel refuses (EMSGSIZE) and marks as of
// the wrong format in the ring: Send must count nothing and the frames
// sent after it must all go out, in order, with no sequence number lost.
func TestAFPacketSenderRecoversFromOversizedFrame(t *testing.T) {
	v := newVeth(t)
	const n = 1000
	seqs := newSeqSet(t, n)
	s, r := txPair(t, v, &baseline.AFPacketTxOptions{Frames: 16, Batch: 4}, seqs)

	big := make([]byte, 2000)
	l := udpFrame(t, v.Host, v.Peer, 1600, 0, big)
	c, err := s.Send(big[:l], 3)
	if !errors.Is(err, unix.EMSGSIZE) {
		t.Fatalf("Send of a %d-byte frame over MTU 1500: %+v, %v; want EMSGSIZE", l, c, err)
	}
	if c.Packets != 0 || c.Bytes != 0 || s.Stats().Packets != 0 {
		t.Fatalf("Send of frames the kernel refused counted %+v (Stats %+v)", c, s.Stats())
	}
	sendSeqs(t, v, s, r, seqs, n)
	if st := s.Stats(); st.Packets != n {
		t.Errorf("Stats() = %+v, want %d packets", st, n)
	}
}

// TestAFPacketSenderRefusedFrames sends frames that the device refuses
// (veth drops a frame longer than its peer's MTU, and send(2) fails with
// ENOBUFS, leaving the frame marked for sending): once the device keeps
// refusing for longer than Send retries, Send counts nothing and the ring
// goes on working.
func TestAFPacketSenderRefusedFrames(t *testing.T) {
	v := newVeth(t)
	const n = 1000
	seqs := newSeqSet(t, n)
	s, r := txPair(t, v, &baseline.AFPacketTxOptions{Frames: 16, Batch: 4, QdiscBypass: true}, seqs)
	setMTU(t, v.Peer, 1000)

	big := make([]byte, 2000)
	l := udpFrame(t, v.Host, v.Peer, 1100, 0, big)
	hb := counters(t, v.Host)
	c, err := s.Send(big[:l], 3)
	if !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("Send of frames the device refuses: %+v, %v; want ENOBUFS", c, err)
	}
	if c.Packets != 0 || c.Bytes != 0 || s.Stats().Packets != 0 {
		t.Fatalf("Send of frames the device refused counted %+v (Stats %+v)", c, s.Stats())
	}
	if d := counters(t, v.Host).Sub(hb); d.TxDropped == 0 {
		t.Fatalf("the device refused nothing (%+v): the test did not test", d)
	}
	sendSeqs(t, v, s, r, seqs, n)
}

// TestAFPacketSenderRetriesRefusedFrames makes the device refuse frames
// until the test sees the refusals in its counters, then take them: Send
// must retry rather than fail, and every frame must arrive exactly once.
//
// Send retries for a second by default; on a loaded machine the test may
// take longer than that to see the refusals and change the MTU back (it
// polls counters and sets the MTU through netlink, competing with other
// tests for the CPUs and the kernel's locks), so it retries for longer here.
func TestAFPacketSenderRetriesRefusedFrames(t *testing.T) {
	t.Cleanup(baseline.SetRefusedFor(time.Minute))
	v := newVeth(t)
	const n = 8
	seqs := newSeqSet(t, n)
	s, r := txPair(t, v, &baseline.AFPacketTxOptions{Frames: 16, Batch: 4, QdiscBypass: true}, seqs)
	setMTU(t, v.Peer, 1000)

	hb := counters(t, v.Host)
	type result struct {
		c   baseline.Counts
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := s.SendFunc(n, func(seq uint64, b []byte) int { return udpFrame(t, v.Host, v.Peer, 1100, seq, b) })
		done <- result{c, err}
	}()
	for deadline := time.Now().Add(5 * time.Second); counters(t, v.Host).Sub(hb).TxDropped == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the device refused nothing within 5s")
		}
	}
	setMTU(t, v.Peer, 1500)
	res := <-done
	if res.err != nil || res.c.Packets != n || res.c.Bytes != n*uint64(packet.FrameLen(1100)) {
		t.Fatalf("SendFunc(%d) while the device refused for a while = %+v, %v", n, res.c, res.err)
	}
	c, err := r.Receive(n, time.Now().Add(5*time.Second))
	if err != nil || c.Packets != n {
		t.Fatalf("peer received %+v, %v; want %d frames", c, err, n)
	}
	seqs.check()
}
