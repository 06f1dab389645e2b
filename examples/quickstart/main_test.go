package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

func TestRun(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	for _, size := range []int{64, 1514} {
		if err := run(context.Background(), io.Discard, 20_000, size); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
	if err := run(context.Background(), io.Discard, 10, 20); err == nil || !strings.Contains(err.Error(), "-size 20") {
		t.Fatalf("bad size: %v", err)
	}
	// -n 0 used to build the pair, send and receive nothing, and exit 0.
	var out strings.Builder
	if err := run(context.Background(), &out, 0, 64); err == nil || err.Error() != "-n 0: must be at least 1" || out.Len() > 0 {
		t.Fatalf("-n 0: %v; want it refused before anything is built\n%s", err, out.String())
	}
}

// TestInterrupt stops the program with SIGINT in the middle of a long run
// and checks that it removed its links.
func TestInterrupt(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-n", "1000000000")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until it has made its veth pair and is moving frames.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "receiver ") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	// "veth pair HOST <-> PEER (...)": the host end is in our namespace.
	first, _, _ := strings.Cut(out.String(), "\n")
	fields := strings.Fields(first)
	if len(fields) < 5 || fields[0] != "veth" {
		t.Fatalf("unexpected first line %q", first)
	}
	host := fields[2]
	if _, err := netlink.LinkByName(host); err != nil {
		t.Fatalf("host end %s not there while running: %v", host, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	t.Logf("output:\n%s", out.String())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out.String(), "interrupted") {
		t.Fatalf("after SIGINT: %v", err)
	}
	if !strings.Contains(out.String(), "removed the veth pair") {
		t.Fatal("no cleanup message")
	}
	if _, err := netlink.LinkByName(host); err == nil {
		t.Errorf("link %s left behind", host)
	}
	_ = os.Remove(bin)
}

// The receiver waits while the sender sends, however long; once the sender
// has finished, it gives up when nothing has arrived for the idle time
// since the later of the last frame and the sender's end.
func TestIdleWatchGivesUpAfterSenderFinishes(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const idle = 2 * time.Second
	for _, tc := range []struct {
		name    string
		last    time.Duration // last frame, after t0
		done    time.Duration // sender's end, after t0; < 0: still sending
		at      time.Duration // when asked, after t0
		expired bool
	}{
		{"sender still sending", 0, -1, time.Hour, false},
		{"just finished", 0, time.Second, 2 * time.Second, false},
		{"idle since the sender's end", 0, time.Second, 3 * time.Second, true},
		{"a frame after the end", 4 * time.Second, time.Second, 5 * time.Second, false},
		{"idle since the last frame", 4 * time.Second, time.Second, 6 * time.Second, true},
	} {
		w := newIdleWatch(idle, t0)
		w.arrived(t0.Add(tc.last))
		if tc.done >= 0 {
			w.senderDone(t0.Add(tc.done))
		}
		if got := w.expired(t0.Add(tc.at)); got != tc.expired || w.gaveUp() != tc.expired {
			t.Errorf("%s: expired %v, gaveUp %v; want %v", tc.name, got, w.gaveUp(), tc.expired)
		}
	}
	w := newIdleWatch(idle, t0)
	w.senderDone(t0)
	w.expired(t0.Add(idle))
	err := verdict(5, 10, 0, w)
	if want := "5 of 10 frames arrived (none for 2s after the sender finished), 0 of them wrong"; err == nil || err.Error() != want {
		t.Errorf("verdict: %v, want %q", err, want)
	}
	if err := verdict(10, 10, 0, w); err != nil {
		t.Errorf("verdict with every frame: %v", err)
	}
}

// socketPair makes a veth pair with a receiving socket (quickstart's
// filter) on the host end and a sending one on the peer end, closed at
// cleanup, and the header of the frames from the peer to the host.
func socketPair(t *testing.T) (v *netenv.Veth, rx, tx *xsk.Socket, hdr packet.UDP) {
	t.Helper()
	testenv.RequirePrivileged(t)
	v = testenv.NewVeth(t, nil)
	rx, err := xsk.Open(v.Host.Name, 0, &xsk.Options{Filter: bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: port}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	if err := v.Peer.Do(func() error {
		tx, err = xsk.Open(v.Peer.Name, 0, &xsk.Options{NoXDP: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	hdr = packet.UDP{SrcMAC: v.Peer.MAC, DstMAC: v.Host.MAC, SrcIP: v.Peer.IP(), DstIP: v.Host.IP(),
		SrcPort: 40000, DstPort: port}
	return v, rx, tx, hdr
}

// TestReceiveGivesUpOnMissingFrames sends fewer frames than the receiver
// waits for, as if some were lost: the receiver must return once the
// sender has finished and the idle time has passed, having counted what
// came.
func TestReceiveGivesUpOnMissingFrames(t *testing.T) {
	_, rx, tx, hdr := socketPair(t)

	const idle = 300 * time.Millisecond
	watch := newIdleWatch(idle, time.Now())
	var received, bad, sent atomic.Uint64
	done := make(chan error, 1)
	go func() { done <- receive(context.Background(), rx, 10, 64, &hdr, &received, &bad, watch) }()
	if err := send(context.Background(), tx, &hdr, 64-packet.HeadersLen, 5, &received, &sent, idle); err != nil {
		t.Fatal(err)
	}
	watch.senderDone(time.Now())
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("receive still waiting 10s after the sender finished")
	}
	if received.Load() != 5 || bad.Load() != 0 || !watch.gaveUp() {
		t.Errorf("received %d, bad %d, gave up %v; want 5, 0, true", received.Load(), bad.Load(), watch.gaveUp())
	}
	want := "5 of 10 frames arrived (none for 300ms after the sender finished), 0 of them wrong"
	if err := verdict(received.Load(), 10, bad.Load(), watch); err == nil || err.Error() != want {
		t.Errorf("verdict: %v, want %q", err, want)
	}
}

// TestReceiveCatchesWrongFrames injects frames that are well-formed, with
// right checksums and a payload that checks, but not the frame the sender
// built: a byte short, to another MAC address, from another IP address,
// to another source port, with another IP ID. Each must count as wrong:
// quickstart says it verifies every byte.
func TestReceiveCatchesWrongFrames(t *testing.T) {
	v, rx, tx, hdr := socketPair(t)
	const size = 100
	wrong := []func(h *packet.UDP, payloadLen *int){
		nil, // right
		func(h *packet.UDP, n *int) { *n-- },
		func(h *packet.UDP, n *int) { h.DstMAC = append([]byte{0x02}, v.Host.MAC[1:]...); h.DstMAC[5] ^= 1 },
		func(h *packet.UDP, n *int) { h.SrcIP = h.SrcIP.Next() },
		func(h *packet.UDP, n *int) { h.SrcPort++ },
		func(h *packet.UDP, n *int) { h.ID++ },
		nil, // right
	}
	descs := make([]xsk.Desc, len(wrong))
	if n, err := tx.Alloc(descs); err != nil || n != len(descs) {
		t.Fatalf("alloc: %d, %v", n, err)
	}
	for i, mangle := range wrong {
		h, n := hdr, size-packet.HeadersLen
		h.ID = uint16(i)
		if mangle != nil {
			mangle(&h, &n)
		}
		b := tx.Frame(descs[i])
		packet.FillPayload(b[packet.HeadersLen:packet.HeadersLen+n], uint64(i))
		l, err := h.Write(b, n)
		if err != nil {
			t.Fatal(err)
		}
		descs[i].Len = uint32(l)
	}
	if k, err := tx.Transmit(descs); err != nil || k != len(descs) {
		t.Fatalf("transmit: %d, %v", k, err)
	}
	watch := newIdleWatch(time.Second, time.Now())
	watch.senderDone(time.Now())
	var received, bad atomic.Uint64
	if err := receive(context.Background(), rx, uint64(len(wrong)), size, &hdr, &received, &bad, watch); err != nil {
		t.Fatal(err)
	}
	if received.Load() != uint64(len(wrong)) || bad.Load() != uint64(len(wrong)-2) {
		t.Errorf("received %d, wrong %d; want %d, %d", received.Load(), bad.Load(), len(wrong), len(wrong)-2)
	}
}

// TestReceiveCountsLostFramesAsMissing loses a frame on the way (the
// sender never sends sequence number 2): the frames after it are intact
// and must be verified as such, not counted as wrong because the one
// before them is missing. The verdict says one frame did not arrive and
// none was wrong; the receiver does not wait for more once the last
// frame has come.
func TestReceiveCountsLostFramesAsMissing(t *testing.T) {
	_, rx, tx, hdr := socketPair(t)
	const size = 100
	seqs := []uint64{0, 1, 3, 4, 5}
	descs := make([]xsk.Desc, len(seqs))
	if n, err := tx.Alloc(descs); err != nil || n != len(descs) {
		t.Fatalf("alloc: %d, %v", n, err)
	}
	for i, seq := range seqs {
		h := hdr
		h.ID = uint16(seq)
		b := tx.Frame(descs[i])
		packet.FillPayload(b[packet.HeadersLen:size], seq)
		l, err := h.Write(b, size-packet.HeadersLen)
		if err != nil {
			t.Fatal(err)
		}
		descs[i].Len = uint32(l)
	}
	if k, err := tx.Transmit(descs); err != nil || k != len(descs) {
		t.Fatalf("transmit: %d, %v", k, err)
	}
	const count = 6
	watch := newIdleWatch(2*time.Second, time.Now())
	watch.senderDone(time.Now())
	var received, bad atomic.Uint64
	if err := receive(context.Background(), rx, count, size, &hdr, &received, &bad, watch); err != nil {
		t.Fatal(err)
	}
	if received.Load() != uint64(len(seqs)) || bad.Load() != 0 || watch.gaveUp() {
		t.Errorf("received %d, wrong %d, gave up %v; want %d, 0, false", received.Load(), bad.Load(), watch.gaveUp(), len(seqs))
	}
	want := "5 of 6 frames arrived, 0 of them wrong"
	if err := verdict(received.Load(), count, bad.Load(), watch); err == nil || err.Error() != want {
		t.Errorf("verdict: %v, want %q", err, want)
	}
}
