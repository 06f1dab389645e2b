package baseline_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

const testPort = 9999

// newVeth makes a veth pair with static neighbours, so that no ARP frame
// shows up in a count.
func newVeth(t testing.TB) *netenv.Veth {
	t.Helper()
	v := testenv.NewVeth(t, nil)
	if err := pktgen.AddNeighbors(v); err != nil {
		t.Fatal(err)
	}
	return v
}

func in(t testing.TB, ep netenv.Endpoint, fn func() error) {
	t.Helper()
	if err := ep.Do(fn); err != nil {
		t.Fatal(err)
	}
}

func closeLater(t testing.TB, c interface{ Close() error }) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
}

// seqSet records sequence numbers 0..n-1 and complains about anything else.
type seqSet struct {
	t    testing.TB
	seen []bool
	bad  int
	n    atomic.Uint64 // packets seen, read by the sender to pace itself
}

func newSeqSet(t testing.TB, n int) *seqSet { return &seqSet{t: t, seen: make([]bool, n)} }

func (s *seqSet) payload(p []byte) {
	s.n.Add(1)
	seq, ok := packet.CheckPayload(p)
	if !ok || seq >= uint64(len(s.seen)) || s.seen[seq] {
		s.bad++
		return
	}
	s.seen[seq] = true
}

func (s *seqSet) frame(f []byte) {
	p, err := packet.Parse(f)
	if err != nil || p.DstPort != testPort {
		s.n.Add(1)
		s.bad++
		return
	}
	s.payload(p.Payload)
}

func (s *seqSet) check() {
	s.t.Helper()
	missing := 0
	for _, ok := range s.seen {
		if !ok {
			missing++
		}
	}
	if s.bad != 0 || missing != 0 {
		s.t.Fatalf("%d unexpected or corrupt packets, %d sequence numbers missing", s.bad, missing)
	}
}

