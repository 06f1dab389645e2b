package pktgen_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
)

// udpFrame builds a UDP frame from one end of v to the other.
func udpFrame(t testing.TB, from, to netenv.Endpoint, payloadLen int) []byte {
	t.Helper()
	b := make([]byte, packet.FrameLen(payloadLen))
	packet.FillPayload(b[packet.HeadersLen:], 7)
	u := packet.UDP{
		SrcMAC: from.MAC, DstMAC: to.MAC,
		SrcIP: from.IP(), DstIP: to.IP(),
		SrcPort: 40000, DstPort: 9,
	}
	if _, err := u.Write(b, payloadLen); err != nil {
		t.Fatal(err)
	}
	return b
}

// newVeth makes a veth pair with static neighbour entries, so that no ARP
// traffic disturbs the counts.
func newVeth(t testing.TB) *netenv.Veth {
	t.Helper()
	v := testenv.NewVeth(t, nil)
	if err := pktgen.AddNeighbors(v); err != nil {
		t.Fatal(err)
	}
	return v
}

func readCounters(t testing.TB, ep netenv.Endpoint) pktgen.Counters {
	t.Helper()
	c, err := pktgen.ReadCounters(ep)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func attachSink(t testing.TB, ep netenv.Endpoint, v pktgen.Verdict) {
	t.Helper()
	p, err := pktgen.AttachSink(ep, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
}

func newGen(t testing.TB, ep netenv.Endpoint, opts *pktgen.Options) *pktgen.Generator {
	t.Helper()
	g, err := pktgen.NewFor(ep, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	})
	return g
}

// counts holds the counters of a generator's target, the end of a veth
// pair that sends its frames, and of the end that receives them.
type counts struct {
	from, to   netenv.Endpoint
	fromC, toC pktgen.Counters
}

func readBoth(t testing.TB, from, to netenv.Endpoint) counts {
	t.Helper()
	return counts{from: from, to: to, fromC: readCounters(t, from), toC: readCounters(t, to)}
}

// waitRx waits until the want frames sent out of c.from since c was read
// are accounted for: received by c.to (its rx_packets) or dropped by veth
// because c.to's 256-frame XDP ring was full (c.from's tx_dropped). veth
// drops so when c.to's NAPI poll falls behind the generator: deferred to
// ksoftirqd on a busy machine, or threaded. It fails on any other total,
// and returns what c.to received and how many frames veth dropped.
func waitRx(t testing.TB, c counts, want uint64) (pktgen.Counters, uint64) {
	t.Helper()
	read := func() (pktgen.Counters, uint64) {
		return readCounters(t, c.to).Sub(c.toC), readCounters(t, c.from).Sub(c.fromC).TxDropped
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if d, dropped := read(); d.RxPackets+dropped >= want {
			break
		}
	}
	// Give stragglers a moment to show up, so that extras fail the test.
	time.Sleep(20 * time.Millisecond)
	d, dropped := read()
	if d.RxPackets+dropped != want {
		t.Fatalf("%s received %d packets and veth dropped %d on the way (%s rx_dropped %d), want %d in all",
			c.to.Name, d.RxPackets, dropped, c.to.Name, d.RxDropped, want)
	}
	// veth counts each frame it had no room for at both ends.
	if d.RxDropped < dropped {
		t.Fatalf("%s tx_dropped %d, but %s counts only %d frames dropped on receipt", c.from.Name, dropped, c.to.Name, d.RxDropped)
	}
	if dropped > 0 {
		t.Logf("veth dropped %d of %d frames: %s's ring was full", dropped, want, c.to.Name)
	}
	return d, dropped
}

// TestSendCountedAtPeer checks the generator's count against the peer's
// counters: every frame offered arrived or was dropped by veth, its ring
// full. The threaded case runs the peer's NAPI poll in a kernel thread,
// which falls behind the generator as a deferred softirq does on a loaded
// machine: veth then drops most frames, and they must still add up.
func TestSendCountedAtPeer(t *testing.T) {
	for _, threaded := range []bool{false, true} {
		t.Run(fmt.Sprintf("threaded=%v", threaded), func(t *testing.T) {
			v := newVeth(t)
			if threaded {
				if err := app.SetVethThreadedNAPI(v.Peer, true); err != nil {
					t.Fatal(err)
				}
			}
			attachSink(t, v.Peer, pktgen.Pass)
			frame := udpFrame(t, v.Host, v.Peer, 18) // 60-byte frame
			g := newGen(t, v.Host, &pktgen.Options{Frame: frame})
			if err := g.ResidentErr(); err != nil {
				t.Fatalf("generator not resident in the XDP dispatcher: %v", err)
			}

			const n = 100_000
			before := readBoth(t, v.Host, v.Peer)
			sent, err := g.Send(n)
			if err != nil {
				t.Fatal(err)
			}
			if sent != n {
				t.Fatalf("Send(%d) = %d", n, sent)
			}
			d, dropped := waitRx(t, before, n)
			if d.RxBytes != d.RxPackets*uint64(len(frame)) {
				t.Errorf("peer received %d bytes in %d frames, want %d-byte frames", d.RxBytes, d.RxPackets, len(frame))
			}
			// With XDP_PASS and nothing else on the pair, the peer drops
			// only what veth had no room for.
			if d.RxDropped != dropped {
				t.Errorf("peer rx_dropped %d, veth dropped %d", d.RxDropped, dropped)
			}
			if threaded && dropped == 0 {
				t.Errorf("veth dropped nothing with the peer's NAPI threaded: the case did not test the drops")
			}
			if g.Total() != n {
				t.Errorf("Total() = %d, want %d", g.Total(), n)
			}
		})
	}
}

// TestSendAcrossNamespaces makes the generator inside the peer's namespace,
// aimed at the peer, and sends from the test's namespace: the frames come
// out at the host end.
func TestSendAcrossNamespaces(t *testing.T) {
	v := newVeth(t)
	attachSink(t, v.Host, pktgen.Pass)
	g := newGen(t, v.Peer, &pktgen.Options{Frame: udpFrame(t, v.Peer, v.Host, 100), Chunk: 1000, BatchSize: 16})
	before := readBoth(t, v.Peer, v.Host)
	const n = 12_345 // not a multiple of the chunk or the batch
	if sent, err := g.Send(n); err != nil || sent != n {
		t.Fatalf("Send(%d) = %d, %v", n, sent, err)
	}
	waitRx(t, before, n)
}

// TestFramesArriveIntact reads the generated frames at the peer with a raw
// packet socket and checks every byte, with source ports varied.
func TestFramesArriveIntact(t *testing.T) {
	v := newVeth(t)
	attachSink(t, v.Peer, pktgen.Pass)
	const ports = 5
	frame := udpFrame(t, v.Host, v.Peer, 64)
	g := newGen(t, v.Host, &pktgen.Options{Frame: frame, SrcPorts: ports})

	var fd int
	err := v.Peer.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: v.Peer.Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// Each frame arrives in a page of its own (the skb's truesize is over
	// 4 KiB), so the default receive buffer holds only about 50.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
		t.Fatal(err)
	}

	const n = 100
	if sent, err := g.Send(n); err != nil || sent != n {
		t.Fatalf("Send(%d) = %d, %v", n, sent, err)
	}
	seen := map[uint16]int{}
	buf := make([]byte, 2048)
	for i := range n {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		p, err := packet.Parse(buf[:m])
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if seq, ok := packet.CheckPayload(p.Payload); !ok || seq != 7 {
			t.Fatalf("frame %d: bad payload (seq %d)", i, seq)
		}
		if p.DstPort != 9 || p.SrcIP != v.Host.IP() || p.DstIP != v.Peer.IP() {
			t.Fatalf("frame %d: unexpected headers %+v", i, p)
		}
		seen[p.SrcPort]++
	}
	for port := uint16(40000); port < 40000+ports; port++ {
		if seen[port] != n/ports {
			t.Errorf("source port %d seen %d times, want %d (all: %v)", port, seen[port], n/ports, seen)
		}
	}
}

