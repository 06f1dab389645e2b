package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-dst", "10.1.2.3", "-dev", "net1", "-registration", "agent", "-dst-mac", "02:00:00:00:00:01"})
	if err != nil {
		t.Fatal(err)
	}
	if c.agentPath != "/tmp/afxdp_dp/net1/afxdp.sock" || c.reg != agent.RegisterAgent || c.dst != netip.MustParseAddr("10.1.2.3") ||
		c.dstMAC.String() != "02:00:00:00:00:01" || c.size != 64 || c.frames != 1024 {
		t.Errorf("config %+v", c)
	}
	// Every flag, each with a value of its own, lands in its own field.
	c, err = parseFlags([]string{"-agent", "/run/a.sock", "-pod", "p1", "-dev", "net2", "-queue", "3",
		"-dst", "10.9.8.7", "-dst-port", "1001", "-dst-mac", "02:00:00:00:00:02", "-src-port", "1002",
		"-rate", "1003", "-size", "1004", "-count", "1005", "-frames", "1006", "-registration", "map-fd",
		"-wait", "7s"})
	if err != nil {
		t.Fatal(err)
	}
	want := &config{agentPath: "/run/a.sock", pod: "p1", dev: "net2", queue: 3,
		dst: netip.MustParseAddr("10.9.8.7"), dstPort: 1001, dstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		srcPort: 1002, rate: 1003, size: 1004, count: 1005, frames: 1006, reg: agent.RegisterMapFD,
		wait: 7 * time.Second}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config\n%+v, want\n%+v", c, want)
	}

	// Each error names the flag at fault and its value: the whole message
	// is compared, so that an error naming another flag fails.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, `-dst "": want an IPv4 address`},
		{[]string{"-dst", "fe80::1"}, `-dst "fe80::1": want an IPv4 address`},
		{[]string{"-dst", "10.0.0.1", "-dst-mac", "xx"}, `-dst-mac "xx": want a 6-byte MAC`},
		{[]string{"-dst", "10.0.0.1", "-registration", "magic"}, `-registration "magic": want auto, map-fd or agent`},
		{[]string{"-dst", "10.0.0.1", "-dst-port", "0"}, "-dst-port 0: must be between 1 and 65535"},
		{[]string{"-dst", "10.0.0.1", "-src-port", "65536"}, "-src-port 65536: must be between 1 and 65535"},
		{[]string{"-dst", "10.0.0.1", "-size", "59"}, "-size 59: must be between 60 and 1514"},
		{[]string{"-dst", "10.0.0.1", "-size", "1515"}, "-size 1515: must be between 60 and 1514"},
		{[]string{"-dst", "10.0.0.1", "-frames", "100"}, "-frames 100: must be between 128 and 16777216"},
		{[]string{"-dst", "10.0.0.1", "-frames", "16777217"}, "-frames 16777217: must be between 128 and 16777216"},
		{[]string{"-dst", "10.0.0.1", "-rate", "-1"}, "-rate -1: must not be negative"},
		{[]string{"-dst", "10.0.0.1", "-count", "-2"}, "-count -2: must not be negative"},
		{[]string{"-dst", "10.0.0.1", "-queue", "-3"}, "-queue -3: must not be negative"},
		{[]string{"-dst", "10.0.0.1", "extra"}, `unexpected arguments ["extra"]`},
	} {
		if _, err := parseFlags(tc.args); err == nil || err.Error() != tc.want {
			t.Errorf("parseFlags(%q) = %v, want %s", tc.args, err, tc.want)
		}
	}
}

// An interface that is not there is named with its flag.
func TestRunNamesMissingDevice(t *testing.T) {
	err := run(context.Background(), []string{"-dst", "10.0.0.1", "-dev", "afxnosuch0"}, io.Discard)
	const want = `-dev "afxnosuch0": `
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("run with a missing -dev: %v, want an error starting %q", err, want)
	}
}

