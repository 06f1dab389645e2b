package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/container"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

func TestMain(m *testing.M) {
	container.RunChild(map[string]func() int{"workload": childWorkload})
	os.Exit(m.Run())
}

const (
	// port is the UDP destination port both directions use; the programs
	// on both ends redirect only it.
	port = 7777
	// window bounds the frames in flight in each direction: below the
	// 256-entry ring of a veth with XDP and the receivers' rings, so
	// that nothing is dropped.
	window = 128
	// ackEvery is how often (in frames) a receiver reports progress.
	ackEvery = 32
	// childUID is the unprivileged user of the workload.
	childUID = 4242
)

// frameLen is the length of frame seq in both directions: 60 to 459 bytes.
func frameLen(seq uint64) int { return packet.MinFrame + int(seq*7%400) }

// udpFilter redirects UDP/IPv4 to port and leaves the rest to the stack.
var udpFilter = bpf.Filter{EtherType: 0x0800, IPProto: unix.IPPROTO_UDP, DstPort: port}

// endpoint is one side's addresses, passed to the child in its environment.
type endpoint struct {
	mac net.HardwareAddr
	ip  netip.Addr
}

// sender transmits count frames from src to dst on s, keeping at most
// window frames beyond what acked says the far end received. progress is
// signalled whenever acked grows.
func sender(s *xsk.Socket, src, dst endpoint, count uint64, acked *atomic.Uint64, progress <-chan struct{}, deadline time.Time) error {
	hdr := packet.UDP{SrcMAC: src.mac, DstMAC: dst.mac, SrcIP: src.ip, DstIP: dst.ip, SrcPort: port, DstPort: port}
	descs := make([]xsk.Desc, 64)
	var pending []xsk.Desc
	var sent uint64
	for sent < count {
		if time.Now().After(deadline) {
			return fmt.Errorf("send: timed out after %d of %d frames (%d acknowledged)", sent, count, acked.Load())
		}
		room := window - int(sent-acked.Load())
		if room <= 0 && len(pending) == 0 {
			select {
			case <-progress:
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if len(pending) == 0 {
			n, err := s.Alloc(descs[:min(room, len(descs), int(count-sent))])
			if err != nil {
				return err
			}
			if n == 0 {
				s.Wait(xsk.Writable, time.Millisecond)
				continue
			}
			for i := range descs[:n] {
				seq := sent + uint64(i)
				f := s.Frame(descs[i])
				pl := frameLen(seq) - packet.HeadersLen
				packet.FillPayload(f[packet.HeadersLen:packet.HeadersLen+pl], seq)
				hdr.ID = uint16(seq)
				l, err := hdr.Write(f, pl)
				if err != nil {
					return err
				}
				descs[i].Len = uint32(l)
			}
			pending = descs[:n]
		}
		k, err := s.Transmit(pending)
		if err != nil {
			return err
		}
		sent += uint64(k)
		pending = pending[k:]
		if k == 0 {
			s.Wait(xsk.Writable, time.Millisecond)
		}
	}
	return nil
}

// receiver receives count frames on s and checks each: a well-formed
// UDP/IPv4 frame from src to dst whose payload carries the next sequence
// number, has frameLen's length and the bytes FillPayload wrote. report is
// called with the number received every ackEvery frames and at the end.
func receiver(s *xsk.Socket, src, dst endpoint, count uint64, report func(uint64), deadline time.Time) (bytes uint64, err error) {
	descs := make([]xsk.Desc, 64)
	var got, reported uint64
	for got < count {
		if time.Now().After(deadline) {
			return bytes, fmt.Errorf("receive: timed out after %d of %d frames", got, count)
		}
		n, err := s.Receive(descs)
		if err != nil {
			return bytes, err
		}
		if n == 0 {
			s.Wait(xsk.Readable, 10*time.Millisecond)
			continue
		}
		for i := range descs[:n] {
			f := s.Frame(descs[i])
			p, err := packet.Parse(f)
			if err != nil {
				return bytes, fmt.Errorf("frame %d: %w", got, err)
			}
			seq, ok := packet.CheckPayload(p.Payload)
			switch {
			case seq != got:
				return bytes, fmt.Errorf("frame %d: carries sequence number %d", got, seq)
			case !ok:
				return bytes, fmt.Errorf("frame %d: payload bytes differ", got)
			case len(f) != frameLen(seq):
				return bytes, fmt.Errorf("frame %d: %d bytes, want %d", got, len(f), frameLen(seq))
			case !bytesEqual(p.SrcMAC, src.mac) || !bytesEqual(p.DstMAC, dst.mac) || p.SrcIP != src.ip || p.DstIP != dst.ip:
				return bytes, fmt.Errorf("frame %d: %s %s -> %s %s", got, p.SrcMAC, p.SrcIP, p.DstMAC, p.DstIP)
			}
			got++
			bytes += uint64(len(f))
		}
		if err := s.Release(descs[:n]); err != nil {
			return bytes, err
		}
		if got-reported >= ackEvery || got == count {
			reported = got
			report(got)
		}
	}
	return bytes, nil
}

func bytesEqual(a, b []byte) bool { return bytes.Equal(a, b) }

// childWorkload is the container: it opens a socket through the agent,
// then at once receives COUNT frames from the host and sends COUNT frames
// to it. It reports "ready <registration>", "rx <n>" as it receives, and
// "done ..." at the end on stdout, and reads "ack <n>" lines (what the host
// received) on stdin.
func childWorkload() int {
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Printf(format+"\n", args...)
		mu.Unlock()
	}
	fail := func(err error) int {
		say("error: %v", err)
		return 1
	}
	env := func(k string) string { return os.Getenv(k) }
	count, _ := strconv.ParseUint(env("COUNT"), 10, 64)
	self, peer, err := endpoints(env("SELF"), env("PEER"))
	if err != nil {
		return fail(err)
	}
	sock, err := agent.DialSocket(env("AGENT_SOCKET"), "e2e-pod", env("AGENT_DEVICE"), 0, &agent.SocketOptions{
		XSK: &xsk.Options{NumFrames: 2048, TxFrames: 512, RxRingSize: 1024, FillRingSize: 1024,
			TxRingSize: 512, CompletionRingSize: 512},
	})
	if err != nil {
		return fail(err)
	}
	defer sock.Close()
	say("ready %s", sock.Registration())

	var acked atomic.Uint64
	progress := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
				n, _ := strconv.ParseUint(v, 10, 64)
				acked.Store(n)
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	var rxBytes uint64
	rxErr := make(chan error, 1)
	go func() {
		var err error
		rxBytes, err = receiver(sock.Socket, peer, self, count, func(n uint64) { say("rx %d", n) }, deadline)
		rxErr <- err
	}()
	txErr := sender(sock.Socket, self, peer, count, &acked, progress, deadline)
	if err := errors.Join(<-rxErr, txErr); err != nil {
		return fail(err)
	}
	st, err := sock.Stats()
	if err != nil {
		return fail(err)
	}
	caps, _ := container.Caps()
	say("done uid=%d caps=%#x rx=%d rx_bytes=%d tx=%d tx_bytes=%d rx_dropped=%d rx_ring_full=%d fill_empty=%d",
		os.Getuid(), caps, st.RxPackets, rxBytes, st.TxPackets, st.TxBytes, st.RxDropped, st.RxRingFull, st.FillRingEmpty)
	if err := sock.Close(); err != nil {
		return fail(err)
	}
	return 0
}

// endpoints parses "MAC,IP" pairs.
func endpoints(a, b string) (endpoint, endpoint, error) {
	parse := func(s string) (endpoint, error) {
		m, i, _ := strings.Cut(s, ",")
		mac, err := net.ParseMAC(m)
		if err != nil {
			return endpoint{}, err
		}
		ip, err := netip.ParseAddr(i)
		return endpoint{mac, ip}, err
	}
	x, err := parse(a)
	if err != nil {
		return x, endpoint{}, err
	}
	y, err := parse(b)
	return x, y, err
}

// autoRegistration is how a client that leaves the choice to
// agent.DialSocket (RegisterAuto) gets its socket into the agent's map on
// this kernel: through the map fd from Linux 6.5, the first to let an
// unprivileged process update an XSKMAP; through the agent before.
func autoRegistration(t *testing.T) agent.Registration {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	ok, err := releaseAtLeast(release, 6, 5)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		return agent.RegisterMapFD
	}
	return agent.RegisterAgent
}

