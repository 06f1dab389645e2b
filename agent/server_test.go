package agent

import (
	"bufio"
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/container"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestConformance runs every request and response of the protocol against
// a real Server over a real SOCK_SEQPACKET socket.
func TestConformance(t *testing.T) {
	e := newTestEnv(t, nil)
	bound := newBoundXSK(t, e.dev, 0)
	before := fdCount(t)

	t.Run("session", func(t *testing.T) {
		r := dialRaw(t, e.sock)
		r.roundTrip("/connect, pod-a", RespHostOK, 0)
		r.roundTrip("/version", ProtocolVersion, 0)

		fds := r.roundTrip("/xsk_map_fd, "+e.dev, RespFDAck, 1)
		fd, err := unix.Dup(fds[0])
		if err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMapFromFD(fd)
		if err != nil {
			t.Fatalf("received fd is not a map: %v", err)
		}
		if m.Type() != ebpf.XSKMap || m.MaxEntries() != bpf.DefaultMaxQueues {
			t.Errorf("received map %v with %d entries, want the XSKMAP", m.Type(), m.MaxEntries())
		}
		m.Close()
		r.roundTrip("/xsk_map_fd, nosuchdev", RespFDNak, 0)

		xsk := newXSK(t)
		r.roundTrip("/config_busy_poll, 20, 64", RespBusyPollAck, 0, bound.FD())
		for _, o := range []struct {
			name string
			opt  int
			want int
		}{
			{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1},
			{"SO_BUSY_POLL", unix.SO_BUSY_POLL, 20},
			{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, 64},
		} {
			got, err := unix.GetsockoptInt(bound.FD(), unix.SOL_SOCKET, o.opt)
			if o.opt == unix.SO_BUSY_POLL_BUDGET && errors.Is(err, unix.ENOPROTOOPT) {
				continue // the kernel lets it be set, not read
			}
			if err != nil || got != o.want {
				t.Errorf("%s = %d, %v; want %d", o.name, got, err, o.want)
			}
		}
		r.roundTrip("/config_busy_poll, 20, 64", RespBusyPollNak, 0, xsk)         // not bound
		r.roundTrip("/config_busy_poll, 20, 64", RespBusyPollNak, 0)              // no fd
		r.roundTrip("/config_busy_poll, 20, 64", RespBusyPollNak, 0, newPipe(t))  // not a socket
		r.roundTrip("/config_busy_poll, 20, 64", RespBusyPollNak, 0, xsk, xsk)    // two fds
		r.roundTrip("/config_busy_poll, 20", RespNak, 0, xsk)                     // missing arg
		r.roundTrip("/config_busy_poll, twenty, 64", RespNak, 0, xsk)             // not a number
		r.roundTrip("/config_busy_poll, 2000000, 64", RespNak, 0, xsk)            // out of range
		udp, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0) // not AF_XDP
		r.roundTrip("/config_busy_poll, 20, 64", RespBusyPollNak, 0, udp)
		unix.Close(udp)

		r.roundTrip("/xsk_register, "+e.dev+", 0", RespXSKRegisterAck, 0, bound.FD())
		r.roundTrip("/xsk_register, "+e.dev+", 0", RespXSKRegisterNak, 0, xsk)         // not bound
		r.roundTrip("/xsk_register, "+e.dev+", 64", RespXSKRegisterNak, 0, bound.FD()) // beyond MaxQueues
		r.roundTrip("/xsk_register, nosuchdev, 0", RespXSKRegisterNak, 0, bound.FD())  // another device
		r.roundTrip("/xsk_register, "+e.dev+", 0", RespXSKRegisterNak, 0)
		r.roundTrip("/xsk_register, "+e.dev+", 0", RespXSKRegisterNak, 0, newPipe(t))
		r.roundTrip("/xsk_register, "+e.dev, RespNak, 0, xsk)

		r.roundTrip("/connect, pod-a", RespNak, 0) // already connected
		r.roundTrip("/fin", RespFinAck, 0)
		r.wantHangup()
	})

	t.Run("dpdk_style", func(t *testing.T) {
		// DPDK's driver writes no space after the comma.
		r := dialRaw(t, e.sock)
		r.roundTrip("/connect,dpdk-host", RespHostOK, 0)
		r.roundTrip("/version", ProtocolVersion, 0)
		r.roundTrip("/xsk_map_fd,"+e.dev, RespFDAck, 1)
		r.roundTrip("/fin", RespFinAck, 0)
		r.wantHangup()
	})

	t.Run("pipelined", func(t *testing.T) {
		// Requests sent before the answers are read, some after /fin: the
		// client reads every answer up to /fin_ack, then the end, not a
		// reset (ECONNRESET) for what it sent after /fin.
		r := dialRaw(t, e.sock)
		for _, req := range []string{"/connect, pod", "/version", "/fin"} {
			r.send([]byte(req))
		}
		for range 2 {
			r.c.Write([]byte("/version")) // EPIPE if the server hung up already
		}
		for _, want := range []string{RespHostOK, ProtocolVersion, RespFinAck} {
			if got, _, err := r.recv(); err != nil || got != want {
				t.Fatalf("got %q, %v; want %q", got, err, want)
			}
		}
		r.wantHangup()
	})

	t.Run("connect_first", func(t *testing.T) {
		for _, first := range []string{"/version", "/fin", "/xsk_map_fd, " + e.dev, "garbage", "/host_ok"} {
			r := dialRaw(t, e.sock)
			r.roundTrip(first, RespNak, 0)
			r.wantHangup()
		}
	})

	t.Run("bad_connect", func(t *testing.T) {
		for _, c := range []string{"/connect", "/connect, ", "/connect, a b", "/connect, a, b"} {
			r := dialRaw(t, e.sock)
			r.roundTrip(c, RespHostNak, 0)
			r.wantHangup()
		}
		r := dialRaw(t, e.sock)
		r.roundTrip("/connect, pod", RespHostNak, 0, newPipe(t)) // fd attached
		r.wantHangup()
	})

	t.Run("client_api", func(t *testing.T) {
		c, err := Dial(e.sock)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect("pod-b"); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Version(); err != nil || v != ProtocolVersion {
			t.Fatalf("Version() = %q, %v", v, err)
		}
		m, err := c.XSKMap(e.dev)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type() != ebpf.XSKMap {
			t.Errorf("XSKMap type %v", m.Type())
		}
		m.Close()
		if _, err := c.XSKMapFD("nosuchdev"); !errors.Is(err, ErrRejected) {
			t.Errorf("XSKMapFD(unknown) = %v, want ErrRejected", err)
		}
		if err := c.ConfigBusyPoll(bound.FD(), 50, 16); err != nil {
			t.Fatal(err)
		}
		if err := c.ConfigBusyPoll(newXSK(t), 50, 16); !errors.Is(err, ErrRejected) {
			t.Errorf("ConfigBusyPoll(unbound socket) = %v, want ErrRejected", err)
		}
		if err := c.Register(e.dev, 0, bound.FD()); err != nil {
			t.Fatal(err)
		}
		if err := c.Register(e.dev, 1000, bound.FD()); !errors.Is(err, ErrRejected) {
			t.Errorf("Register(queue 1000) = %v, want ErrRejected", err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := c.Version(); err == nil {
			t.Fatal("Version after Close succeeded")
		}
	})

	testenv.WaitFor(t, "connections to end", func() bool { return e.srv.Conns() == 0 })
	if after := fdCount(t); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
}

// TestMalformed sends what a broken or hostile client might, after a good
// /connect, and checks the server answers each with a refusal, keeps the
// session, keeps serving another client, and closes every descriptor it
// received.
func TestMalformed(t *testing.T) {
	e := newTestEnv(t, nil)
	before := fdCount(t)

	// The test's own descriptors go at the end of the subtest.
	t.Run("session", func(t *testing.T) {
		r := dialRaw(t, e.sock)
		r.roundTrip("/connect, pod-m", RespHostOK, 0)
		other := dialRaw(t, e.sock)
		other.roundTrip("/connect, pod-other", RespHostOK, 0)

		xsk := newXSK(t)
		manyFDs := make([]int, 20)
		for i := range manyFDs {
			manyFDs[i] = newPipe(t)
		}
		for _, tc := range []struct {
			name string
			msg  []byte
			fds  []int
			want string
		}{
			{"empty", nil, nil, RespNak},
			{"empty_with_fd", nil, []int{newPipe(t)}, RespNak},
			{"nul", []byte{0}, nil, RespNak},
			{"garbage", []byte("\xff\xfe garbage \x01"), nil, RespNak},
			{"64KiB", bytes.Repeat([]byte("A"), 64<<10), nil, RespNak},
			{"64KiB_with_fd", bytes.Repeat([]byte("/version"), 8<<10), []int{newPipe(t)}, RespNak},
			{"just_over_max", []byte("/xsk_map_fd, " + strings.Repeat("x", DefaultMaxMessageSize)), nil, RespNak},
			{"missing_arg", []byte("/xsk_map_fd"), nil, RespNak},
			{"empty_arg", []byte("/xsk_map_fd, "), nil, RespNak},
			{"extra_arg", []byte("/xsk_map_fd, " + e.dev + ", 1"), nil, RespNak},
			{"unknown_device", []byte("/xsk_map_fd, nosuchdev"), nil, RespFDNak},
			{"bad_device_name", []byte("/xsk_map_fd, ../../etc"), nil, RespNak},
			{"fd_not_expected", []byte("/version"), []int{newPipe(t)}, RespNak},
			{"fd_not_expected_map", []byte("/xsk_map_fd, " + e.dev), []int{xsk}, RespNak},
			{"too_many_fds", []byte("/config_busy_poll, 1, 1"), manyFDs, RespBusyPollNak},
			{"unknown_command", []byte("/rm -rf"), nil, RespNak},
			{"response_as_request", []byte("/fd_ack"), nil, RespNak},
			{"comma_only", []byte(","), nil, RespNak},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r.send(tc.msg, tc.fds...)
				got, fds, err := r.recv()
				if err != nil || got != tc.want || len(fds) != 0 {
					t.Fatalf("got %q (%d fds), %v; want %q", got, len(fds), err, tc.want)
				}
				// The session goes on.
				r.roundTrip("/version", ProtocolVersion, 0)
			})
		}
		// So does everyone else's.
		other.roundTrip("/version", ProtocolVersion, 0)
		other.roundTrip("/xsk_map_fd, "+e.dev, RespFDAck, 1)
		r.roundTrip("/fin", RespFinAck, 0)
		r.wantHangup()
		other.roundTrip("/fin", RespFinAck, 0)
		other.wantHangup()
	})
	testenv.WaitFor(t, "connections to end", func() bool { return e.srv.Conns() == 0 })
	if after := fdCount(t); after != before {
		t.Errorf("fds: %d before, %d after (received descriptors leaked?)", before, after)
	}
}