// SIGINT or SIGTERM while the sender waits for the agent's socket (-wait)
// ends the wait: a container runtime's stop must not have to wait it out
// and kill the sender.
func TestRunStopsWaitingForAgentWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	agentPath := filepath.Join(t.TempDir(), "afxdp.sock") // no agent there
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-dev", "lo", "-dst", "127.0.0.1", "-dst-mac", "02:00:00:00:00:01",
			"-agent", agentPath, "-wait", "1h"}, io.Discard)
	}()
	select {
	case err := <-done:
		want := fmt.Sprintf("-agent %q: interrupted while waiting for the agent (-wait 1h0m0s): dial agent:", agentPath)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("run interrupted while waiting for the agent: %v, want an error starting %q", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run still waiting for the agent 10s after it was interrupted (-wait 1h)")
	}
}

// A -size the interface's MTU does not carry is refused before the agent
// is asked for anything: veth drops such frames in the kick that sends
// them, and the sender would report them sent.
func TestRunRefusesSizeOverMTU(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{MTU: 1000})
	agentPath := filepath.Join(t.TempDir(), "afxdp.sock") // no agent there
	for size, want := range map[int]string{
		1014: "dial agent:", // fits: it gets as far as the agent
		1015: fmt.Sprintf("-size 1015: longer than the MTU 1000 of %s plus the 14-byte Ethernet header (at most 1014)", v.Host.Name),
	} {
		err := run(context.Background(), []string{"-dev", v.Host.Name, "-dst", v.Peer.IP().String(),
			"-dst-mac", v.Peer.MAC.String(), "-agent", agentPath, "-size", fmt.Sprint(size)}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("-size %d on MTU 1000: %v, want an error containing %q", size, err, want)
		}
	}
}

func TestHexAddr(t *testing.T) {
	// /proc/net/route writes addresses in host (little-endian) order.
	for in, want := range map[string]string{"0102000A": "10.0.2.1", "00000000": "0.0.0.0", "00FFFFFF": "255.255.255.0"} {
		got, err := hexAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("hexAddr(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := hexAddr("zz"); err == nil {
		t.Error("hexAddr(zz): no error")
	}
}

// TestSendStopsWhenInterrupted runs send on a real socket, rate-limited
// and with far more to send than it will get to, and ends its context as
// a SIGINT would: send stops early without an error, every frame it
// queued was completed and reached the veth's other end as datagrams, and the frames it
// held are all back.
func TestSendStopsWhenInterrupted(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	var s *xsk.Socket
	err := v.Host.Do(func() (err error) {
		s, err = xsk.Open(v.Host.Name, 0, &xsk.Options{NoXDP: true, NumFrames: 256, TxFrames: 192, FillRingSize: 64, RxRingSize: 64})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A kernel UDP socket on the other end counts what arrives as real
	// datagrams, checksums and all.
	var conn *net.UDPConn
	err = v.Peer.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.Peer.Addr.Addr(), 7777)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Room for every datagram the run can send (4,000 at most, each
	// charged about a kilobyte), so that a reader the race detector and
	// a busy machine slow down does not lose them to a full receive
	// buffer (UdpRcvbufErrors) and blame the sender.
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	}); err != nil || serr != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v, %v", err, serr)
	}
	var got atomic.Uint64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := conn.Read(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	hdr := packet.UDP{SrcMAC: v.Host.MAC, DstMAC: v.Peer.MAC, SrcIP: v.Host.Addr.Addr(), DstIP: v.Peer.Addr.Addr(),
		SrcPort: 7777, DstPort: 7777}
	c := &config{count: 1 << 30, rate: 20000, size: 64}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	sent, bytes, err := send(ctx, s, &hdr, c)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if sent == 0 || sent >= uint64(c.count) || bytes != 64*sent {
		t.Fatalf("sent %d packets, %d bytes: want some, 64 bytes each, and fewer than %d", sent, bytes, c.count)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TxPackets != sent || st.Completed != sent {
		t.Errorf("stats: tx_packets %d, completed %d; want both %d", st.TxPackets, st.Completed, sent)
	}
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // and nothing more comes
	if n := got.Load(); n != sent {
		t.Errorf("the peer's UDP socket received %d datagrams, want the %d sent", n, sent)
	}
	// Nothing stayed allocated: every transmit frame can be had again.
	descs := make([]xsk.Desc, 256)
	if n, err := s.Alloc(descs); err != nil || n != 192 {
		t.Errorf("Alloc after send: %d frames, %v; want all 192 transmit frames", n, err)
	}
}

// An agent that is there and refuses the sender (/host_nak: its UID is not
// allowed) is not asked again for the rest of -wait: -wait covers an agent
// that is not up yet, and a refusal does not change by asking again. The
// error says which user was refused and what would let it in.
func TestRunDoesNotRetryRefusalDuringWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "afxdp.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			conns.Add(1)
			// Read /connect, answer as an agent that refuses the peer.
			buf := make([]byte, 256)
			c.Read(buf)
			c.Write([]byte(agent.RespHostNak))
			c.Close()
		}
	}()
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"-dev", "lo", "-dst", "127.0.0.1", "-dst-mac", "02:00:00:00:00:01",
			"-agent", path, "-wait", "1h"}, io.Discard)
	}()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("run still retrying a refusal after 10s (-wait 1h); the agent was asked %d times", conns.Load())
	}
	if !errors.Is(err, agent.ErrRefused) {
		t.Fatalf("run refused by the agent: %v, want an error matching agent.ErrRefused", err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the agent was asked %d times, want once", n)
	}
	want := fmt.Sprintf(`agent answered "/host_nak": the agent refuses a UID its -allow-uid does not name, and this process runs as uid %d`, os.Getuid())
	if !strings.HasSuffix(err.Error(), want) {
		t.Errorf("run refused by the agent: %v, want an error ending %q", err, want)
	}
}

