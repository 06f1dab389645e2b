package agent

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/testenv"
)

// Tests that play a hostile client on a raw socket. After each, the server
// must still serve a well-behaved client, and hold no more descriptors or
// goroutines than before.

// baseline is what the process held before a hostile test.
type baseline struct {
	fds, goroutines int
}

func takeBaseline(t *testing.T) baseline {
	t.Helper()
	return baseline{fds: fdCount(t), goroutines: runtime.NumGoroutine()}
}

// check waits for the server's connections to end and wants the
// descriptors and goroutines back where they were, then a full session of
// a well-behaved client to work (its fds are gone at its end too).
func (b baseline) check(t *testing.T, e *testEnv) {
	t.Helper()
	testenv.WaitFor(t, "connections to end", func() bool { return e.srv.Conns() == 0 })
	testenv.WaitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= b.goroutines+2 })
	if after := fdCount(t); after != b.fds {
		t.Errorf("fds: %d before, %d after", b.fds, after)
	}
	wellBehaved(t, e)
	testenv.WaitFor(t, "connections to end", func() bool { return e.srv.Conns() == 0 })
	if after := fdCount(t); after != b.fds {
		t.Errorf("fds after a good session: %d before, %d after", b.fds, after)
	}
}

// wellBehaved runs a normal session with the Client.
func wellBehaved(t *testing.T, e *testEnv) {
	t.Helper()
	c, err := Dial(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(5 * time.Second)
	if err := c.Connect("good-pod"); err != nil {
		c.Close()
		t.Fatalf("well-behaved client: Connect: %v", err)
	}
	if v, err := c.Version(); err != nil || v != ProtocolVersion {
		c.Close()
		t.Fatalf("well-behaved client: Version() = %q, %v", v, err)
	}
	fd, err := c.XSKMapFD(e.dev)
	if err != nil {
		c.Close()
		t.Fatalf("well-behaved client: XSKMapFD: %v", err)
	}
	unix.Close(fd)
	if err := c.Close(); err != nil {
		t.Fatalf("well-behaved client: Close: %v", err)
	}
}

// TestHostileOversized: MaxMessageSize is the longest request accepted,
// to the byte; a longer one is refused with /nak, before /connect (and
// then hung up on) as after it (the session goes on).
func TestHostileOversized(t *testing.T) {
	for _, max := range []int{DefaultMaxMessageSize, 64 << 10} {
		e := newTestEnv(t, func(o *ServerOptions) {
			if max != DefaultMaxMessageSize {
				o.MaxMessageSize = max
			}
		})
		b := takeBaseline(t)
		pad := func(s string, n int) []byte { return []byte(s + strings.Repeat(" ", n-len(s))) }
		t.Run("", func(t *testing.T) {
			r := dialRaw(t, e.sock)
			// Set a send buffer big enough for the largest message.
			r.c.SetWriteBuffer(4 * max)
			r.send(pad("/connect, pod", max+1))
			if got, _, err := r.recv(); err != nil || got != RespNak {
				t.Fatalf("/connect of %d bytes: got %q, %v; want %q", max+1, got, err, RespNak)
			}
			r.wantHangup()

			r = dialRaw(t, e.sock)
			r.c.SetWriteBuffer(4 * max)
			r.send(pad("/connect, pod", max))
			if got, _, err := r.recv(); err != nil || got != RespHostOK {
				t.Fatalf("/connect of %d bytes: got %q, %v; want %q", max, got, err, RespHostOK)
			}
			for _, tc := range []struct {
				n    int
				want string
			}{
				{max, ProtocolVersion},
				{max + 1, RespNak},
				{max + 2, RespNak},
				{2 * max, RespNak},
			} {
				r.send(pad("/version", tc.n))
				got, fds, err := r.recv()
				if err != nil || got != tc.want || len(fds) != 0 {
					t.Errorf("/version padded to %d bytes (max %d): got %q, %v; want %q", tc.n, max, got, err, tc.want)
				}
			}
			r.roundTrip("/fin", RespFinAck, 0)
			r.wantHangup()
		})
		b.check(t, e)
	}
}

// TestHostileFraming: SOCK_SEQPACKET keeps message boundaries, so a
// request split across writes is two bad requests, and several requests
// in one write are one bad request; none is taken for a good one.
func TestHostileFraming(t *testing.T) {
	e := newTestEnv(t, nil)
	b := takeBaseline(t)
	t.Run("split_connect", func(t *testing.T) {
		r := dialRaw(t, e.sock)
		r.send([]byte("/conn"))
		r.c.Write([]byte("ect, pod")) // EPIPE once the server hung up
		if got, _, err := r.recv(); err != nil || got != RespNak {
			t.Fatalf("got %q, %v; want %q", got, err, RespNak)
		}
		r.wantHangup()
	})
	t.Run("split_after_connect", func(t *testing.T) {
		r := dialRaw(t, e.sock)
		r.roundTrip("/connect, pod", RespHostOK, 0)
		r.roundTrip("/xsk_map_fd,", RespNak, 0)
		r.roundTrip(" "+e.dev, RespNak, 0)
		r.roundTrip("/config_busy_", RespNak, 0)
		r.roundTrip("poll, 1, 1", RespNak, 0)
		r.roundTrip("/fin", RespFinAck, 0)
		r.wantHangup()
	})
	t.Run("several_in_one", func(t *testing.T) {
		for _, first := range []string{
			"/connect, pod\n/version", "/connect, pod\x00/version", "/connect, pod/version",
			"/connect, pod\r\n/xsk_map_fd, " + e.dev,
		} {
			r := dialRaw(t, e.sock)
			r.roundTrip(first, RespHostNak, 0)
			r.wantHangup()
		}
		r := dialRaw(t, e.sock)
		r.roundTrip("/connect, pod", RespHostOK, 0)
		for _, msg := range []string{
			"/version\n/version", "/version\x00/fin", "/version/version", "/fin /fin",
			"/xsk_map_fd, " + e.dev + "\n/xsk_map_fd, " + e.dev,
		} {
			r.roundTrip(msg, RespNak, 0)
		}
		// A trailing newline or NULs are only padding.
		r.roundTrip("/version\n", ProtocolVersion, 0)
		r.roundTrip("/version\x00\x00\x00", ProtocolVersion, 0)
		r.roundTrip("/fin", RespFinAck, 0)
		r.wantHangup()
	})
	b.check(t, e)
}

// hostileFDs returns descriptors of kinds the server does not expect: an
// eventfd, a memfd, a UDP socket, an epoll fd, an O_PATH fd, a Unix socket,
// one without close-on-exec. They are closed at cleanup.
func hostileFDs(t *testing.T) map[string]int {
	t.Helper()
	fds := map[string]int{}
	add := func(name string, fd int, err error) {
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		fds[name] = fd
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	add("eventfd", fd, err)
	fd, err = unix.MemfdCreate("hostile", unix.MFD_CLOEXEC)
	add("memfd", fd, err)
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	add("udp", fd, err)
	fd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	add("epoll", fd, err)
	fd, err = unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	add("opath", fd, err)
	fd, err = unix.Open("/dev/null", unix.O_RDWR, 0) // no close-on-exec
	add("no_cloexec", fd, err)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		unix.Close(sp[1])
	}
	add("unix", sp[0], err)
	return fds
}

// TestHostileFDs sends descriptors with requests that take none, too many
// of them, and ones that are not AF_XDP sockets; every one is refused and
// closed by the server.
func TestHostileFDs(t *testing.T) {
	e := newTestEnv(t, nil)
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		bad := hostileFDs(t)
		var all []int
		for _, fd := range bad {
			all = append(all, fd)
		}
		// Before /connect: refused and hung up on, the descriptors closed.
		r := dialRaw(t, e.sock)
		r.roundTrip("/version", RespNak, 0, all...)
		r.wantHangup()
		r = dialRaw(t, e.sock)
		r.roundTrip("/connect, pod", RespHostNak, 0, all...)
		r.wantHangup()
		r = dialRaw(t, e.sock)
		r.roundTrip("/xsk_register, "+e.dev+", 0", RespNak, 0, newXSK(t))
		r.wantHangup()

		// Its own connection, sent over itself: the server shuts every
		// Unix socket it is sent for reading before it closes it (see
		// closeReceived), which shuts the server's end for writing, so
		// the connection ends unanswered.
		r = dialRaw(t, e.sock)
		r.roundTrip("/connect, pod", RespHostOK, 0)
		rc, err := r.c.File()
		if err != nil {
			t.Fatal(err)
		}
		r.send([]byte("/version"), int(rc.Fd()))
		rc.Close()
		r.wantHangup()

		r = dialRaw(t, e.sock)
		r.roundTrip("/connect, pod", RespHostOK, 0)
		for name, fd := range bad {
			t.Run(name, func(t *testing.T) {
				r.roundTrip("/version", RespNak, 0, fd)
				r.roundTrip("/xsk_map_fd, "+e.dev, RespNak, 0, fd)
				r.roundTrip("/config_busy_poll, 1, 1", RespBusyPollNak, 0, fd)
				r.roundTrip("/xsk_register, "+e.dev+", 0", RespXSKRegisterNak, 0, fd)
				r.roundTrip("/connect, pod", RespNak, 0, fd)
			})
		}
		// Several, up to the most the kernel passes in one message
		// (SCM_MAX_FD), all of which the control buffer holds.
		for _, n := range []int{2, 9, scmMaxFD} {
			fds := make([]int, n)
			for i := range fds {
				fds[i] = all[i%len(all)]
			}
			r.roundTrip("/version", RespNak, 0, fds...)
			r.roundTrip("/config_busy_poll, 1, 1", RespBusyPollNak, 0, append(fds[:len(fds)-1], newXSK(t))...)
		}
		r.roundTrip("/version", ProtocolVersion, 0)
		// Descriptors queued after /fin are closed as the server hangs up.
		r.send([]byte(ReqFin))
		for range 5 {
			r.c.WriteMsgUnix([]byte(ReqVersion), unix.UnixRights(all...), nil)
		}
		if got, _, err := r.recv(); err != nil || got != RespFinAck {
			t.Fatalf("got %q, %v; want %q", got, err, RespFinAck)
		}
		r.wantHangup()
	})
	b.check(t, e)
}

