package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// smallXSK keeps test sockets' UMEMs small.
var smallXSK = &xsk.Options{NumFrames: 256, RxRingSize: 128, TxRingSize: 128, FillRingSize: 128, CompletionRingSize: 128}

// receiveUDP sends n sequence-numbered datagrams from the peer to the host
// end on testPort through the kernel's stack and checks that sock receives
// every one, intact.
func (e *testEnv) receiveUDP(t *testing.T, sock *xsk.Socket, n int) {
	t.Helper()
	receiveUDP(t, e.veth.Peer, e.veth.Host.IP(), sock, n)
}

// receiveUDP sends n sequence-numbered datagrams from the interface from to
// the address to on testPort through the kernel's stack, one at a time, and
// checks that sock receives every one, intact.
func receiveUDP(t *testing.T, from netenv.Endpoint, to netip.Addr, sock *xsk.Socket, n int) {
	t.Helper()
	var out *net.UDPConn
	err := from.Do(func() error {
		var err error
		out, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, testPort)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	payload := make([]byte, 100)
	descs := make([]xsk.Desc, 16)
	for i := range n {
		packet.FillPayload(payload, uint64(i))
		if _, err := out.Write(payload); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		got := 0
		for got == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("datagram %d did not reach the socket", i)
			}
			if _, err := sock.Wait(xsk.Readable, 100*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			got, err = sock.Receive(descs)
			if err != nil {
				t.Fatal(err)
			}
		}
		if got != 1 {
			t.Fatalf("datagram %d: %d frames received", i, got)
		}
		// The kernel leaves the UDP checksum to the (virtual) device, so
		// it is not checked: the payload carries its own check.
		frame := sock.Frame(descs[0])
		if len(frame) != packet.FrameLen(len(payload)) {
			t.Fatalf("datagram %d: frame of %d bytes, want %d", i, len(frame), packet.FrameLen(len(payload)))
		}
		if seq, ok := packet.CheckPayload(frame[packet.HeadersLen:]); !ok || seq != uint64(i) {
			t.Fatalf("datagram %d: got seq %d ok=%v", i, seq, ok)
		}
		if err := sock.Release(descs[:got]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenSocket opens a socket through the agent by each path and checks
// that it receives what the agent's program redirects, and that closing it
// gives the traffic back to the stack.
func TestOpenSocket(t *testing.T) {
	for _, tc := range []struct {
		name     string
		readOnly bool
		reg      Registration
		want     Registration
	}{
		{"auto_map_fd", false, RegisterAuto, RegisterMapFD},
		{"auto_falls_back", true, RegisterAuto, RegisterAgent},
		{"map_fd", false, RegisterMapFD, RegisterMapFD},
		{"agent", false, RegisterAgent, RegisterAgent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, func(o *ServerOptions) { o.ReadOnlyMap = tc.readOnly })
			before := fdCount(t)
			c, err := Dial(e.sock)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Connect("pod"); err != nil {
				t.Fatal(err)
			}
			s, err := OpenSocket(c, e.dev, 0, &SocketOptions{XSK: smallXSK, Registration: tc.reg})
			if err != nil {
				t.Fatal(err)
			}
			if s.Registration() != tc.want {
				t.Errorf("registered by %v, want %v", s.Registration(), tc.want)
			}
			if s.Program() != nil {
				t.Error("the socket loaded a program of its own")
			}
			e.receiveUDP(t, s.Socket, 20)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			testenv.WaitFor(t, "the entry to go", func() bool { return e.udpReachesStack(t) })
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })
			if after := fdCount(t); after != before {
				t.Errorf("fds: %d before, %d after", before, after)
			}
		})
	}
}