// An agent socket that is not there, or that no agent listens on, gets an
// error that says so and what to look at, not only the errno.
func TestRunExplainsUnreachableAgent(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	// As an agent killed with SIGKILL leaves it: the file, no listener.
	ln.SetUnlinkOnClose(false)
	ln.Close()
	for path, want := range map[string]string{
		filepath.Join(dir, "missing.sock"): "connect: no such file or directory: no agent socket there: is the agent serving lo, and its socket directory for lo mounted here (-wait waits for it)?",
		stale:                              "connect: connection refused: the socket is there, but no agent listens on it (stopped or killed; -wait waits for it to come back)",
	} {
		err := run(context.Background(), []string{"-dev", "lo", "-dst", "127.0.0.1", "-dst-mac", "02:00:00:00:00:01",
			"-agent", path}, io.Discard)
		if err == nil || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("run with -agent %s: %v, want an error ending %q", path, err, want)
		}
	}
}

// -registration map-fd against an agent that hands out a read-only map:
// the kernel refuses the update with EPERM, and the error says why and
// which -registration gets past it. auto gets past it.
func TestRunMapFDOnReadOnlyMap(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	srv, err := agent.NewServer(&agent.ServerOptions{
		Devices:     []agent.Device{{Name: v.Host.Name}},
		SocketDir:   testenv.SharedDir(t, "afxdp-sender-test-"),
		ReadOnlyMap: true,
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
	args := func(reg string) []string {
		return []string{"-dev", v.Host.Name, "-dst", v.Peer.Addr.Addr().String(), "-dst-mac", v.Peer.MAC.String(),
			"-agent", srv.SocketPath(v.Host.Name), "-count", "10", "-registration", reg}
	}
	err = run(context.Background(), args("map-fd"), io.Discard)
	const want = "operation not permitted: the agent hands out a read-only map (-read-only-map), or this kernel (before 6.5) refuses an unprivileged map update: -registration auto or agent has the agent register the socket"
	if !errors.Is(err, unix.EPERM) || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("-registration map-fd on a read-only map: %v, want EPERM, ending %q", err, want)
	}
	var out strings.Builder
	if err := run(context.Background(), args("auto"), &out); err != nil {
		t.Errorf("-registration auto on a read-only map: %v", err)
	} else if !strings.Contains(out.String(), "socket registered by agent") || !strings.Contains(out.String(), "sent 10 packets") {
		t.Errorf("-registration auto on a read-only map said %q, want the socket registered by agent and 10 packets sent", out.String())
	}
}