// releaseAtLeast reports whether the kernel release (uname -r:
// "6.18.0-1-amd64", "5.15.0", "6.5") is major.minor or later.
func releaseAtLeast(release string, major, minor int) (bool, error) {
	end := strings.IndexFunc(release, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if end < 0 {
		end = len(release)
	}
	f := strings.Split(release[:end], ".")
	if len(f) < 2 {
		return false, fmt.Errorf("kernel release %q: want MAJOR.MINOR", release)
	}
	maj, err1 := strconv.Atoi(f[0])
	mnr, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return false, fmt.Errorf("kernel release %q: want MAJOR.MINOR", release)
	}
	return maj > major || maj == major && mnr >= minor, nil
}

func TestReleaseAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    bool
	}{
		{"6.18.0-1-amd64", true},
		{"6.5.0", true},
		{"6.5", true},
		{"6.4.16-generic", false},
		{"5.15.0-105-generic", false},
		{"5.11.0", false},
		{"7.0.0", true},
		{"6.10.0", true},
		{"10.0-rc1", true},
	} {
		got, err := releaseAtLeast(tc.release, 6, 5)
		if err != nil || got != tc.want {
			t.Errorf("releaseAtLeast(%q, 6, 5) = %v, %v; want %v", tc.release, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "6", "x.y", "6.-1"} {
		if _, err := releaseAtLeast(bad, 6, 5); err == nil {
			t.Errorf("releaseAtLeast(%q): no error", bad)
		}
	}
}

// TestUnprivilegedContainer: a workload in its own network, mount and PID
// namespaces, running as a non-root UID with only CAP_NET_RAW, opens an
// AF_XDP socket through the agent and, at the same time, receives count
// frames from the host and sends count frames to it across a veth pair;
// both sides check every frame's sequence number and bytes. The host side
// is an AF_XDP socket with its own program on the other end of the pair.
func TestUnprivilegedContainer(t *testing.T) {
	for _, tc := range []struct {
		name        string
		readOnlyMap bool
		count       uint64
		want        agent.Registration
	}{
		// The client writes the map through the fd the agent sent, on
		// Linux 6.5 and later; before, the kernel refuses the update
		// and the client asks the agent.
		{"auto", false, 100_000, autoRegistration(t)},
		// The agent sends a read-only map fd: the kernel refuses the
		// client's update (EPERM) and the client falls back to
		// /xsk_register.
		{"register_fallback", true, 100_000, agent.RegisterAgent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runWorkload(t, tc.readOnlyMap, tc.count, tc.want)
		})
	}
}

