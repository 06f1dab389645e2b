package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// agentMainEnv makes the test binary run the agent's main instead of the
// tests, so that a test can run (and kill) the real command.
const agentMainEnv = "AFXDP_AGENT_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(agentMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// agentProc is the agent command running in a child process.
type agentProc struct {
	cmd  *exec.Cmd
	logs *testenv.Buffer
	done chan error
}

// startAgent runs the agent with args and waits until a client can
// connect to sock.
func startAgent(t *testing.T, args []string, sock string) *agentProc {
	t.Helper()
	p := &agentProc{logs: &testenv.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), agentMainEnv+"=1")
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	// The child dies with the thread that started it: keep that thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := agent.Dial(sock)
		if err == nil {
			err = c.Connect("probe")
			c.Close()
			if err == nil {
				return p
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("agent exited before serving: %v\n%s", err, p.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not serving %s: %v\n%s", sock, err, p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the agent to exit.
func (p *agentProc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("agent still running 10 s after %v\n%s", sig, p.logs)
	}
	return nil
}

// crashPort is the UDP port the agent redirects in TestAgentKilled.
const crashPort = 7781

// receives sends a few UDP datagrams from the peer to the host end and
// reports whether any of them reached sock.
func receives(t *testing.T, v *netenv.Veth, sock *xsk.Socket) bool {
	t.Helper()
	// Unconnected, so that the port unreachable the host's stack answers
	// while nothing is redirected fails no write.
	var out *net.UDPConn
	err := v.Peer.Do(func() error {
		var err error
		out, err = net.ListenUDP("udp4", nil)
		return err
	})
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(v.Host.IP(), crashPort))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	descs := make([]xsk.Desc, 16)
	got := 0
	for i := 0; i < 10; i++ {
		if _, err := out.WriteToUDP([]byte(fmt.Sprintf("probe %d", i)), dst); err != nil {
			t.Fatal(err)
		}
		if _, err := sock.Wait(xsk.Readable, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		n, err := sock.Receive(descs)
		if err != nil {
			t.Fatal(err)
		}
		if err := sock.Release(descs[:n]); err != nil {
			t.Fatal(err)
		}
		got += n
	}
	return got > 0
}

// TestAgentKilled runs the real agent, SIGKILLs it while a pod holds a
// socket registered in its map, and restarts it, checking what the
// package documentation says of an agent that dies without cleaning up:
// the kernel detaches its program at once, the socket file and the pin
// stay on disk until the next start takes them back, and registrations do
// not survive: the pod must register again, with the new agent or its new
// pin. SIGTERM then removes the socket and the pin, and keeps their
// directories.
func TestAgentKilled(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	dev := v.Host.Name
	dir := t.TempDir()
	pinDir := testenv.MountBPFFS(t)
	args := []string{"-iface", dev, "-socket-dir", dir, "-pin", "-pin-dir", pinDir,
		"-filter-ethertype", "0x0800", "-filter-ipproto", "17", "-filter-port", strconv.Itoa(crashPort)}
	sock := filepath.Join(dir, dev, agent.SocketName)
	pin := filepath.Join(pinDir, dev, agent.PinName)
	small := &xsk.Options{NumFrames: 256, RxRingSize: 128, TxRingSize: 128, FillRingSize: 128, CompletionRingSize: 128}

	first := startAgent(t, args, sock)
	pod, err := agent.DialSocket(sock, "pod", dev, 0, &agent.SocketOptions{XSK: small})
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	if !receives(t, v, pod.Socket) {
		t.Fatalf("the pod receives nothing through the agent\n%s", first.logs)
	}

	if err := first.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("agent exited cleanly after SIGKILL")
	}
	// The kernel releases the agent's bpf_link with its last file
	// reference; the final put of a file can be deferred to a work item
	// (delayed fput), so the detach may trail the exit by a moment.
	var info bpf.XDPInfo
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		info, err = bpf.QueryXDP(v.Host.Index)
		if err != nil || !info.Attached() || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || info.Attached() {
		t.Errorf("program of the killed agent: %+v, %v; want it detached with the agent's link", info, err)
	}
	if receives(t, v, pod.Socket) {
		t.Error("the pod still receives with the agent dead")
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Errorf("socket file of the killed agent: %v; want it left until the next start", err)
	}
	if c, err := agent.Dial(sock); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("Dial with the agent dead = %v, want ECONNREFUSED", err)
	}
	if _, err := os.Lstat(pin); err != nil {
		t.Errorf("pin of the killed agent: %v; want it left until the next start", err)
	}
	if _, err := pod.Client().Version(); err == nil {
		t.Error("the pod's connection to the killed agent still answers")
	}

	second := startAgent(t, args, sock)
	if receives(t, v, pod.Socket) {
		t.Error("the pod's registration survived the agent's restart")
	}
	if err := pod.Close(); err != nil {
		t.Logf("close the pod's socket: %v", err) // its connection died with the agent
	}
	again, err := agent.DialSocket(sock, "pod", dev, 0, &agent.SocketOptions{XSK: small})
	if err != nil {
		t.Fatalf("register again with the restarted agent: %v\n%s", err, second.logs)
	}
	if !receives(t, v, again.Socket) {
		t.Error("the pod receives nothing after registering again")
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	pinned, err := agent.OpenPinned(pin, dev, 0, small)
	if err != nil {
		t.Fatalf("open the restarted agent's pin: %v", err)
	}
	if !receives(t, v, pinned.Socket) {
		t.Error("the pin is not the restarted agent's map")
	}
	if err := pinned.Close(); err != nil {
		t.Fatal(err)
	}

	if err := second.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("agent after SIGTERM: %v\n%s", err, second.logs)
	}
	for _, p := range []string{sock, pin} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after SIGTERM: %v, want it removed", p, err)
		}
		// Its directory stays, empty, for the pods that bind-mount it.
		if ents, err := os.ReadDir(filepath.Dir(p)); err != nil || len(ents) != 0 {
			t.Errorf("%s after SIGTERM: %v, %v; want it kept, empty", filepath.Dir(p), ents, err)
		}
	}
	if info, err := bpf.QueryXDP(v.Host.Index); err != nil || info.Attached() {
		t.Errorf("program after SIGTERM: %+v, %v; want it detached", info, err)
	}
}
