package container

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/testenv"
)

func TestMain(m *testing.M) {
	RunChild(map[string]func() int{
		"report": reportChild,
	})
	os.Exit(m.Run())
}

// reportChild prints what the child is: uid, gid, pid, capabilities, net
// namespace and memlock limit.
func reportChild() int {
	caps, err := Caps()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	netns, _ := os.Readlink("/proc/self/ns/net")
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl)
	// Only CAP_NET_RAW may create a raw packet socket.
	_, perr := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	fmt.Printf("uid=%d gid=%d pid=%d caps=%#x netns=%s memlock=%d packet=%v\n",
		os.Getuid(), os.Getgid(), os.Getpid(), caps, netns, rl.Cur, perr == nil)
	return 0
}

func TestStartUnprivilegedChild(t *testing.T) {
	testenv.RequirePrivileged(t)
	exe := Executable(t)
	ns := testenv.NewNetns(t)
	wantNS, err := os.Readlink(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		caps   []uintptr
		packet bool
	}{
		{"net_raw", []uintptr{unix.CAP_NET_RAW}, true},
		{"no_caps", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			p, err := Start(&Options{Path: exe, Child: "report", UID: 4242, GID: 4343, Caps: tc.caps,
				Netns: ns.Path(), Memlock: 4 << 20, Stdout: &out, Stderr: &out})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(); err != nil {
				t.Fatalf("child: %v: %s", err, out.String())
			}
			var wantCaps uint64
			for _, c := range tc.caps {
				wantCaps |= 1 << c
			}
			want := fmt.Sprintf("uid=4242 gid=4343 pid=1 caps=%#x netns=%s memlock=%d packet=%v\n",
				wantCaps, wantNS, 4<<20, tc.packet)
			if got := out.String(); got != want {
				t.Errorf("child reported\n%s want\n%s", got, want)
			}
		})
	}
}

func TestKill(t *testing.T) {
	testenv.RequirePrivileged(t)
	p, err := Start(&Options{Path: "/bin/sleep", Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatalf("second kill: %v", err)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("wait after kill: %v", err)
	}
}

// An ID that does not fit 32 bits is refused by name, not truncated: 1<<32
// would become 0, and the child would run as root.
func TestStartRefusesIDsBeyond32Bits(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("int cannot hold an ID beyond 32 bits")
	}
	big := int(int64(1) << 32)
	for _, tc := range []struct {
		uid, gid int
		want     string
	}{
		{big, 0, "UID 4294967296: must be between 1 and 4294967294"},
		{0, big, "GID 4294967296: must be between 1 and 4294967294"},
		{big + 4242, 0, "UID 4294971538"},
		{math.MaxUint32, 0, "UID 4294967295"},
		{-1, 0, "UID -1"},
		{0, -1, "GID -1"},
	} {
		p, err := Start(&Options{Path: "/bin/true", UID: tc.uid, GID: tc.gid, ShareNamespaces: true})
		if err == nil {
			p.Wait()
			t.Errorf("Start with UID %d, GID %d: no error", tc.uid, tc.gid)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Start with UID %d, GID %d: %v, want an error containing %q", tc.uid, tc.gid, err, tc.want)
		}
	}
}

// A capability number the kernel does not have is refused by name. One of
// 64 or more used to crash the whole process: the fork's child indexes a
// two-word capability array with it, and a vfork child shares the
// parent's memory.
func TestStartRefusesUnknownCapability(t *testing.T) {
	for _, c := range []uintptr{64, 1 << 20, 63} {
		p, err := Start(&Options{Path: "/bin/true", Caps: []uintptr{unix.CAP_NET_RAW, c}, ShareNamespaces: true})
		if err == nil {
			p.Wait()
			t.Errorf("Start with Caps[1] %d: no error", c)
			continue
		}
		if want := fmt.Sprintf("Caps[1] %d", c); !strings.Contains(err.Error(), want) {
			t.Errorf("Start with Caps[1] %d: %v, want an error naming %q", c, err, want)
		}
	}
}

// A Netns path that is not a network namespace is named in the error.
func TestStartNamesBadNetns(t *testing.T) {
	testenv.RequirePrivileged(t)
	f := filepath.Join(t.TempDir(), "notnetns")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Start(&Options{Path: "/bin/true", Netns: f, ShareNamespaces: true})
	if err == nil {
		p.Wait()
		t.Fatal("Start with a Netns that is a plain file: no error")
	}
	if !strings.Contains(err.Error(), "Netns "+f) {
		t.Errorf("Start with Netns %s: %v, want an error naming Netns and the path", f, err)
	}
	// An error of the start itself is not blamed on the namespace.
	ns := testenv.NewNetns(t)
	_, err = Start(&Options{Path: "/nonexistent/prog", Netns: ns.Path(), ShareNamespaces: true})
	if err == nil || strings.Contains(err.Error(), "Netns") {
		t.Errorf("Start of a missing program in a good Netns: %v, want an error that does not blame Netns", err)
	}
}