// TestManyClients runs sessions from several goroutines at once.
func TestManyClients(t *testing.T) {
	e := newTestEnv(t, nil)
	before := fdCount(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Go(func() {
			c, err := Dial(e.sock)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := c.Connect("pod"); err != nil {
				errs <- err
				return
			}
			for j := 0; j < 20; j++ {
				fd, err := c.XSKMapFD(e.dev)
				if err != nil {
					errs <- err
					return
				}
				unix.Close(fd)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	testenv.WaitFor(t, "connections to end", func() bool { return e.srv.Conns() == 0 })
	if after := fdCount(t); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
}

// TestRefusedUID: a peer whose UID is not allowed gets /host_nak as soon as
// it connects, before it sends anything, with no descriptor, and is hung up
// on; the connection is gone from the server at once.
func TestRefusedUID(t *testing.T) {
	t.Run("root_excluded", func(t *testing.T) {
		e := newTestEnv(t, func(o *ServerOptions) { o.AllowedUIDs = []int{4242} })
		before := fdCount(t)
		for range 3 {
			r := dialRaw(t, e.sock)
			got, fds, err := r.recv()
			if err != nil || got != RespHostNak || len(fds) != 0 {
				t.Fatalf("unasked: got %q with %d fds, %v; want %q", got, len(fds), err, RespHostNak)
			}
			r.wantHangup()
			r.c.Close()
		}
		testenv.WaitFor(t, "refused connections to end", func() bool { return e.srv.Conns() == 0 })

		// A client that sends its request before reading gets the answer
		// too, or EPIPE on the send and then the answer: the Client
		// handles both.
		for _, first := range []string{"/connect, pod", "/xsk_map_fd, " + e.dev, "garbage"} {
			r := dialRaw(t, e.sock)
			r.c.Write([]byte(first)) // EPIPE once the server has shut the connection
			got, fds, err := r.recv()
			if err != nil || got != RespHostNak || len(fds) != 0 {
				t.Fatalf("%q: got %q with %d fds, %v; want %q", first, got, len(fds), err, RespHostNak)
			}
			r.wantHangup()
			r.c.Close()
		}
		for range 5 {
			c, err := Dial(e.sock)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Connect("pod"); !errors.Is(err, ErrRefused) {
				t.Errorf("Connect = %v, want ErrRefused", err)
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close after refusal: %v", err)
			}
		}
		testenv.WaitFor(t, "refused connections to end", func() bool { return e.srv.Conns() == 0 })
		if after := fdCount(t); after != before {
			t.Errorf("fds: %d before, %d after", before, after)
		}
	})

	t.Run("other_uid_child", func(t *testing.T) {
		// Two non-root UIDs and no group: the socket is world-writable
		// and only SO_PEERCRED keeps UID 4343 out.
		e := newTestEnv(t, func(o *ServerOptions) { o.AllowedUIDs = []int{0, 4242, 4244} })
		var out bytes.Buffer
		p, err := container.Start(&container.Options{
			Path: container.Executable(t), Child: "refused", UID: 4343, GID: 4343,
			Env: []string{"AGENT_SOCKET=" + e.sock}, Stdout: &out, Stderr: &out,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(); err != nil {
			t.Fatalf("child: %v: %s", err, out.String())
		}
		if got, want := out.String(), "resp=/host_nak fds=0 hangup=true send_after=true\n"; got != want {
			t.Errorf("child got %q, want %q", got, want)
		}
	})

	t.Run("permissions_keep_out", func(t *testing.T) {
		// One allowed non-root UID: the socket is that user's, mode 0600,
		// and another unprivileged user cannot even connect.
		e := newTestEnv(t, func(o *ServerOptions) { o.AllowedUIDs = []int{4242} })
		st, err := os.Stat(e.sock)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != 0o600 || sys.Uid != 4242 {
			t.Errorf("socket mode %v uid %d, want 0600 uid 4242", st.Mode().Perm(), sys.Uid)
		}
		var out bytes.Buffer
		p, err := container.Start(&container.Options{
			Path: container.Executable(t), Child: "refused", UID: 4343, GID: 4343,
			Env: []string{"AGENT_SOCKET=" + e.sock}, Stdout: &out, Stderr: &out,
		})
		if err != nil {
			t.Fatal(err)
		}
		p.Wait()
		if !strings.Contains(out.String(), "permission denied") {
			t.Errorf("child got %q, want permission denied", out.String())
		}
	})

	t.Run("group_opens_uid_admits", func(t *testing.T) {
		// SocketGID lets its members open the socket, and no one else
		// but root; SO_PEERCRED still serves only AllowedUIDs: a member
		// whose UID is not allowed is answered /host_nak, an allowed UID
		// outside the group cannot connect at all.
		const gid = 4343
		e := newTestEnv(t, func(o *ServerOptions) { o.AllowedUIDs = []int{0, 4242}; o.SocketGID = gid })
		for _, tc := range []struct {
			name     string
			uid, gid int
			want     string
		}{
			{"member_not_allowed", 4343, gid, "resp=/host_nak fds=0 hangup=true send_after=true\n"},
			{"allowed_not_member", 4242, 4242, "permission denied"},
		} {
			var out bytes.Buffer
			p, err := container.Start(&container.Options{
				Path: container.Executable(t), Child: "refused", UID: tc.uid, GID: tc.gid,
				Env: []string{"AGENT_SOCKET=" + e.sock}, Stdout: &out, Stderr: &out,
			})
			if err != nil {
				t.Fatal(err)
			}
			p.Wait()
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("%s: child (uid %d, gid %d) got %q, want %q", tc.name, tc.uid, tc.gid, out.String(), tc.want)
			}
		}
	})
}

// TestClientDies kills a client in the middle of its session and checks
// that the agent keeps no descriptor and the XSKMAP no entry for it.
func TestClientDies(t *testing.T) {
	for _, mode := range []string{"register", "mapfd"} {
		t.Run(mode, func(t *testing.T) {
			e := newTestEnv(t, func(o *ServerOptions) { o.AllowedUIDs = []int{0, 4242} })
			if !e.udpReachesStack(t) {
				t.Fatal("UDP does not reach the stack before any socket is registered")
			}
			before := fdCount(t)

			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			p, err := container.Start(&container.Options{
				Path: container.Executable(t), Child: "hold", UID: 4242, GID: 4242,
				Caps:   []uintptr{unix.CAP_NET_RAW},
				Env:    []string{"AGENT_SOCKET=" + e.sock, "AGENT_DEVICE=" + e.dev, "AGENT_MODE=" + mode},
				Stdout: pw, Stderr: &stderr,
			})
			pw.Close()
			if err != nil {
				pr.Close()
				t.Fatal(err)
			}
			defer p.Kill()
			line := readLine(bufio.NewReader(pr))
			pr.Close()
			if strings.HasPrefix(line, "update refused") {
				p.Wait()
				t.Fatalf("this kernel refuses an unprivileged XSKMAP update through a passed map fd: %s", line)
			}
			if line != "ready\n" {
				p.Wait()
				t.Fatalf("child: %q %s", line, stderr.String())
			}
			if e.udpReachesStack(t) {
				t.Fatal("UDP reaches the stack while the child's socket is registered")
			}
			if e.srv.Conns() != 1 {
				t.Fatalf("%d connections, want 1", e.srv.Conns())
			}

			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, "the agent to notice", func() bool { return e.srv.Conns() == 0 })
			if !e.udpReachesStack(t) {
				t.Fatal("UDP still redirected after the child died: XSKMAP entry left behind")
			}
			if after := fdCount(t); after != before {
				t.Errorf("fds: %d before the child, %d after it died", before, after)
			}
		})
	}
}

// TestKernelDropsEntryOnClose verifies what the server relies on for the
// map-fd path: closing an AF_XDP socket removes it from every XSKMAP.
func TestKernelDropsEntryOnClose(t *testing.T) {
	e := newTestEnv(t, nil)
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.xskMap(e.dev).Update(uint32(0), uint32(fd), ebpf.UpdateAny); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if e.udpReachesStack(t) {
		unix.Close(fd)
		t.Fatal("UDP reaches the stack while a socket is in the map")
	}
	unix.Close(fd)
	// The release is deferred past an RCU grace period; poll.
	testenv.WaitFor(t, "the kernel to drop the entry", func() bool { return e.udpReachesStack(t) })
}

// TestRegisterEndsWithConnection: entries made through /xsk_register go
// when the connection that made them ends, even though the socket lives on.
func TestRegisterEndsWithConnection(t *testing.T) {
	e := newTestEnv(t, nil)
	xsk := newBoundXSK(t, e.dev, 0).FD()
	c, err := Dial(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect("pod"); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(e.dev, 0, xsk); err != nil {
		t.Fatal(err)
	}
	if e.udpReachesStack(t) {
		t.Fatal("UDP reaches the stack while registered")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "connection to end", func() bool { return e.srv.Conns() == 0 })
	if !e.udpReachesStack(t) {
		t.Fatal("entry left after the connection ended")
	}
}

// TestIdleTimeout: a connection that holds nothing is closed when idle.
func TestIdleTimeout(t *testing.T) {
	e := newTestEnv(t, func(o *ServerOptions) { o.IdleTimeout = 100 * time.Millisecond })
	r := dialRaw(t, e.sock)
	r.roundTrip("/connect, pod", RespHostOK, 0)
	r.wantHangup()
	testenv.WaitFor(t, "connection to end", func() bool { return e.srv.Conns() == 0 })
}

// TestIdleTimeoutKeepsRegistration: a connection whose /xsk_register entry
// holds is the registration's lifetime handle; it outlives the idle timeout
// and traffic keeps reaching its socket, while an idle connection holding
// nothing is closed beside it. Once the socket is closed (the kernel drops
// the entry), the connection holds nothing and the idle timeout ends it.
func TestIdleTimeoutKeepsRegistration(t *testing.T) {
	const idle = 200 * time.Millisecond
	e := newTestEnv(t, func(o *ServerOptions) { o.IdleTimeout = idle })
	sock := newBoundXSK(t, e.dev, 0)
	c, err := Dial(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect("pod"); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(e.dev, 0, sock.FD()); err != nil {
		t.Fatal(err)
	}
	idler := dialRaw(t, e.sock)
	idler.roundTrip("/connect, idler", RespHostOK, 0)

	time.Sleep(5 * idle)
	idler.wantHangup()
	testenv.WaitFor(t, "the idle connection to end", func() bool { return e.srv.Conns() == 1 })
	e.receiveUDP(t, sock, 5)
	if v, err := c.Version(); err != nil || v != ProtocolVersion {
		t.Fatalf("registered connection after %v idle: Version() = %q, %v", 5*idle, v, err)
	}

	if err := sock.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the connection to end once its socket is gone", func() bool { return e.srv.Conns() == 0 })
	if !e.udpReachesStack(t) {
		t.Error("UDP still redirected after the socket closed")
	}
}

// TestCloseCleansUp: Close detaches the program, removes the socket (and
// keeps the device's directory) and ends live connections.
func TestCloseCleansUp(t *testing.T) {
	e := newTestEnv(t, nil)
	r := dialRaw(t, e.sock)
	r.roundTrip("/connect, pod", RespHostOK, 0)
	info, err := bpf.QueryXDP(e.veth.Host.Index)
	if err != nil || !info.Attached() {
		t.Fatalf("program not attached: %+v, %v", info, err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	r.wantHangup()
	if _, err := os.Stat(e.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there: %v", err)
	}
	// The device's directory stays, empty, for the pods that bind-mount
	// it (TestRestartKeepsBindMount).
	if ents, err := os.ReadDir(filepath.Dir(e.sock)); err != nil || len(ents) != 0 {
		t.Errorf("device directory after Close: %v, %v; want it kept, empty", ents, err)
	}
	info, err = bpf.QueryXDP(e.veth.Host.Index)
	if err != nil || info.Attached() {
		t.Fatalf("program still attached after Close: %+v, %v", info, err)
	}
}

// TestPin pins the XSKMAP on a bpffs of the test's own and opens it by path.
func TestPin(t *testing.T) {
	pinDir := testenv.MountBPFFS(t)
	e := newTestEnv(t, func(o *ServerOptions) { o.PinDir = pinDir })
	path := e.srv.PinPath(e.dev)
	if path != filepath.Join(pinDir, e.dev, PinName) {
		t.Fatalf("pinned at %q", path)
	}
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type() != ebpf.XSKMap {
		t.Errorf("pinned map type %v", m.Type())
	}
	m.Close()
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin still there after Close: %v", err)
	}
	// Its directory stays, empty, for a pod that bind-mounts it.
	if ents, err := os.ReadDir(filepath.Dir(path)); err != nil || len(ents) != 0 {
		t.Errorf("pin directory after Close: %v, %v; want it kept, empty", ents, err)
	}
}

func TestServerOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		opts *ServerOptions
		want string
	}{
		{nil, "Devices"},
		{&ServerOptions{}, "Devices"},
		{&ServerOptions{Devices: []Device{{Name: ""}}}, "Devices[0].Name"},
		{&ServerOptions{Devices: []Device{{Name: "a/b"}}}, "Devices[0].Name"},
		{&ServerOptions{Devices: []Device{{Name: "averyveryverylongname"}}}, "Devices[0].Name"},
		{&ServerOptions{Devices: []Device{{Name: "a"}, {Name: "a"}}}, "Devices[1].Name"},
		{&ServerOptions{Devices: []Device{{Name: "a", MaxQueues: -1}}}, "MaxQueues"},
		{&ServerOptions{Devices: []Device{{Name: "a"}}, AllowedUIDs: []int{-1}}, "AllowedUIDs[0]"},
		{&ServerOptions{Devices: []Device{{Name: "a"}}, SocketGID: -2}, "SocketGID"},
		{&ServerOptions{Devices: []Device{{Name: "a"}}, MaxMessageSize: 1 << 20}, "MaxMessageSize"},
		{&ServerOptions{Devices: []Device{{Name: "a"}}, MaxMessageSize: 3}, "MaxMessageSize"},
		{&ServerOptions{Devices: []Device{{Name: "a"}}, WriteTimeout: -time.Second}, "WriteTimeout -1s"},
		{&ServerOptions{Devices: []Device{{Name: "a"}}, MaxConns: -1}, "MaxConns -1"},
	} {
		_, err := NewServer(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewServer(%+v) = %v, want an error naming %s", tc.opts, err, tc.want)
		}
	}
}

// IDs are 32 bits: an allowed UID or a SocketGID beyond them is refused by
// name, not truncated into another user's or group's (1<<32 + 4242 would
// chown the socket to 4242).
func TestServerOptionsIDsBeyond32Bits(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("int cannot hold an ID beyond 32 bits")
	}
	big := int(int64(1)<<32 + 4242)
	for _, tc := range []struct {
		opts ServerOptions
		want string
	}{
		{ServerOptions{AllowedUIDs: []int{0, big}}, "AllowedUIDs[1] 4294971538: must be between 0 and 4294967294"},
		{ServerOptions{AllowedUIDs: []int{math.MaxUint32}}, "AllowedUIDs[0] 4294967295"},
		{ServerOptions{SocketGID: big}, "SocketGID 4294971538: must be between 0 and 4294967294"},
		{ServerOptions{SocketGID: math.MaxUint32}, "SocketGID 4294967295"},
	} {
		tc.opts.Devices = []Device{{Name: "afxdp-none"}}
		tc.opts.SocketDir = filepath.Join(t.TempDir(), "sd")
		_, err := NewServer(&tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewServer(%+v) = %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
}
