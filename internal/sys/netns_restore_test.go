package sys_test

import (
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Error(err)
	}
	return st.Ino
}

// TestInNetnsReportsFailedRestore has fn drop CAP_SYS_ADMIN on its thread,
// so that InNetnsFD cannot move the thread back: it must say so (with fn's
// own error), and keep the goroutine on that thread, which the runtime then
// discards when the goroutine ends.
func TestInNetnsReportsFailedRestore(t *testing.T) {
	testenv.RequirePrivileged(t)
	ns := testenv.NewNetns(t)
	target := inode(t, "/proc/self/fd/"+strconv.Itoa(int(ns.NsHandle())))
	boom := errors.New("boom")

	type result struct {
		err              error
		tidIn, tidAfter  int
		nsAfter          uint64
		nsAfterScheduled uint64
	}
	done := make(chan result, 1)
	// A goroutine of its own: its thread is not fit for reuse afterwards.
	go func() {
		var r result
		r.err = sys.InNetnsFD(int(ns.NsHandle()), func() error {
			r.tidIn = unix.Gettid()
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				return err
			}
			data[0].Effective &^= 1 << unix.CAP_SYS_ADMIN
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				return err
			}
			return boom
		})
		r.nsAfter = inode(t, "/proc/thread-self/ns/net")
		// An unlocked goroutine would likely move to another thread
		// across a sleep.
		for range 10 {
			time.Sleep(time.Millisecond)
		}
		r.tidAfter = unix.Gettid()
		r.nsAfterScheduled = inode(t, "/proc/thread-self/ns/net")
		done <- r
	}()
	r := <-done
	t.Log(r.err)
	if !errors.Is(r.err, boom) {
		t.Errorf("InNetnsFD: %v; want fn's error in it", r.err)
	}
	if !errors.Is(r.err, unix.EPERM) {
		t.Errorf("InNetnsFD: %v; want the failed restore (EPERM) in it", r.err)
	}
	var se *os.SyscallError
	if !errors.As(r.err, &se) || se.Syscall != "setns" {
		t.Errorf("InNetnsFD: %v; want a setns error", r.err)
	}
	if r.nsAfter != target {
		t.Errorf("after InNetnsFD the thread is in namespace %d; want the entered one, %d (restore failed)", r.nsAfter, target)
	}
	if r.tidAfter != r.tidIn || r.nsAfterScheduled != target {
		t.Errorf("goroutine moved from thread %d to %d (namespace %d): it should stay locked to the stuck thread",
			r.tidIn, r.tidAfter, r.nsAfterScheduled)
	}
}