// TestHostileRegisterFirst: /xsk_register before /connect is refused, the
// connection hung up on, and the XSKMAP left alone.
func TestHostileRegisterFirst(t *testing.T) {
	e := newTestEnv(t, nil)
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		sock := newBoundXSK(t, e.dev, 0)
		for _, first := range []string{"/xsk_register, " + e.dev + ", 0", "/config_busy_poll, 1, 1"} {
			r := dialRaw(t, e.sock)
			r.roundTrip(first, RespNak, 0, sock.FD())
			r.wantHangup()
		}
		if !e.udpReachesStack(t) {
			t.Error("a socket got into the XSKMAP without /connect")
		}
	})
	b.check(t, e)
}

// TestHostileFlood opens many connections at once, some silent, some
// connected, while a well-behaved client works; when the flood ends, every
// descriptor and goroutine of it is gone.
func TestHostileFlood(t *testing.T) {
	// Room for the flood and the well-behaved client: the limit has a
	// test of its own.
	e := newTestEnv(t, func(o *ServerOptions) { o.MaxConns = 401 })
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		const n = 400
		conns := make([]*net.UnixConn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := range n {
			c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: e.sock, Net: "unixpacket"})
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			conns = append(conns, c)
			if i%2 == 0 {
				c.Write([]byte("/connect, flood"))
			}
		}
		testenv.WaitFor(t, "the flood to be accepted", func() bool { return e.srv.Conns() == n })
		wellBehaved(t, e)
		// Half of them go away abruptly, half with a request pending.
		for i, c := range conns {
			if i%3 == 0 {
				c.Write([]byte("/version"))
			}
			c.Close()
		}
		conns = nil
	})
	b.check(t, e)
}

