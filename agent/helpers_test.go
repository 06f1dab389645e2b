package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/container"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

func TestMain(m *testing.M) {
	container.RunChild(children)
	os.Exit(m.Run())
}

// testPort is the UDP port the test program's filter redirects.
const testPort = 7777

// testEnv is a served veth pair: the program sits on the host end, in the
// test's namespace, and redirects UDP to testPort.
type testEnv struct {
	veth *netenv.Veth
	srv  *Server
	dir  string // socket directory
	dev  string
	sock string
}

// socketDir makes a socket directory that other UIDs may traverse.
func socketDir(t *testing.T) string { return testenv.SharedDir(t, "afxdp-agent-test-") }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestEnv serves a new veth pair; tweak may change the options.
func newTestEnv(t *testing.T, tweak func(*ServerOptions)) *testEnv {
	t.Helper()
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	dir := socketDir(t)
	opts := &ServerOptions{
		Devices: []Device{{
			Name:   v.Host.Name,
			Filter: bpf.Filter{EtherType: 0x0800, IPProto: unix.IPPROTO_UDP, DstPort: testPort},
		}},
		SocketDir: dir,
		Logger:    testLogger(t),
	}
	if tweak != nil {
		tweak(opts)
	}
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return &testEnv{veth: v, srv: srv, dir: dir, dev: v.Host.Name, sock: srv.SocketPath(v.Host.Name)}
}

// rawConn is a client that speaks bytes, for conformance tests.
type rawConn struct {
	t *testing.T
	c *net.UnixConn
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c}
}

// send writes msg with fds attached.
func (r *rawConn) send(msg []byte, fds ...int) {
	r.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := r.c.WriteMsgUnix(msg, oob, nil); err != nil {
		r.t.Fatalf("send %q: %v", clip(string(msg)), err)
	}
}

// recv reads one response; the descriptors that came with it are closed
// at cleanup. It returns io.EOF when the server hung up.
func (r *rawConn) recv() (string, []int, error) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1024)
	oob := make([]byte, oobSize)
	n, oobn, _, _, err := r.c.ReadMsgUnix(buf, oob)
	var fds []int
	if oobn > 0 {
		fds = parseRights(oob[:oobn])
	}
	r.t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	if err != nil {
		return "", fds, err
	}
	return string(buf[:n]), fds, nil
}

// roundTrip sends msg and wants resp back with wantFDs descriptors.
func (r *rawConn) roundTrip(msg string, resp string, wantFDs int, fds ...int) []int {
	r.t.Helper()
	r.send([]byte(msg), fds...)
	got, gotFDs, err := r.recv()
	if err != nil {
		r.t.Fatalf("%q: no answer: %v", clip(msg), err)
	}
	if got != resp || len(gotFDs) != wantFDs {
		r.t.Fatalf("%q: got %q with %d fds, want %q with %d", clip(msg), got, len(gotFDs), resp, wantFDs)
	}
	return gotFDs
}

// wantHangup checks that the server closed the connection.
func (r *rawConn) wantHangup() {
	r.t.Helper()
	got, fds, err := r.recv()
	if !errors.Is(err, io.EOF) {
		r.t.Fatalf("want the server to hang up, got %q (%d fds), %v", got, len(fds), err)
	}
}

// newXSK returns an AF_XDP socket, unbound, closed at cleanup.
func newXSK(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("create AF_XDP socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// newBoundXSK returns an AF_XDP socket bound to queue of dev, with no XDP
// program of its own, closed at cleanup.
func newBoundXSK(t *testing.T, dev string, queue int) *xsk.Socket {
	t.Helper()
	o := *smallXSK
	o.NoXDP = true
	s, err := xsk.Open(dev, queue, &o)
	if err != nil {
		t.Fatalf("open AF_XDP socket on %s queue %d: %v", dev, queue, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newPipe returns a pipe's read end, closed at cleanup.
func newPipe(t *testing.T) int {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	t.Cleanup(func() { unix.Close(p[0]) })
	return p[0]
}

// udpReachesStack sends a few UDP datagrams from the peer to the host end on
// testPort and reports whether the host's network stack received any: true
// when the XSKMAP has no entry for queue 0 (the program passes the frame
// on), false when it redirects to the registered socket (an unbound one
// drops it).
func (e *testEnv) udpReachesStack(t *testing.T) bool {
	t.Helper()
	ln, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.veth.Host.IP(), testPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var out *net.UDPConn
	err = e.veth.Peer.Do(func() error {
		var err error
		out, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.veth.Host.IP(), testPort)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	got := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64)
		ln.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := ln.ReadFromUDP(buf); err == nil {
			got <- struct{}{}
		}
		close(got)
	}()
	for i := 0; i < 10; i++ {
		out.Write([]byte(fmt.Sprintf("probe %d", i)))
		time.Sleep(20 * time.Millisecond)
	}
	_, ok := <-got
	return ok
}

// fdCount counts this process's open descriptors.
func fdCount(t *testing.T) int { return testenv.Snapshot(t).FDs }