func TestSendFor(t *testing.T) {
	v := newVeth(t)
	attachSink(t, v.Peer, pktgen.Pass)
	g := newGen(t, v.Host, &pktgen.Options{Frame: udpFrame(t, v.Host, v.Peer, 18), PPS: 50_000})
	before := readBoth(t, v.Host, v.Peer)
	sent, err := g.SendFor(50 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if sent == 0 {
		t.Fatal("SendFor sent nothing")
	}
	waitRx(t, before, sent)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := g.SendContext(ctx, 10); !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("SendContext(cancelled) = %d, %v; want 0, context.Canceled", n, err)
	}
}

// TestSendZeroSendsNothing checks that Send(0) sends exactly no frames and
// returns at once, where "until the context is done" would never end (nor
// let Close finish), and that SendContext refuses that with a context that
// is never done.
func TestSendZeroSendsNothing(t *testing.T) {
	v := newVeth(t)
	attachSink(t, v.Peer, pktgen.Drop)
	// A rate, so that a send that never ends costs little.
	g, err := pktgen.NewFor(v.Host, &pktgen.Options{Frame: udpFrame(t, v.Host, v.Peer, 18), PPS: 1000})
	if err != nil {
		t.Fatal(err)
	}
	before := readCounters(t, v.Peer)
	type result struct {
		n   uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := g.Send(0)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.n != 0 || r.err != nil {
			t.Errorf("Send(0) = %d, %v; want 0, nil", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		// Close would wait for the send forever: leave g be.
		t.Fatalf("Send(0) still sending after 5s (%d frames)", g.Total())
	}
	if n, err := g.SendContext(context.Background(), 0); err == nil || n != 0 {
		t.Errorf("SendContext(context.Background(), 0) = %d, %v; want 0 and an error", n, err)
	}
	if got := g.Total(); got != 0 {
		t.Errorf("Total = %d after Send(0), want 0", got)
	}
	time.Sleep(20 * time.Millisecond)
	if d := readCounters(t, v.Peer).Sub(before); d.RxPackets != 0 {
		t.Errorf("peer received %d packets after Send(0)", d.RxPackets)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Send(0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send(0) after Close: %v, want net.ErrClosed", err)
	}
}

func TestBadInput(t *testing.T) {
	v := newVeth(t)
	frame := udpFrame(t, v.Host, v.Peer, 18)
	tests := []struct {
		name    string
		ifindex int
		opts    *pktgen.Options
		errno   error
	}{
		{"nil options", v.Host.Index, nil, nil},
		{"ifindex 0", 0, &pktgen.Options{Frame: frame}, unix.ENODEV},
		{"unknown ifindex", 1 << 30, &pktgen.Options{Frame: frame}, unix.ENODEV},
		{"peer ifindex in the wrong namespace", v.Peer.Index + 1000, &pktgen.Options{Frame: frame}, unix.ENODEV},
		{"empty frame", v.Host.Index, &pktgen.Options{}, nil},
		{"13-byte frame", v.Host.Index, &pktgen.Options{Frame: frame[:13]}, nil},
		{"frame over MTU", v.Host.Index, &pktgen.Options{Frame: make([]byte, 1515)}, nil},
		{"frame over page", v.Host.Index, &pktgen.Options{Frame: make([]byte, 4096)}, nil},
		{"batch too big", v.Host.Index, &pktgen.Options{Frame: frame, BatchSize: 257}, nil},
		{"negative batch", v.Host.Index, &pktgen.Options{Frame: frame, BatchSize: -1}, nil},
		{"ports on a non-UDP frame", v.Host.Index, &pktgen.Options{Frame: make([]byte, 60), SrcPorts: 2}, nil},
		{"ports past 65535", v.Host.Index, &pktgen.Options{Frame: frame, SrcPorts: 30000}, nil},
		{"bad CPU", v.Host.Index, &pktgen.Options{Frame: frame, Pin: true, CPU: 1 << 20}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := pktgen.New(tt.ifindex, tt.opts)
			if err == nil {
				g.Close()
				t.Fatal("New succeeded")
			}
			if tt.errno != nil && !errors.Is(err, tt.errno) {
				t.Errorf("New: %v, want %v", err, tt.errno)
			}
			t.Log(err)
		})
	}
}

func TestCloseTwiceAndSendAfterClose(t *testing.T) {
	v := newVeth(t)
	attachSink(t, v.Peer, pktgen.Drop)
	before := testenv.Snapshot(t)
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	g, err := pktgen.NewFor(v.Host, &pktgen.Options{Frame: udpFrame(t, v.Host, v.Peer, 18), Pin: true, CPU: cpus[0]})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := g.Send(10); err != nil || n != 10 {
		t.Fatalf("Send(10) = %d, %v", n, err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := g.Send(1); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v, want net.ErrClosed", err)
	}
	if after := testenv.Snapshot(t); after.FDs != before.FDs {
		t.Errorf("fds: %d before, %d after", before.FDs, after.FDs)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestSendAfterTargetDeleted deletes the target: the DEVMAP entry goes with
// it, the program's redirect fails (XDP_ABORTED), and Send must say that
// nothing was offered rather than count every frame as sent.
func TestSendAfterTargetDeleted(t *testing.T) {
	v := newVeth(t)
	attachSink(t, v.Peer, pktgen.Drop)
	g := newGen(t, v.Host, &pktgen.Options{Frame: udpFrame(t, v.Host, v.Peer, 18)})
	if n, err := g.Send(10); err != nil || n != 10 {
		t.Fatalf("Send(10) before the delete = %d, %v", n, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	n, err := g.Send(1000)
	if n != 0 || !errors.Is(err, unix.ENODEV) {
		t.Errorf("Send(1000) after the target was deleted = %d, %v; want 0 and ENODEV", n, err)
	}
	if got := g.Total(); got != 10 {
		t.Errorf("Total = %d, want 10", got)
	}
}

// TestLongestFrame sends frames of MaxFrameLen bytes, which New accepts,
// over a pair whose MTU carries them, and checks that they arrive: a
// longer MaxFrameLen than the kernel's live-frame mode takes lets New
// accept a frame that every Send then fails on (EINVAL). One byte more
// New refuses, naming Frame.
func TestLongestFrame(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{MTU: pktgen.MaxFrameLen})
	if err := pktgen.AddNeighbors(v); err != nil {
		t.Fatal(err)
	}
	attachSink(t, v.Peer, pktgen.Drop)
	frame := udpFrame(t, v.Host, v.Peer, pktgen.MaxFrameLen-packet.HeadersLen)
	g := newGen(t, v.Host, &pktgen.Options{Frame: frame})
	before := readBoth(t, v.Host, v.Peer)
	const n = 100
	if sent, err := g.Send(n); sent != n || err != nil {
		t.Fatalf("Send(%d) of %d-byte frames = %d, %v; want %d, nil", n, len(frame), sent, err, n)
	}
	d, _ := waitRx(t, before, n)
	if d.RxBytes != d.RxPackets*uint64(len(frame)) {
		t.Errorf("peer received %d bytes in %d frames, want %d-byte frames", d.RxBytes, d.RxPackets, len(frame))
	}
	long := udpFrame(t, v.Host, v.Peer, pktgen.MaxFrameLen+1-packet.HeadersLen)
	if g, err := pktgen.NewFor(v.Host, &pktgen.Options{Frame: long}); err == nil || !strings.Contains(err.Error(), "Frame of") {
		if g != nil {
			g.Close()
		}
		t.Errorf("New with a %d-byte frame: %v, want an error naming Frame", len(long), err)
	}
}
