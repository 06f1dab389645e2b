package xsk_test

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// TestAutoModeSaysWhyCopy: on veth, whose driver advertises no AF_XDP
// zero-copy, a socket opened in auto mode is in copy mode and says why,
// without having tried a zero-copy bind (whose error would read "bind in
// zero-copy mode"); a forced mode gives no reason.
func TestAutoModeSaysWhyCopy(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, nil)
	err := s.ZeroCopyErr()
	if s.Mode() != xsk.BindCopy || !errors.Is(err, xsk.ErrNotSupported) || !strings.Contains(err.Error(), "does not advertise AF_XDP zero-copy") {
		t.Fatalf("auto mode on veth: mode %v, ZeroCopyErr %v; want copy mode because the driver advertises no zero-copy", s.Mode(), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	forced := openOn(t, v.Host, 0, &xsk.Options{Bind: xsk.BindCopy})
	if err := forced.ZeroCopyErr(); err != nil {
		t.Errorf("forced copy mode: ZeroCopyErr %v, want nil", err)
	}
}

// memlockChild marks the child process of TestDefaultOpenWithinMemlock.
const memlockChild = "AFXDP_TEST_MEMLOCK_CHILD"

// TestDefaultOpenWithinMemlock opens a socket with the default options
// (an 8 MiB UMEM) on veth in a process without CAP_IPC_LOCK whose memlock
// limit is 8 MiB, which the documentation says it fits. A zero-copy
// attempt before the copy-mode bind would register the UMEM twice, and the
// kernel returns the first charge only later: the second registration
// then failed with ENOBUFS most of the time. The child process is needed
// for the limit, which cannot be raised again once lowered.
func TestDefaultOpenWithinMemlock(t *testing.T) {
	testenv.RequirePrivileged(t)
	if os.Getenv(memlockChild) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDefaultOpenWithinMemlock$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), memlockChild+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestDefaultOpenWithinMemlock") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	// The capability check is made against the calling thread's
	// credentials: drop CAP_IPC_LOCK on this thread and stay on it (the
	// namespace switch below runs on the calling thread too).
	runtime.LockOSThread()
	const limit = 8 << 20
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatal(err)
	}
	v := testenv.NewVeth(t, nil)
	if err := dropEffectiveCap(unix.CAP_IPC_LOCK); err != nil {
		t.Fatal(err)
	}
	var s *xsk.Socket
	err := v.Host.Do(func() (err error) {
		s, err = xsk.Open(v.Host.Name, 0, nil)
		return err
	})
	if err != nil {
		t.Fatalf("default Open without CAP_IPC_LOCK under an 8 MiB memlock limit: %v", err)
	}
	if got := s.UMEM().Options(); got.NumFrames*got.FrameSize != limit {
		t.Errorf("default UMEM %d frames of %d bytes, want %d bytes in all", got.NumFrames, got.FrameSize, limit)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOpenWithoutNetRawSaysSo: the kernel refuses an AF_XDP socket to a
// thread without CAP_NET_RAW with a bare EPERM; Open's error names the
// capability, and still matches the errno.
func TestOpenWithoutNetRawSaysSo(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	type result struct {
		setup, open, restore error
	}
	done := make(chan result)
	go func() {
		// The kernel checks the calling thread's credentials, and the
		// socket is created on it: the capability is dropped on a
		// locked thread and given back before the thread is let go.
		// A thread left without it does not always end with its
		// goroutine: the main thread is parked instead, and the
		// process's /proc/self/status, where RequirePrivileged looks,
		// shows the main thread's credentials, so every later
		// privileged test of the binary failed as unprivileged.
		runtime.LockOSThread()
		if err := dropEffectiveCap(unix.CAP_NET_RAW); err != nil {
			done <- result{setup: err}
			return // still locked: the thread ends with the goroutine
		}
		s, err := xsk.Open(v.Host.Name, 0, &xsk.Options{NoXDP: true, NumFrames: 64})
		if err == nil {
			s.Close()
		}
		r := result{open: err}
		if r.restore = raiseEffectiveCap(unix.CAP_NET_RAW); r.restore == nil {
			runtime.UnlockOSThread()
		}
		done <- r
	}()
	r := <-done
	if r.setup != nil {
		t.Fatalf("drop CAP_NET_RAW: %v", r.setup)
	}
	if r.restore != nil {
		t.Errorf("give CAP_NET_RAW back: %v", r.restore)
	}
	want := "open " + v.Host.Name + " queue 0: create AF_XDP socket: needs CAP_NET_RAW: socket: operation not permitted"
	if r.open == nil || r.open.Error() != want || !errors.Is(r.open, unix.EPERM) {
		t.Errorf("Open without CAP_NET_RAW = %v, want %q matching EPERM", r.open, want)
	}
	if tids := threadsWithout(t, unix.CAP_NET_RAW); len(tids) > 0 {
		t.Errorf("threads %v of the process are left without CAP_NET_RAW", tids)
	}
}

// raiseEffectiveCap puts the capability c (below 32) back in the calling
// thread's effective set, from its permitted set.
func raiseEffectiveCap(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Effective |= 1 << c
	return unix.Capset(&hdr, &data[0])
}

// threadsWithout lists the threads of the process whose effective set
// lacks the capability c.
func threadsWithout(t *testing.T, c int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var tids []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/status")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread has ended
		}
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err != nil {
					t.Fatalf("thread %s: CapEff %q: %v", e.Name(), v, err)
				}
				if eff&(1<<c) == 0 {
					tids = append(tids, e.Name())
				}
			}
		}
	}
	return tids
}

// dropEffectiveCap takes the capability c (below 32) out of the calling
// thread's effective set; the caller keeps to its locked thread.
func dropEffectiveCap(c int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Effective &^= 1 << c
	return unix.Capset(&hdr, &data[0])
}