// TestHostileNeverReads: a client that sends requests and reads no answer
// is dropped after WriteTimeout, with the descriptors it had queued, and
// does not hold up another client meanwhile.
func TestHostileNeverReads(t *testing.T) {
	e := newTestEnv(t, func(o *ServerOptions) {
		o.IdleTimeout = -1
		o.WriteTimeout = 500 * time.Millisecond
	})
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		r := dialRaw(t, e.sock)
		r.roundTrip("/connect, pod", RespHostOK, 0)
		pipe := newPipe(t)
		// Answers with a descriptor each (the XSKMAP's), and requests with
		// one, until the server drops the client. The first send that
		// blocks (most likely because the server is stuck writing an
		// answer) is when another client must still be served.
		served := false
		r.sendUntilDropped(func(i int) ([]byte, []byte) {
			if i%2 == 1 {
				return []byte("/version"), unix.UnixRights(pipe)
			}
			return []byte("/xsk_map_fd, " + e.dev), nil
		}, func() {
			if !served {
				served = true
				wellBehaved(t, e)
			}
		})
		testenv.WaitFor(t, "the server to drop the stalled client", func() bool { return e.srv.Conns() == 0 })
	})
	b.check(t, e)
}

// sendUntilDropped sends the requests next returns, reading no answer,
// until a send fails otherwise than by blocking: the server has hung up.
// blocked is called each time a send has blocked for a while. A send can
// block merely because the server was not scheduled for that while (on a
// busy machine): so a blocked send is not taken for a stalled server, and
// the client goes on sending until the server, its answers unread, stalls
// writing one and gives up after WriteTimeout.
func (r *rawConn) sendUntilDropped(next func(i int) (msg, oob []byte), blocked func()) {
	r.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for i := 0; ; {
		if time.Now().After(deadline) {
			r.t.Fatalf("the server still takes requests after %d whose answers are not read", i)
		}
		msg, oob := next(i)
		r.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, err := r.c.WriteMsgUnix(msg, oob, nil)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if blocked != nil {
				blocked()
			}
		case err != nil:
			return
		default:
			i++
		}
	}
}