// TestOpenSocketReadOnlyMap: with a read-only map fd, RegisterMapFD fails
// with the kernel's EPERM and leaves nothing behind.
func TestOpenSocketReadOnlyMap(t *testing.T) {
	e := newTestEnv(t, func(o *ServerOptions) { o.ReadOnlyMap = true })
	before := fdCount(t)
	c, err := Dial(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect("pod"); err != nil {
		t.Fatal(err)
	}
	_, err = OpenSocket(c, e.dev, 0, &SocketOptions{XSK: smallXSK, Registration: RegisterMapFD})
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("OpenSocket with a read-only map = %v, want EPERM", err)
	}
	if !e.udpReachesStack(t) {
		t.Error("UDP redirected after a refused open")
	}
	c.Close()
	testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })
	if after := fdCount(t); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
}

// TestDialSocket: the socket owns its connection and closes it.
func TestDialSocket(t *testing.T) {
	e := newTestEnv(t, nil)
	s, err := DialSocket(e.sock, "", e.dev, 0, &SocketOptions{XSK: smallXSK})
	if err != nil {
		t.Fatal(err)
	}
	if e.srv.Conns() != 1 {
		t.Errorf("%d connections, want 1", e.srv.Conns())
	}
	e.receiveUDP(t, s.Socket, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })

	// Every default, as README's one-liner has it: the UMEM of
	// DefaultSocketFrames gets a fill ring its receive frames can fill.
	s, err = DialSocket(e.sock, "", e.dev, 0, nil)
	if err != nil {
		t.Fatalf("DialSocket with nil options: %v", err)
	}
	e.receiveUDP(t, s.Socket, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })

	// A device this agent socket does not serve: /fd_nak, nothing left.
	other := testenv.NewVeth(t, nil)
	before := fdCount(t)
	_, err = DialSocket(e.sock, "pod", other.Host.Name, 0, &SocketOptions{XSK: smallXSK})
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), RespFDNak) || !strings.Contains(err.Error(), "device "+other.Host.Name) {
		t.Errorf("DialSocket for another device = %v, want %s naming the device", err, RespFDNak)
	}
	testenv.WaitFor(t, "the connection to end", func() bool { return e.srv.Conns() == 0 })
	if after := fdCount(t); after != before {
		t.Errorf("fds: %d before, %d after a refused DialSocket", before, after)
	}
}

// TestOpenPinned opens a socket from the agent's pinned map, with no agent
// connection.
func TestOpenPinned(t *testing.T) {
	pinDir := testenv.MountBPFFS(t)
	e := newTestEnv(t, func(o *ServerOptions) { o.PinDir = pinDir })
	missing := e.srv.PinPath(e.dev) + "-missing"
	if _, err := OpenPinned(missing, e.dev, 0, smallXSK); !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), missing) {
		t.Errorf("OpenPinned of a missing pin = %v, want ENOENT naming the path", err)
	}
	s, err := OpenPinned(e.srv.PinPath(e.dev), e.dev, 0, smallXSK)
	if err != nil {
		t.Fatal(err)
	}
	if s.Client() != nil || s.Registration() != RegisterMapFD {
		t.Errorf("client %v, registration %v", s.Client(), s.Registration())
	}
	e.receiveUDP(t, s.Socket, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the entry to go", func() bool { return e.udpReachesStack(t) })
	if _, err := OpenPinned(filepath.Join(pinDir, "missing"), e.dev, 0, smallXSK); err == nil {
		t.Error("OpenPinned of a missing pin succeeded")
	}
}

func TestOpenSocketValidation(t *testing.T) {
	for _, tc := range []struct {
		opts *SocketOptions
		want string
	}{
		{&SocketOptions{XSK: &xsk.Options{NoXDP: true}}, "NoXDP"},
		{&SocketOptions{Registration: Registration(7)}, "Registration 7"},
		{nil, "no agent client"},
	} {
		if _, err := OpenSocket(nil, "eth0", 0, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenSocket(%+v) = %v, want an error naming %s", tc.opts, err, tc.want)
		}
	}
	for r, want := range map[Registration]string{RegisterAuto: "auto", RegisterMapFD: "map-fd", RegisterAgent: "agent", 9: "Registration(9)"} {
		if got := fmt.Sprint(r); got != want {
			t.Errorf("Registration(%d).String() = %q, want %q", int(r), got, want)
		}
	}
}
