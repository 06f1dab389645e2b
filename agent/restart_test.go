package agent

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// mountNS is a goroutine locked to a thread in a mount namespace of its
// own, where a test bind-mounts directories as a container runtime does for
// a pod, and dials through them.
type mountNS struct {
	do chan func()
}

// newMountNS starts the thread; it ends, with its namespace and mounts, at
// cleanup.
func newMountNS(t *testing.T) *mountNS {
	t.Helper()
	m := &mountNS{do: make(chan func())}
	ready := make(chan error)
	exited := make(chan error, 1) // the setns back, once the goroutine ends
	go func() {
		// Never unlocked: the thread exits with the goroutine, and
		// takes its namespace with it. The main thread does not exit
		// but is parked, and /proc/self shows it: the thread goes back
		// to the test's mount namespace before the goroutine ends.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/mnt")
		if err != nil {
			ready <- err
			return
		}
		defer orig.Close()
		if err = unix.Unshare(unix.CLONE_NEWNS); err == nil {
			defer func() { exited <- unix.Setns(int(orig.Fd()), unix.CLONE_NEWNS) }()
			// Mounts made here must not propagate to the test's
			// namespace.
			err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
		}
		ready <- err
		if err != nil {
			return
		}
		for fn := range m.do {
			fn()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("private mount namespace: %v", err)
	}
	t.Cleanup(func() {
		close(m.do)
		if err := <-exited; err != nil {
			t.Errorf("back to the test's mount namespace: %v", err)
		}
	})
	return m
}

// run runs fn on the namespace's thread.
func (m *mountNS) run(fn func() error) error {
	done := make(chan error)
	m.do <- func() { done <- fn() }
	return <-done
}

// TestRestartKeepsBindMount plays a pod that reaches its device's socket
// through a bind mount of <SocketDir>/<device>, as the device plugin and
// the README lay it out, across a clean restart of the agent (Close, then
// NewServer). A bind mount holds the directory itself, not its path: had
// Close removed the directory and NewServer made a new one, the pod would
// see an empty, deleted directory and never reach the new agent. The
// directory is either made by the agent or made before it, as a pod
// started before the agent needs it to be.
func TestRestartKeepsBindMount(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, before := range []bool{false, true} {
		name := "made_by_agent"
		if before {
			name = "made_before"
		}
		t.Run(name, func(t *testing.T) {
			v := testenv.NewVeth(t, nil)
			sd := socketDir(t)
			dev := v.Host.Name
			opts := &ServerOptions{
				Devices: []Device{{Name: dev,
					Filter: bpf.Filter{EtherType: 0x0800, IPProto: unix.IPPROTO_UDP, DstPort: testPort}}},
				SocketDir: sd,
				Logger:    testLogger(t),
			}
			dir := filepath.Join(sd, dev)
			ns := newMountNS(t)
			// The pod's view of its device's directory.
			podDir := filepath.Join(t.TempDir(), dev)
			if err := os.Mkdir(podDir, 0o755); err != nil {
				t.Fatal(err)
			}
			bind := func() {
				t.Helper()
				if err := ns.run(func() error { return unix.Mount(dir, podDir, "", unix.MS_BIND, "") }); err != nil {
					t.Fatalf("bind-mount %s: %v", dir, err)
				}
			}
			podSock := filepath.Join(podDir, SocketName)
			if before {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				bind()
			}
			first, err := NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			if !before {
				bind()
			}
			connect := func(which string) {
				t.Helper()
				var c *Client
				if err := ns.run(func() (err error) { c, err = Dial(podSock); return err }); err != nil {
					t.Fatalf("%s agent: dial through the bind mount: %v", which, err)
				}
				defer c.Close()
				if err := c.Connect("pod"); err != nil {
					t.Fatalf("%s agent: connect through the bind mount: %v", which, err)
				}
			}
			connect("first")
			var st0 unix.Stat_t
			if err := unix.Stat(dir, &st0); err != nil {
				t.Fatal(err)
			}
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(filepath.Join(dir, SocketName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket after Close: %v, want it removed", err)
			}
			var st1 unix.Stat_t
			if err := unix.Stat(dir, &st1); err != nil {
				t.Errorf("device directory after Close: %v, want it kept", err)
			}
			if st1.Ino != st0.Ino || st1.Dev != st0.Dev {
				t.Errorf("device directory after Close is another one (inode %d, was %d)", st1.Ino, st0.Ino)
			}
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
				t.Errorf("device directory after Close holds %v (%v), want it empty", ents, err)
			}

			second, err := NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			connect("restarted")
			// The pod's socket, registered through the mount, receives.
			var sock *Socket
			if err := ns.run(func() (err error) {
				sock, err = DialSocket(podSock, "pod", dev, 0, &SocketOptions{XSK: smallXSK})
				return err
			}); err != nil {
				t.Fatalf("restarted agent: DialSocket through the bind mount: %v", err)
			}
			defer sock.Close()
			receiveUDP(t, v.Peer, v.Host.IP(), sock.Socket, 5)
		})
	}
}

// TestFailedStartLogsOnlyServed: a NewServer that fails on its second
// device (no such interface) stops the first, which it served, and says
// so, but does not claim to stop serving the one it never served.
func TestFailedStartLogsOnlyServed(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	missing := netenv.RandomName("afxno")
	logs := &testenv.Buffer{}
	_, err := NewServer(&ServerOptions{
		Devices:   []Device{{Name: v.Host.Name}, {Name: missing}},
		SocketDir: socketDir(t),
		Logger:    slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err == nil || !strings.Contains(err.Error(), "device "+missing) {
		t.Fatalf("NewServer with a missing interface = %v, want an error naming %s", err, missing)
	}
	out := logs.String()
	for _, tc := range []struct {
		dev  string
		want bool
	}{{v.Host.Name, true}, {missing, false}} {
		stopped := strings.Contains(out, `msg="stopped serving device" device=`+tc.dev+"\n")
		if stopped != tc.want {
			t.Errorf("logged stopping %s: %v, want %v; logs:\n%s", tc.dev, stopped, tc.want, out)
		}
	}
}