// TestHostileDisconnect: a client that goes away with its request unread
// or its answer in flight leaves nothing behind; a registration made for a
// request whose client is gone is removed.
func TestHostileDisconnect(t *testing.T) {
	e := newTestEnv(t, nil)
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		sock := newBoundXSK(t, e.dev, 0)
		for _, req := range []struct {
			msg string
			fd  int
		}{
			{"/connect, pod", -1},
			{"/xsk_map_fd, " + e.dev, -1},
			{"/xsk_register, " + e.dev + ", 0", sock.FD()},
			{"/config_busy_poll, 1, 1", sock.FD()},
			{"/version", newPipe(t)},
		} {
			for _, how := range []string{"close", "shutdown_write", "shutdown_read"} {
				r := dialRaw(t, e.sock)
				if req.msg != "/connect, pod" {
					r.roundTrip("/connect, pod", RespHostOK, 0)
				}
				if req.fd >= 0 {
					r.send([]byte(req.msg), req.fd)
				} else {
					r.send([]byte(req.msg))
				}
				switch how {
				case "close":
					r.c.Close()
				case "shutdown_write":
					r.c.CloseWrite()
				case "shutdown_read":
					// The server's next answer fails with EPIPE.
					r.c.CloseRead()
					r.c.Write([]byte(ReqVersion))
				}
				testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })
				r.c.Close()
			}
		}
		testenv.WaitFor(t, "connections to end", func() bool { return e.srv.Conns() == 0 })
		if !e.udpReachesStack(t) {
			t.Error("XSKMAP entry left by a client that went away")
		}
	})
	b.check(t, e)
}

// lingeringSocket returns a TCP socket whose last close(2) blocks for
// linger seconds: SO_LINGER is set and it holds data it cannot send, since
// its peer never reads, so its FIN cannot go out either. The caller sends
// it and closes its own copy, leaving the receiver the last reference.
func lingeringSocket(t *testing.T, linger int32) int {
	t.Helper()
	fd, _ := lingeringSocketPeer(t, linger)
	return fd
}

// lingeringSocketPeer is lingeringSocket, and returns the TCP socket's
// peer too: closing it resets the connection, which ends a close(2)
// lingering on the socket at once.
func lingeringSocketPeer(t *testing.T, linger int32) (int, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.AcceptTCP()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	peer.SetReadBuffer(4096)
	c.SetWriteBuffer(4096)
	junk := bytes.Repeat([]byte("x"), 64<<10)
	for {
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := c.Write(junk); err != nil {
			break
		}
	}
	f, err := c.File()
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.SetsockoptLinger(int(f.Fd()), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: linger}); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return fd, peer
}