func runWorkload(t *testing.T, readOnlyMap bool, count uint64, want agent.Registration) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	dir := socketDir(t)
	srv, err := agent.NewServer(&agent.ServerOptions{
		Devices:     []agent.Device{{Name: v.Peer.Name, Netns: v.Peer.NS.Path(), Filter: udpFilter}},
		SocketDir:   dir,
		AllowedUIDs: []int{childUID},
		ReadOnlyMap: readOnlyMap,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	host, err := xsk.Open(v.Host.Name, 0, &xsk.Options{NumFrames: 4096, Filter: udpFilter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := host.Close(); err != nil {
			t.Error(err)
		}
	})
	hostEP := endpoint{v.Host.MAC, v.Host.IP()}
	peerEP := endpoint{v.Peer.MAC, v.Peer.IP()}

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	p, err := container.Start(&container.Options{
		Path: container.Executable(t), Child: "workload",
		UID: childUID, GID: childUID, Caps: []uintptr{unix.CAP_NET_RAW},
		Netns: v.Peer.NS.Path(),
		Env: []string{
			"AGENT_SOCKET=" + srv.SocketPath(v.Peer.Name), "AGENT_DEVICE=" + v.Peer.Name,
			"COUNT=" + strconv.FormatUint(count, 10),
			fmt.Sprintf("SELF=%s,%s", peerEP.mac, peerEP.ip), fmt.Sprintf("PEER=%s,%s", hostEP.mac, hostEP.ip),
		},
		Stdin: stdinR, Stdout: stdoutW, Stderr: &stderr,
	})
	stdinR.Close()
	stdoutW.Close()
	if err != nil {
		stdinW.Close()
		stdoutR.Close()
		t.Fatal(err)
	}
	defer p.Kill()
	defer stdinW.Close()

	// The child's reports: progress of its receiver, and its other lines.
	var childRx atomic.Uint64
	progress := make(chan struct{}, 1)
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdoutR)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "rx "); ok {
				n, _ := strconv.ParseUint(v, 10, 64)
				childRx.Store(n)
				select {
				case progress <- struct{}{}:
				default:
				}
				continue
			}
			lines <- sc.Text()
		}
		stdoutR.Close()
	}()
	childFailed := func(what string) {
		t.Helper()
		p.Kill()
		var rest []string
		for l := range lines {
			rest = append(rest, l)
		}
		t.Fatalf("%s; child said %q, stderr: %s", what, rest, stderr.String())
	}
	select {
	case l := <-lines:
		if l != "ready "+want.String() {
			childFailed(fmt.Sprintf("child's first line %q, want ready %s", l, want))
		}
	case <-time.After(20 * time.Second):
		childFailed("child not ready after 20s")
	}
	if srv.Conns() != 1 {
		t.Errorf("agent serves %d connections, want 1", srv.Conns())
	}

	start := time.Now()
	deadline := start.Add(60 * time.Second)
	var rxBytes uint64
	rxErr := make(chan error, 1)
	go func() {
		var err error
		rxBytes, err = receiver(host, peerEP, hostEP, count, func(n uint64) {
			fmt.Fprintf(stdinW, "ack %d\n", n)
		}, deadline)
		rxErr <- err
	}()
	txErr := sender(host, hostEP, peerEP, count, &childRx, progress, deadline)
	if err := errors.Join(txErr, <-rxErr); err != nil {
		childFailed(err.Error())
	}
	var done string
	for l := range lines {
		if strings.HasPrefix(l, "done ") {
			done = l
		} else {
			t.Errorf("child: %s", l)
		}
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("child: %v; stderr: %s", err, stderr.String())
	}
	elapsed := time.Since(start)
	var wantBytes uint64
	for seq := range count {
		wantBytes += uint64(frameLen(seq))
	}
	wantDone := fmt.Sprintf("done uid=%d caps=%#x rx=%d rx_bytes=%d tx=%d tx_bytes=%d rx_dropped=0 rx_ring_full=0 fill_empty=",
		childUID, 1<<unix.CAP_NET_RAW, count, wantBytes, count, wantBytes)
	if !strings.HasPrefix(done, wantDone) {
		t.Errorf("child reported\n%s\nwant\n%s...", done, wantDone)
	}
	if rxBytes != wantBytes {
		t.Errorf("host received %d bytes, want %d", rxBytes, wantBytes)
	}
	st, err := host.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RxPackets != count || st.RxDropped != 0 || st.RxRingFull != 0 {
		t.Errorf("host socket: %+v", st)
	}
	t.Logf("%d frames each way in %v (%.0f frames/s each way); child: %s", count, elapsed.Round(time.Millisecond),
		float64(count)/elapsed.Seconds(), done)

	// The workload is gone: so are its connection and its XSKMAP entry.
	testenv.WaitFor(t, "the agent to drop the connection", func() bool { return srv.Conns() == 0 })
	if err := probeStack(t, v.Peer.NS.Do, v.Host.IP(), v.Peer.IP()); err != nil {
		t.Error(err)
	}
}

// probeStack sends a UDP datagram from the host to port on the peer and
// checks that the peer's stack receives it: the agent's program passes
// frames for a queue without a socket on.
func probeStack(t *testing.T, inPeer func(func() error) error, hostIP, peerIP netip.Addr) error {
	var ln *net.UDPConn
	err := inPeer(func() error {
		var err error
		ln, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(peerIP, port)))
		return err
	})
	if err != nil {
		return err
	}
	defer ln.Close()
	out, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(peerIP, port)))
	if err != nil {
		return err
	}
	defer out.Close()
	buf := make([]byte, 16)
	for range 50 {
		out.Write([]byte("probe"))
		ln.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := ln.Read(buf); err == nil {
			return nil
		}
	}
	return errors.New("UDP to the workload's former queue never reached the stack: XSKMAP entry left behind")
}

// socketDir makes an agent socket directory that other UIDs may traverse.
func socketDir(t *testing.T) string { return testenv.SharedDir(t, "afxdp-e2e-") }