// receiveAll runs recv in the background while send runs, then checks that
// exactly n packets came and nothing more follows.
func receiveAll(t testing.TB, r baseline.Receiver, n uint64, send func()) {
	t.Helper()
	type result struct {
		c   baseline.Counts
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := r.Receive(n, time.Now().Add(10*time.Second))
		done <- result{c, err}
	}()
	send()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.c.Packets != n {
		t.Fatalf("received %d packets, want %d", res.c.Packets, n)
	}
	extra, err := r.Receive(0, time.Now().Add(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if extra.Packets != 0 {
		t.Fatalf("received %d packets more than the %d sent", extra.Packets, n)
	}
	st, err := r.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != n || st.Drops != 0 {
		t.Fatalf("Stats() = %+v, want %d packets and no drops", st, n)
	}
}

// Chunks for paced, each of which fits the queue where the frames wait
// for the receiving end of a veth pair.
const (
	// backlogChunk is for a kernel sender: its frames wait in the CPU's
	// backlog, netdev_max_backlog (1000) packets.
	backlogChunk = 500
	// ringChunk is for the XDP traffic generator: its frames wait in the
	// peer's XDP ring, 256 frames, until the peer's NAPI poll takes them,
	// which on a loaded machine (the softirq deferred to ksoftirqd) or
	// with threaded NAPI happens after the generator has sent many more.
	ringChunk = 256
)

// paced sends n packets in chunks of chunk with send, waiting after each
// chunk until received reports them all, so that neither veth's queue nor
// a socket buffer can overflow however the CPUs are scheduled.
func paced(t testing.TB, n, chunk uint64, send func(k uint64) error, received func() uint64) {
	t.Helper()
	for sent := uint64(0); sent < n; {
		k := min(chunk, n-sent)
		if err := send(k); err != nil {
			t.Error(err)
			return
		}
		sent += k
		for deadline := time.Now().Add(5 * time.Second); received() < sent; time.Sleep(100 * time.Microsecond) {
			if time.Now().After(deadline) {
				t.Errorf("receiver stuck at %d of %d packets", received(), sent)
				return
			}
		}
	}
}

func udpFrame(t testing.TB, from, to netenv.Endpoint, payloadLen int, seq uint64, b []byte) int {
	t.Helper()
	packet.FillPayload(b[packet.HeadersLen:packet.HeadersLen+payloadLen], seq)
	u := packet.UDP{SrcMAC: from.MAC, DstMAC: to.MAC, SrcIP: from.IP(), DstIP: to.IP(), SrcPort: 40000, DstPort: testPort}
	l, err := u.Write(b, payloadLen)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestUDP sends datagrams with the batched UDP sender from the peer's
// namespace to the batched UDP receiver at the host end.
func TestUDP(t *testing.T) {
	v := newVeth(t)
	const n = 20_000
	seqs := newSeqSet(t, n)
	r, err := baseline.NewUDPReceiver(netip.AddrPortFrom(v.Host.IP(), testPort), &baseline.UDPOptions{OnPacket: seqs.payload})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, r)
	var s *baseline.UDPSender
	in(t, v.Peer, func() (err error) {
		s, err = baseline.NewUDPSender(netip.AddrPortFrom(v.Peer.IP(), 0), r.Addr(), &baseline.UDPOptions{PayloadLen: 100})
		return err
	})
	closeLater(t, s)

	receiveAll(t, r, n, func() {
		paced(t, n, backlogChunk, func(k uint64) error {
			c, err := s.Send(k)
			if err == nil && (c.Packets != k || c.Bytes != k*100) {
				err = fmt.Errorf("Send(%d) = %+v", k, c)
			}
			return err
		}, seqs.n.Load)
	})
	seqs.check()
	if st := s.Stats(); st.Packets != n {
		t.Errorf("sender Stats() = %+v", st)
	}
}

// TestUDPSenderCountedAtPeer checks the sender's count against the peer's
// interface counters.
func TestUDPSenderCountedAtPeer(t *testing.T) {
	v := newVeth(t)
	s, err := baseline.NewUDPSender(netip.AddrPort{}, netip.AddrPortFrom(v.Peer.IP(), testPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, s)
	hb, pb := counters(t, v.Host), counters(t, v.Peer)
	const n = 5000
	if c, err := s.Send(n); err != nil || c.Packets != n {
		t.Fatalf("Send(%d) = %+v, %v", n, c, err)
	}
	waitRx(t, v, hb, pb, n)
}

// afPacketPair makes an AF_PACKET receiver on v's host end, with opts,
// and a sender on its peer end, both closed at cleanup.
func afPacketPair(t *testing.T, v *netenv.Veth, opts *baseline.AFPacketRxOptions) (*baseline.AFPacketReceiver, *baseline.AFPacketSender) {
	t.Helper()
	r, err := baseline.NewAFPacketReceiver(v.Host.Index, opts)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, r)
	var s *baseline.AFPacketSender
	in(t, v.Peer, func() (err error) {
		s, err = baseline.NewAFPacketSender(v.Peer.Index, nil)
		return err
	})
	closeLater(t, s)
	return r, s
}

// TestAFPacket sends frames with the TX ring from the peer's namespace and
// receives them with the RX ring at the host end.
func TestAFPacket(t *testing.T) {
	v := newVeth(t)
	const n = 20_000
	seqs := newSeqSet(t, n)
	r, s := afPacketPair(t, v, &baseline.AFPacketRxOptions{OnPacket: seqs.frame})

	receiveAll(t, r, n, func() {
		paced(t, n, backlogChunk, func(k uint64) error {
			c, err := s.SendFunc(k, func(seq uint64, b []byte) int { return udpFrame(t, v.Peer, v.Host, 64, seq, b) })
			if err == nil && (c.Packets != k || c.Bytes != k*(packet.HeadersLen+64)) {
				err = fmt.Errorf("SendFunc(%d) = %+v", k, c)
			}
			return err
		}, seqs.n.Load)
	})
	seqs.check()
}

// TestAFPacketDstPort sends frames of every kind the socket filter of
// AFPacketRxOptions.DstPort tells apart: only IPv4 UDP to the port, whole
// or a first fragment, with or without IP options, is received. Frames are
// counted by kind, so that a filter that keeps one kind too many and one
// too few fails too.
func TestAFPacketDstPort(t *testing.T) {
	v := newVeth(t)
	base := make([]byte, 128)
	l := udpFrame(t, v.Peer, v.Host, 18, 0, base)
	kinds := []struct {
		name string
		keep bool
		edit func(f []byte) []byte
	}{
		{"to the port", true, func(f []byte) []byte { return f }},
		{"to another port", false, func(f []byte) []byte { f[37]++; return f }},
		{"first fragment", true, func(f []byte) []byte { f[20] = 0x20; return f }},
		{"later fragment", false, func(f []byte) []byte { f[21] = 1; return f }},
		{"tcp", false, func(f []byte) []byte { f[23] = 6; return f }},
		{"arp", false, func(f []byte) []byte { f[12], f[13] = 0x08, 0x06; return f }},
		{"with ip options", true, func(f []byte) []byte {
			// IHL 6: four bytes of options (end of list) before UDP.
			g := append(append(append([]byte{}, f[:34]...), 0, 0, 0, 0), f[34:]...)
			g[14] = 0x46
			return g
		}},
	}
	const each = 100
	var want uint64
	frames := make([][]byte, len(kinds))
	for i, k := range kinds {
		frames[i] = k.edit(append([]byte{}, base[:l]...))
		if k.keep {
			want += each
		}
	}
	got := make([]int, len(kinds)+1) // by kind; the last, frames of none
	r, s := afPacketPair(t, v, &baseline.AFPacketRxOptions{DstPort: testPort, OnPacket: func(f []byte) {
		i := slices.IndexFunc(frames, func(g []byte) bool { return bytes.Equal(f, g) })
		if i < 0 {
			i = len(kinds)
		}
		got[i]++
	}})
	for i, k := range kinds {
		if c, err := s.Send(frames[i], each); err != nil || c.Packets != each {
			t.Fatalf("send %s: %+v, %v", k.name, c, err)
		}
	}
	// Every frame is on its way when Send returns, but the kernel
	// may take its time to deliver them on a loaded machine: wait for
	// those to keep, then a little for any that the filter should have
	// dropped (sent before the last kind, they come before its frames).
	c, err := r.Receive(want, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	extra, err := r.Receive(0, time.Now().Add(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if c.Packets+extra.Packets != want {
		t.Errorf("received %d frames, want the %d of the kinds to keep", c.Packets+extra.Packets, want)
	}
	for i, k := range kinds {
		w := 0
		if k.keep {
			w = each
		}
		if got[i] != w {
			t.Errorf("received %d frames %s, want %d", got[i], k.name, w)
		}
	}
	if n := got[len(kinds)]; n != 0 {
		t.Errorf("received %d frames of no kind sent", n)
	}
}

func TestAFPacketSenderCountedAtPeer(t *testing.T) {
	v := newVeth(t)
	s, err := baseline.NewAFPacketSender(v.Host.Index, &baseline.AFPacketTxOptions{QdiscBypass: true, Batch: 100, Frames: 512})
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, s)
	frame := make([]byte, 128)
	l := udpFrame(t, v.Host, v.Peer, 18, 0, frame)
	pb := counters(t, v.Peer)
	const n = 10_007
	if c, err := s.Send(frame[:l], n); err != nil || c.Packets != n {
		t.Fatalf("Send = %+v, %v", c, err)
	}
	// A frame that veth drops (its peer's backlog is full) fails the
	// send(2) and stays in the ring to be sent again: every frame
	// arrives, once; the drops show only as the host end's tx_dropped.
	var d pktgen.Counters
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if d = counters(t, v.Peer).Sub(pb); d.RxPackets >= n {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
	if d = counters(t, v.Peer).Sub(pb); d.RxPackets != n || d.RxBytes != n*uint64(l) {
		t.Errorf("peer received %d frames, %d bytes; want %d frames of %d", d.RxPackets, d.RxBytes, n, l)
	}
}

// TestReceiveFromPktgen feeds each receiver from the XDP traffic generator,
// also with the peer's NAPI poll threaded: it then lags the generator, as
// a softirq deferred to ksoftirqd does on a loaded machine, and the paced
// chunks must fit veth's XDP ring for every frame to arrive.
func TestReceiveFromPktgen(t *testing.T) {
	for _, kind := range []string{"udp", "afpacket", "udp threaded", "afpacket threaded"} {
		t.Run(kind, func(t *testing.T) {
			v := newVeth(t)
			kind, threaded := strings.CutSuffix(kind, " threaded")
			if threaded {
				if err := app.SetVethThreadedNAPI(v.Peer, true); err != nil {
					t.Fatal(err)
				}
			}
			sink, err := pktgen.AttachSink(v.Peer, pktgen.Pass)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, sink)
			const n = 10_000
			buf := make([]byte, 256)
			l := udpFrame(t, v.Host, v.Peer, 32, 0, buf)
			g, err := pktgen.NewFor(v.Host, &pktgen.Options{Frame: buf[:l]})
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, g)

			var bad int
			var got atomic.Uint64
			var r baseline.Receiver
			in(t, v.Peer, func() (err error) {
				if kind == "udp" {
					r, err = baseline.NewUDPReceiver(netip.AddrPortFrom(v.Peer.IP(), testPort), &baseline.UDPOptions{
						OnPacket: func(p []byte) {
							got.Add(1)
							if seq, ok := packet.CheckPayload(p); !ok || seq != 0 {
								bad++
							}
						},
					})
				} else {
					r, err = baseline.NewAFPacketReceiver(v.Peer.Index, &baseline.AFPacketRxOptions{
						OnPacket: func(f []byte) {
							got.Add(1)
							p, err := packet.Parse(f)
							if err != nil {
								bad++
								return
							}
							if seq, ok := packet.CheckPayload(p.Payload); !ok || seq != 0 {
								bad++
							}
						},
					})
				}
				return err
			})
			closeLater(t, r)
			receiveAll(t, r, n, func() {
				paced(t, n, ringChunk, func(k uint64) error {
					sent, err := g.Send(k)
					if err == nil && sent != k {
						err = fmt.Errorf("Send(%d) = %d", k, sent)
					}
					return err
				}, got.Load)
			})
			if bad != 0 {
				t.Fatalf("%d corrupt packets", bad)
			}
		})
	}
}

func TestBadOptionsAndClose(t *testing.T) {
	v := newVeth(t)
	if _, err := baseline.NewAFPacketReceiver(0, nil); err == nil {
		t.Error("NewAFPacketReceiver(0) succeeded")
	}
	if _, err := baseline.NewAFPacketReceiver(v.Host.Index, &baseline.AFPacketRxOptions{BlockSize: 5000}); err == nil {
		t.Error("BlockSize 5000 accepted")
	}
	if _, err := baseline.NewAFPacketSender(v.Host.Index, &baseline.AFPacketTxOptions{Batch: 1000}); err == nil {
		t.Error("Batch above Frames accepted")
	}
	if _, err := baseline.NewUDPSender(netip.AddrPort{}, netip.AddrPortFrom(v.Peer.IP(), 1), &baseline.UDPOptions{PayloadLen: 4}); err == nil {
		t.Error("PayloadLen 4 accepted")
	}

	before := testenv.Snapshot(t)
	r, err := baseline.NewAFPacketReceiver(v.Host.Index, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := baseline.NewAFPacketSender(v.Host.Index, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := baseline.NewUDPReceiver(netip.AddrPortFrom(v.Host.IP(), 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	us, err := baseline.NewUDPSender(netip.AddrPort{}, u.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(make([]byte, 10), 1); err == nil {
		t.Error("10-byte frame accepted")
	}
	for _, c := range []interface{ Close() error }{r, s, u, us} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	if _, err := r.Receive(1, time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Receive after Close: %v", err)
	}
	if _, err := s.Send(make([]byte, 60), 1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	after := testenv.Snapshot(t)
	if after.FDs != before.FDs || after.SocketMappings != before.SocketMappings {
		t.Errorf("leak: before %+v, after %+v", before, after)
	}
}

// TestNoAllocations checks that the steady-state paths allocate nothing.
func TestNoAllocations(t *testing.T) {
	v := newVeth(t)
	r, s := afPacketPair(t, v, nil)
	frame := make([]byte, 128)
	l := udpFrame(t, v.Peer, v.Host, 18, 0, frame)
	ur, err := baseline.NewUDPReceiver(netip.AddrPortFrom(v.Host.IP(), 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, ur)
	var us *baseline.UDPSender
	in(t, v.Peer, func() (err error) {
		us, err = baseline.NewUDPSender(netip.AddrPort{}, ur.Addr(), nil)
		return err
	})
	closeLater(t, us)

	deadline := time.Now().Add(10 * time.Second)
	if a := testing.AllocsPerRun(20, func() {
		if c, err := s.Send(frame[:l], 64); err != nil || c.Packets != 64 {
			t.Fatalf("Send: %+v, %v", c, err)
		}
		if c, err := r.Receive(64, deadline); err != nil || c.Packets != 64 {
			t.Fatalf("Receive: %+v, %v", c, err)
		}
	}); a != 0 {
		t.Errorf("AF_PACKET send+receive of 64 frames: %v allocations", a)
	}
	if a := testing.AllocsPerRun(20, func() {
		if c, err := us.Send(64); err != nil || c.Packets != 64 {
			t.Fatalf("Send: %+v, %v", c, err)
		}
		if c, err := ur.Receive(64, deadline); err != nil || c.Packets != 64 {
			t.Fatalf("Receive: %+v, %v", c, err)
		}
	}); a != 0 {
		t.Errorf("UDP send+receive of 64 datagrams: %v allocations", a)
	}
}

// maxBacklog reads net.core.netdev_max_backlog, the length of each CPU's
// queue of packets that veth has sent and the peer has yet to receive.
func maxBacklog(t testing.TB) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/core/netdev_max_backlog")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("netdev_max_backlog: %v", err)
	}
	return n
}

func counters(t testing.TB, ep netenv.Endpoint) pktgen.Counters {
	t.Helper()
	c, err := pktgen.ReadCounters(ep)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitRx waits until the frames that the host end of v sent show up at the
// peer: want in all, of which the peer received some and veth dropped the
// rest (its per-CPU backlog of netdev_max_backlog packets overflows when
// softirq processing lags, for example under load; veth counts these as the
// sending end's tx_dropped). It fails on any other total, or when fewer
// arrived than the backlog holds: the kernel drops only once a CPU's
// backlog is full, so at least that many frames (or all) get through.
func waitRx(t testing.TB, v *netenv.Veth, hostBefore, peerBefore pktgen.Counters, want uint64) pktgen.Counters {
	t.Helper()
	total := func() (pktgen.Counters, uint64) {
		h := counters(t, v.Host).Sub(hostBefore)
		p := counters(t, v.Peer).Sub(peerBefore)
		return p, p.RxPackets + h.TxDropped
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, n := total(); n >= want {
			break
		}
	}
	time.Sleep(20 * time.Millisecond)
	p, n := total()
	if n != want || p.RxPackets < min(want, maxBacklog(t)) {
		t.Fatalf("%s received %d packets and %d were dropped on the way, want %d in all", v.Peer.Name, p.RxPackets, n-p.RxPackets, want)
	}
	if p.RxPackets != want {
		t.Logf("%d of %d frames dropped by veth's backlog", want-p.RxPackets, want)
	}
	return p
}