// TestHostileLingeringFD: closing a descriptor can block: a TCP socket
// with SO_LINGER set and data it cannot send makes close(2) wait up to the
// linger time, when that close is the last reference. A client that sends
// such a socket, with any request, and closes its own copy must not stall
// its connection, the server's Close, or the server.
func TestHostileLingeringFD(t *testing.T) {
	e := newTestEnv(t, nil)
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		for _, req := range []string{"/version", "/config_busy_poll, 1, 1", "/xsk_register, " + e.dev + ", 0"} {
			fd := lingeringSocket(t, 3600)
			r := dialRaw(t, e.sock)
			r.roundTrip("/connect, pod", RespHostOK, 0)
			r.send([]byte(req), fd)
			unix.Close(fd) // the server's is the last reference
			r.c.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 64)
			n, err := r.c.Read(buf)
			if err != nil {
				t.Fatalf("%s with a lingering TCP socket: no answer: %v", req, err)
			}
			if got := string(buf[:n]); got == RespBusyPollAck || got == RespXSKRegisterAck {
				t.Fatalf("%s with a TCP socket: %q", req, got)
			}
			r.roundTrip("/fin", RespFinAck, 0)
			r.wantHangup()
		}
	})
	b.check(t, e)
}

// TestHostileTooManyConns: connections beyond MaxConns are closed as soon
// as they are accepted, so that clients cannot take every descriptor the
// agent has; once one of the served ones goes, a new client is served.
func TestHostileTooManyConns(t *testing.T) {
	const limit = 3
	e := newTestEnv(t, func(o *ServerOptions) { o.MaxConns = limit })
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		var held []*net.UnixConn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := range limit {
			c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: e.sock, Net: "unixpacket"})
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			held = append(held, c)
		}
		testenv.WaitFor(t, "the connections within the limit to be served", func() bool { return e.srv.Conns() == limit })
		extra, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: e.sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer extra.Close()
		extra.SetReadDeadline(time.Now().Add(5 * time.Second))
		extra.Write([]byte("/version"))
		// Hung up on: end of file, or a reset when the request was
		// still unread at the close.
		if n, err := extra.Read(make([]byte, 64)); n != 0 || !errors.Is(err, io.EOF) && !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("connection beyond MaxConns %d: read %d bytes, %v; want it hung up on", limit, n, err)
		}
		if got := e.srv.Conns(); got != limit {
			t.Fatalf("%d connections served, want %d", got, limit)
		}
		held[0].Close()
		held = held[1:]
		testenv.WaitFor(t, "a served connection to go", func() bool { return e.srv.Conns() == limit-1 })
		wellBehaved(t, e)
	})
	b.check(t, e)
}

// lingerSecs is the linger time of the sockets the tests below send: long
// enough that a server stalled by one fails the test rather than catch up
// within waitFor's 10 s, short enough that such a failure ends.
const lingerSecs = 30

// TestHostileLingeringFDBeyondBuffer: descriptors that do not fit in the
// server's control buffer are not installed, and the kernel drops them in
// the receiving thread as recvmsg returns: a lingering socket among them
// stalled the connection (and the server's Close) for its linger time. The
// buffer holds as many as the kernel passes in one message (SCM_MAX_FD), so
// every one arrives and is closed without lingering.
func TestHostileLingeringFDBeyondBuffer(t *testing.T) {
	e := newTestEnv(t, nil)
	b := takeBaseline(t)
	t.Run("", func(t *testing.T) {
		pipe := newPipe(t)
		for _, req := range []string{"/version", "/config_busy_poll, 1, 1"} {
			fds := make([]int, scmMaxFD)
			for i := range fds {
				fds[i] = pipe
			}
			fd := lingeringSocket(t, lingerSecs)
			fds[len(fds)-1] = fd // the last, beyond any smaller buffer
			r := dialRaw(t, e.sock)
			r.roundTrip("/connect, pod", RespHostOK, 0)
			r.send([]byte(req), fds...)
			unix.Close(fd)
			if got, _, err := r.recv(); err != nil || got == RespBusyPollAck {
				t.Fatalf("%s with %d descriptors, the last a lingering socket: got %q, %v", req, len(fds), got, err)
			}
			r.roundTrip("/fin", RespFinAck, 0)
			r.wantHangup()
		}
	})
	b.check(t, e)
}

// stall sends requests without reading their answers until the server is
// blocked writing one (the client's receive queue is full) and the
// client's own send buffer is full too, then makes room in that buffer:
// what the client sends next stays queued, unread, at the server, until
// the client reads. It returns the number of requests sent, each of which
// the server answers once the client reads.
func (r *rawConn) stall() int {
	r.t.Helper()
	r.c.SetWriteBuffer(4096)
	i := 0
	for ; ; i++ {
		if i == 100_000 {
			r.t.Fatal("the server keeps reading requests whose answers are not read")
		}
		r.c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := r.c.Write([]byte(ReqVersion)); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				r.t.Fatalf("stall the server: %v", err)
			}
			break
		}
	}
	r.c.SetWriteDeadline(time.Time{})
	r.c.SetWriteBuffer(1 << 20)
	return i
}

