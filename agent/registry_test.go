package agent

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// connect dials the agent at path and opens a session as pod; the client
// is closed at cleanup.
func connect(t *testing.T, path, pod string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Connect(pod); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReleaseSparesOthersEntry: when a connection ends, the agent removes
// the entry it registered only if the entry is still that socket, never one
// that another client wrote through the map fd since.
func TestReleaseSparesOthersEntry(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lose is given a's socket's Close; it makes a lose queue 0
		// before b writes its own socket there, or not.
		lose func(t *testing.T, closeXA func() error)
	}{
		// a closes its socket: the kernel drops the entry at once.
		{"socket_closed", func(t *testing.T, closeXA func() error) {
			if err := closeXA(); err != nil {
				t.Fatal(err)
			}
		}},
		// a's socket stays open; b simply overwrites the entry.
		{"overwritten", func(*testing.T, func() error) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil)
			xa := newBoundXSK(t, e.dev, 0)
			a := connect(t, e.sock, "pod-a")
			if err := a.Register(e.dev, 0, xa.FD()); err != nil {
				t.Fatal(err)
			}
			tc.lose(t, xa.Close)

			b := connect(t, e.sock, "pod-b")
			m, err := b.XSKMap(e.dev)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			xb := newXSK(t)
			if err := m.Update(uint32(0), uint32(xb), ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			if e.udpReachesStack(t) {
				t.Fatal("b's entry is not in the map")
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, "a's connection to end", func() bool { return e.srv.Conns() == 1 })
			if e.udpReachesStack(t) {
				t.Fatal("a's disconnect removed b's entry")
			}
		})
	}
}