// readUntil reads answers until want; it fails on anything but
// ProtocolVersion before it.
func (r *rawConn) readUntil(want string) {
	r.t.Helper()
	for {
		got, _, err := r.recv()
		if err != nil {
			r.t.Fatalf("waiting for %q: %v", want, err)
		}
		if got == want {
			return
		}
		if got != ProtocolVersion {
			r.t.Fatalf("waiting for %q: got %q", want, got)
		}
	}
}

// TestHostileLingeringFDQueued: descriptors still queued, unread, on a
// connection when the server closes it are dropped by the kernel in the
// thread that closes it, and a lingering socket among them stalled that
// thread for its linger time: the connection's goroutine (holding its
// MaxConns slot), the server's Close, or, for a connection beyond
// MaxConns, the accept loop of the device. The server reads and closes
// every queued descriptor before it closes a connection, whatever ends
// it.
func TestHostileLingeringFDQueued(t *testing.T) {
	// queue stalls the server and queues msgs, the last with a lingering
	// socket, behind what it has not read yet.
	queue := func(t *testing.T, r *rawConn, msgs ...string) {
		t.Helper()
		r.roundTrip("/connect, pod", RespHostOK, 0)
		r.stall()
		for i, msg := range msgs {
			var oob []byte
			fd := -1
			if i == len(msgs)-1 {
				fd = lingeringSocket(t, lingerSecs)
				oob = unix.UnixRights(fd)
			}
			_, _, err := r.c.WriteMsgUnix([]byte(msg), oob, nil)
			if err != nil {
				if fd >= 0 {
					closeReceived(fd, nil) // not sent: the last copy, whose close would linger
				}
				t.Fatalf("queue %q: %v", msg, err)
			}
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		tweak func(*ServerOptions)
		run   func(t *testing.T, e *testEnv)
	}{
		{"write_timeout", func(o *ServerOptions) { o.WriteTimeout = 500 * time.Millisecond }, func(t *testing.T, e *testEnv) {
			r := dialRaw(t, e.sock)
			queue(t, r, ReqVersion)
			testenv.WaitFor(t, "the server to drop the client that does not read", func() bool { return e.srv.Conns() == 0 })
		}},
		{"client_closes", nil, func(t *testing.T, e *testEnv) {
			r := dialRaw(t, e.sock)
			queue(t, r, ReqVersion)
			r.c.Close()
			testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })
		}},
		{"fin_then_empty", nil, func(t *testing.T, e *testEnv) {
			// An empty datagram reads like the end of the stream.
			r := dialRaw(t, e.sock)
			queue(t, r, ReqFin, "", ReqVersion)
			r.readUntil(RespFinAck)
			testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })
			r.wantHangup()
		}},
		{"beyond_max_conns", func(o *ServerOptions) { o.MaxConns = 1 }, func(t *testing.T, e *testEnv) {
			held := dialRaw(t, e.sock)
			testenv.WaitFor(t, "the first connection to be served", func() bool { return e.srv.Conns() == 1 })
			// The server closes the next one as soon as it accepts it; the
			// request must be queued before that, so try a few times.
			queued := false
			for range 20 {
				fd := lingeringSocket(t, lingerSecs)
				extra := dialRaw(t, e.sock)
				_, _, err := extra.c.WriteMsgUnix([]byte(ReqVersion), unix.UnixRights(fd), nil)
				if err == nil {
					unix.Close(fd)
				} else {
					closeReceived(fd, nil) // not sent: the last copy, whose close would linger
				}
				// Hung up on (end of file, or a reset since the request is
				// unread) before the first connection goes.
				if _, _, rerr := extra.recv(); !errors.Is(rerr, io.EOF) && !errors.Is(rerr, unix.ECONNRESET) {
					t.Fatalf("connection beyond MaxConns: %v; want it hung up on", rerr)
				}
				extra.c.Close()
				if err == nil {
					queued = true
					break
				}
			}
			if !queued {
				t.Fatal("the server closed every connection beyond MaxConns before a request reached it")
			}
			held.c.Close()
			testenv.WaitFor(t, "the first connection to end", func() bool { return e.srv.Conns() == 0 })
			wellBehaved(t, e) // the device still accepts connections
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.tweak)
			b := takeBaseline(t)
			t.Run("", func(t *testing.T) { tc.run(t, e) })
			b.check(t, e)
		})
	}
	t.Run("server_close", func(t *testing.T) {
		e := newTestEnv(t, nil)
		r := dialRaw(t, e.sock)
		queue(t, r, ReqVersion)
		closeUnstalled(t, e.srv, "a descriptor")
		if n := e.srv.Conns(); n != 0 {
			t.Fatalf("%d connections left after Close", n)
		}
	})
}

// nests builds Unix sockets that hold, out of the server's reach, a TCP
// socket whose last close lingers (see lingeringSocket): each returns the
// Unix socket, every other copy of it and of what it holds closed, so that
// whoever closes it drops the lingering socket, in its own thread, unless
// it takes out what is queued first.
var nests = []struct {
	name  string
	build func(t *testing.T) int
}{
	{"stream", func(t *testing.T) int { return holding(t, unix.SOCK_STREAM, lingeringSocket(t, lingerSecs)) }},
	{"dgram", func(t *testing.T) int { return holding(t, unix.SOCK_DGRAM, lingeringSocket(t, lingerSecs)) }},
	{"seqpacket", func(t *testing.T) int { return holding(t, unix.SOCK_SEQPACKET, lingeringSocket(t, lingerSecs)) }},
	{"listening", func(t *testing.T) int {
		// In the queue of a connection the listener has not accepted.
		ln := unixSocket(t, unix.SOCK_STREAM)
		if err := unix.Bind(ln, &unix.SockaddrUnix{}); err != nil { // autobind
			t.Fatal(err)
		}
		if err := unix.Listen(ln, 4); err != nil {
			t.Fatal(err)
		}
		addr, err := unix.Getsockname(ln)
		if err != nil {
			t.Fatal(err)
		}
		c := unixSocket(t, unix.SOCK_STREAM)
		if err := unix.Connect(c, addr); err != nil {
			t.Fatal(err)
		}
		tcp := lingeringSocket(t, lingerSecs)
		sendRights(t, c, 0, tcp)
		unix.Close(tcp)
		unix.Close(c)
		return ln
	}},
	{"seqpacket_empty", func(t *testing.T) int {
		// Behind an empty datagram, which reads like the end.
		sp := unixPair(t, unix.SOCK_SEQPACKET)
		if err := unix.Sendmsg(sp[1], nil, nil, nil, 0); err != nil {
			t.Fatal(err)
		}
		return holdingPair(t, sp, lingeringSocket(t, lingerSecs))
	}},
	{"stream_oob", func(t *testing.T) int {
		// Out of band, between two bytes in line: a read of the stream
		// that goes past it drops it.
		sp := unixPair(t, unix.SOCK_STREAM)
		tcp := lingeringSocket(t, lingerSecs)
		sendRights(t, sp[1], 0)
		sendRights(t, sp[1], unix.MSG_OOB, tcp)
		sendRights(t, sp[1], 0)
		unix.Close(tcp)
		unix.Close(sp[1])
		return sp[0]
	}},
	{"timestamps", func(t *testing.T) int {
		// The peer asked for timestamps, which take room ahead of
		// descriptors in the control buffer: those that do not fit are
		// dropped as recvmsg returns.
		sp := unixPair(t, unix.SOCK_DGRAM)
		for _, opt := range []int{unix.SO_TIMESTAMPNS_NEW, unix.SO_PASSCRED} {
			if err := unix.SetsockoptInt(sp[0], unix.SOL_SOCKET, opt, 1); err != nil {
				t.Fatal(err)
			}
		}
		fds := make([]int, scmMaxFD)
		for i := range fds {
			fds[i] = newPipe(t)
		}
		tcp := lingeringSocket(t, lingerSecs)
		fds[len(fds)-1] = tcp
		sendRights(t, sp[1], 0, fds...)
		unix.Close(tcp)
		unix.Close(sp[1])
		return sp[0]
	}},
	{"nested", func(t *testing.T) int {
		inner := holding(t, unix.SOCK_SEQPACKET, lingeringSocket(t, lingerSecs))
		return holding(t, unix.SOCK_STREAM, inner)
	}},
	{"deep", func(t *testing.T) int {
		// Deeper than the server empties at once: the rest is closed in
		// the background.
		fd := lingeringSocket(t, lingerSecs)
		for range maxReapSteps {
			fd = holding(t, unix.SOCK_DGRAM, fd)
		}
		return fd
	}},
	{"wide", func(t *testing.T) int {
		// Each socket holds the next with scmMaxFD-1 copies of another
		// (empty) Unix socket.
		fd := lingeringSocket(t, lingerSecs)
		for range 8 {
			sp := unixPair(t, unix.SOCK_DGRAM)
			empty := unixSocket(t, unix.SOCK_DGRAM)
			fds := make([]int, scmMaxFD)
			for i := range fds {
				fds[i] = empty
			}
			fds[len(fds)-1] = fd
			sendRights(t, sp[1], 0, fds...)
			unix.Close(sp[1])
			unix.Close(empty)
			unix.Close(fd)
			fd = sp[0]
		}
		return fd
	}},
}