// TestRegisterChecks: /xsk_register takes only a socket bound to the queue
// it names on this device, and not a queue that another live connection
// holds. The map fds are read-only, so /xsk_register is the only way in.
func TestRegisterChecks(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	other := testenv.NewVeth(t, nil)
	srv, err := NewServer(&ServerOptions{
		Devices:     []Device{{Name: v.Host.Name}},
		SocketDir:   socketDir(t),
		ReadOnlyMap: true,
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	dev, path := v.Host.Name, srv.SocketPath(v.Host.Name)
	q0 := newBoundXSK(t, dev, 0)
	q1 := newBoundXSK(t, dev, 1)
	elsewhere := newBoundXSK(t, other.Host.Name, 0)

	a := connect(t, path, "pod-a")
	if err := a.Register(dev, 0, q0.FD()); err != nil {
		t.Fatal(err)
	}
	b := connect(t, path, "pod-b")
	for _, tc := range []struct {
		name  string
		queue int
		fd    int
	}{
		// A second socket cannot bind queue 0 with a UMEM of its own
		// while a's is bound there, so b passes a's socket itself.
		{"held_by_another", 0, q0.FD()},
		{"unbound", 0, newXSK(t)},
		{"bound_to_another_queue", 0, q1.FD()},
		{"bound_to_another_device", 0, elsewhere.FD()},
		{"beyond_the_map", 64, q0.FD()},
	} {
		if err := b.Register(dev, tc.queue, tc.fd); !errors.Is(err, ErrRejected) {
			t.Errorf("%s: Register = %v, want ErrRejected", tc.name, err)
		}
	}
	// b's session goes on, and a free queue is b's for the asking.
	if err := b.Register(dev, 1, q1.FD()); err != nil {
		t.Fatalf("Register of a free queue: %v", err)
	}
	// a may register its own queue again.
	if err := a.Register(dev, 0, q0.FD()); err != nil {
		t.Fatalf("Register of a queue a holds: %v", err)
	}
	// Once a's connection ends, its queue is free.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "a's connection to end", func() bool { return srv.Conns() == 1 })
	if err := b.Register(dev, 0, q0.FD()); err != nil {
		t.Fatalf("Register of the queue a held, after a left: %v", err)
	}
}

// TestWriteTimeout: a client that sends requests and never reads the
// answers fills its receive queue; the server gives up on it after
// WriteTimeout rather than wait for it forever, idle timeout or not.
//
// The client sends until the server ends the connection, the only thing
// that can fail a send here. It used to stop at the first send that
// blocked for 200 ms, taking that for the server blocked on an answer; a
// server merely slow to read (a loaded machine) stopped it early, before
// the answers filled the server's send buffer, and the server, with every
// request answered, then kept the connection for good.
func TestWriteTimeout(t *testing.T) {
	e := newTestEnv(t, func(o *ServerOptions) {
		o.IdleTimeout = -1
		o.WriteTimeout = 200 * time.Millisecond
	})
	r := dialRaw(t, e.sock)
	r.roundTrip("/connect, pod", RespHostOK, 0)
	sent := 0
	var err error
	for sent < 100_000 {
		// Far longer than WriteTimeout: a send that blocks this long
		// means that the server neither reads nor hangs up.
		r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err = r.c.Write([]byte(ReqVersion)); err != nil {
			break
		}
		sent++
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after %d requests with no answer read, the send = %v; want the server to have hung up", sent, err)
	}
	t.Logf("%d requests sent before the server hung up: %v", sent, err)
	testenv.WaitFor(t, "the server to drop the connection", func() bool { return e.srv.Conns() == 0 })
}

// TestFinReleasesBeforeAck: /fin_ack means the registrations are gone. A
// client that has read it (Client.Close has returned) finds its entry out
// of the XSKMAP and its queue free for another connection; the agent used
// to answer first and remove the entry after, so for a moment the queue
// still redirected to the old socket and another connection's
// /xsk_register could be refused. Each round checks the real map entry
// right after Close returns, through the registry's own check program.
func TestFinReleasesBeforeAck(t *testing.T) {
	e := newTestEnv(t, nil)
	xa := newBoundXSK(t, e.dev, 0)
	reg := e.srv.devices[e.dev].cur.reg
	const rounds = 50
	for i := range rounds {
		a := connect(t, e.sock, "pod-a")
		if err := a.Register(e.dev, 0, xa.FD()); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		reg.mu.Lock()
		held, err := reg.held(0)
		_, owned := reg.owners[0]
		reg.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if held || owned {
			t.Fatalf("round %d: after /fin_ack the registration is still there (entry held %v, owner recorded %v)", i, held, owned)
		}
	}
	// The socket, still open and bound, is the next connection's to
	// register.
	b := connect(t, e.sock, "pod-b")
	if err := b.Register(e.dev, 0, xa.FD()); err != nil {
		t.Fatalf("Register after the previous holder's /fin: %v", err)
	}
	if e.udpReachesStack(t) {
		t.Fatal("b's registration is not in the map")
	}
}

// busyPoll reads back the busy-poll options of the socket fd. The budget
// is -1 where the kernel lets it be set but not read (ENOPROTOOPT).
func busyPoll(t *testing.T, fd int) (prefer, usec, budget int) {
	t.Helper()
	get := func(name string, opt int) int {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if opt == unix.SO_BUSY_POLL_BUDGET && errors.Is(err, unix.ENOPROTOOPT) {
			return -1
		}
		if err != nil {
			t.Fatalf("getsockopt %s: %v", name, err)
		}
		return v
	}
	return get("SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL), get("SO_BUSY_POLL", unix.SO_BUSY_POLL),
		get("SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET)
}

// TestBusyPollChecks: /config_busy_poll sets the options, which need the
// agent's CAP_NET_ADMIN, only on an AF_XDP socket bound to a queue (any
// queue) of the device served on that socket; one bound to another
// interface, to the other end of the veth (in another namespace) or to
// nothing is refused and keeps its options.
func TestBusyPollChecks(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	other := testenv.NewVeth(t, nil)
	srv, err := NewServer(&ServerOptions{
		Devices:   []Device{{Name: v.Host.Name}},
		SocketDir: socketDir(t),
		Logger:    testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	dev, path := v.Host.Name, srv.SocketPath(v.Host.Name)
	c := connect(t, path, "pod")

	var peer *xsk.Socket
	err = v.Peer.Do(func() error {
		o := *smallXSK
		o.NoXDP = true
		var err error
		peer, err = xsk.Open(v.Peer.Name, 0, &o)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	for _, tc := range []struct {
		name string
		fd   int
	}{
		{"unbound", newXSK(t)},
		{"bound_to_another_device", newBoundXSK(t, other.Host.Name, 0).FD()},
		{"bound_to_the_peer", peer.FD()},
	} {
		if err := c.ConfigBusyPoll(tc.fd, 20, 64); !errors.Is(err, ErrRejected) {
			t.Errorf("%s: ConfigBusyPoll = %v, want ErrRejected", tc.name, err)
		}
		if prefer, usec, _ := busyPoll(t, tc.fd); prefer != 0 || usec != 0 {
			t.Errorf("%s: refused, yet SO_PREFER_BUSY_POLL = %d, SO_BUSY_POLL = %d", tc.name, prefer, usec)
		}
	}
	// The session goes on, and the device's sockets get their options,
	// on either queue.
	for q, want := range []struct{ usec, budget int }{{20, 64}, {30, 16}} {
		s := newBoundXSK(t, dev, q)
		if err := c.ConfigBusyPoll(s.FD(), want.usec, want.budget); err != nil {
			t.Fatalf("queue %d: ConfigBusyPoll: %v", q, err)
		}
		if prefer, usec, budget := busyPoll(t, s.FD()); prefer != 1 || usec != want.usec || budget != want.budget && budget != -1 {
			t.Errorf("queue %d: SO_PREFER_BUSY_POLL = %d, SO_BUSY_POLL = %d, SO_BUSY_POLL_BUDGET = %d; want 1, %d, %d",
				q, prefer, usec, budget, want.usec, want.budget)
		}
	}
}

// blockingFD returns a descriptor (a pipe's read end, its write end
// closed) whose close by closeReceived, in any copy, blocks until unblock
// is called (at the latest at the test's cleanup, before the server's
// Close). No descriptor a client sends blocks the server any longer (see
// closeReceived), so this takes a hook.
func blockingFD(t *testing.T) (fd int, unblock func()) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	var st unix.Stat_t
	if err := unix.Fstat(p[0], &st); err != nil {
		unix.Close(p[0])
		t.Fatal(err)
	}
	release := make(chan struct{})
	hook := func(fd int) {
		var s unix.Stat_t
		if unix.Fstat(fd, &s) == nil && s.Dev == st.Dev && s.Ino == st.Ino {
			<-release
		}
	}
	testHookCloseReceived.Store(&hook)
	var once sync.Once
	unblock = func() {
		once.Do(func() {
			testHookCloseReceived.Store(nil)
			close(release)
		})
	}
	t.Cleanup(unblock)
	return p[0], unblock
}

// TestReleaseBeforeDrain: a connection's queues are free for another
// connection as soon as its client has hung up, however long the server
// takes to close the descriptors the client sent (see hangUp). The server
// used to release the registrations only after discarding what the client
// left queued, so a client that reconnected at once and registered its
// socket again was refused with /xsk_register_nak for as long as that
// took: here, until the test unblocks a descriptor whose close blocks.
// It is sent behind requests the server is stalled answering, so that the
// server's copy is the last, and the client hangs up either with them
// unanswered (the drain closes the descriptor) or once it has read their
// answers (the server reads the request and closes the descriptor).
func TestReleaseBeforeDrain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		readFirst bool
	}{
		{"queued", false},
		{"read", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, nil)
			xa := newBoundXSK(t, e.dev, 0)
			a := dialRaw(t, e.sock)
			a.roundTrip("/connect, pod-a", RespHostOK, 0)
			a.roundTrip("/xsk_register, "+e.dev+", 0", RespXSKRegisterAck, 0, xa.FD())
			stalled := a.stall()
			fd, unblock := blockingFD(t)
			_, _, err := a.c.WriteMsgUnix([]byte(ReqVersion), unix.UnixRights(fd), nil)
			unix.Close(fd)
			if err != nil {
				unblock()
				t.Fatalf("send a request with the blocking descriptor: %v", err)
			}
			if tc.readFirst {
				for range stalled {
					if got, _, err := a.recv(); got != ProtocolVersion {
						unblock()
						t.Fatalf("answer to a stalled request: %q, %v", got, err)
					}
				}
			}
			a.c.Close()

			b := connect(t, e.sock, "pod-b")
			err = b.Register(e.dev, 0, xa.FD())
			unblock()
			if err != nil {
				t.Fatalf("Register of the queue whose holder hung up: %v", err)
			}
			if e.udpReachesStack(t) {
				t.Fatal("b's registration is not in the map")
			}
			// a's connection ends once the close returns; it must leave
			// b's entry.
			testenv.WaitFor(t, "a's connection to end", func() bool { return e.srv.Conns() == 1 })
			if e.udpReachesStack(t) {
				t.Fatal("the end of a's connection removed b's entry")
			}
		})
	}
}