// holding returns one end of a new socket pair of type typ whose receive
// queue holds fd; fd and the other end are closed.
func holding(t *testing.T, typ, fd int) int {
	t.Helper()
	return holdingPair(t, unixPair(t, typ), fd)
}

// holdingPair sends fd to sp[0] over sp[1], closes fd and sp[1], and
// returns sp[0].
func holdingPair(t *testing.T, sp [2]int, fd int) int {
	t.Helper()
	sendRights(t, sp[1], 0, fd)
	unix.Close(sp[1])
	unix.Close(fd)
	return sp[0]
}

func unixPair(t *testing.T, typ int) [2]int {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func unixSocket(t *testing.T, typ int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// sendRights sends one byte with fds attached (and flags) on the Unix
// socket fd.
func sendRights(t *testing.T, fd, flags int, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, []byte{'x'}, oob, nil, flags); err != nil {
		t.Fatalf("send %d descriptors: %v", len(fds), err)
	}
}

// TestHostileLingeringFDNested: a client that sends a Unix socket holding
// a lingering TCP socket (in its receive queue, in a pending connection's
// if it is listening, in another Unix socket it holds) stalled the
// goroutine that closed it for the linger time: turning lingering off on
// the descriptor received does not reach what it holds, and closing it
// drops what it holds in the closing thread. Whether the server closes it
// after answering the request that brought it, or while it hangs up, it
// answers, ends the connection and closes promptly, and closes everything
// it received.
func TestHostileLingeringFDNested(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		e := newTestEnv(t, nil)
		for _, n := range nests {
			t.Run(n.name, func(t *testing.T) {
				b := takeBaseline(t)
				t.Run("", func(t *testing.T) {
					fd := n.build(t)
					r := dialRaw(t, e.sock)
					r.roundTrip("/connect, pod", RespHostOK, 0)
					r.send([]byte(ReqVersion), fd)
					unix.Close(fd) // the server's is the last reference
					if got, _, err := r.recv(); err != nil || got != RespNak {
						t.Fatalf("%s with the socket: got %q, %v; want %q", ReqVersion, got, err, RespNak)
					}
					r.roundTrip(ReqFin, RespFinAck, 0)
					r.wantHangup()
				})
				waitReaped(t)
				b.check(t, e)
			})
		}
	})
	for _, n := range nests {
		t.Run("server_close_"+n.name, func(t *testing.T) {
			// Queued unread when the server closes: hangUp drains it.
			e := newTestEnv(t, nil)
			r := dialRaw(t, e.sock)
			r.roundTrip("/connect, pod", RespHostOK, 0)
			r.stall()
			fd := n.build(t)
			r.send([]byte(ReqVersion), fd)
			unix.Close(fd)
			closeUnstalled(t, e.srv, "a "+n.name+" socket")
			waitReaped(t)
		})
	}
}

// waitReaped waits for the reapers closeReceived left in the background
// to end.
func waitReaped(t *testing.T) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		reaping.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("descriptors closed in the background: not done after 10 s")
	}
}

// closeUnstalled closes srv and fails t unless Close returns nil within
// 10 s although what is queued on one of its connections.
func closeUnstalled(t *testing.T, srv *Server, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Server.Close stalled by %s queued on a connection", what)
	}
}
