package sys

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("AFXDP_REQUIRE_PRIV") == "1" {
			t.Fatal("needs root to make a network namespace")
		}
		t.Skip("needs root to make a network namespace")
	}
	// A namespace of our own, held open by a file descriptor.
	var target *os.File
	err := InNetnsFD(int(mustOpen(t, "/proc/thread-self/ns/net").Fd()), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		var err error
		target, err = os.Open("/proc/thread-self/ns/net")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	home := nsInode(t, "/proc/self/ns/net")
	want := nsInode(t, "/proc/self/fd/"+strconv.Itoa(int(target.Fd())))
	if want == home {
		t.Fatal("unshare made no new namespace")
	}
	var inside uint64
	if err := InNetnsPath("/proc/self/fd/"+strconv.Itoa(int(target.Fd())), func() error {
		inside = nsInode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != want {
		t.Fatalf("fn ran in namespace %d, want %d", inside, want)
	}
	if got := nsInode(t, "/proc/thread-self/ns/net"); got != home {
		t.Fatalf("thread left in namespace %d, want %d", got, home)
	}
	boom := errors.New("boom")
	if err := InNetnsPath("/proc/self/fd/"+strconv.Itoa(int(target.Fd())), func() error { return boom }); err != boom {
		t.Fatalf("fn's error not returned: %v", err)
	}
	if err := InNetnsPath("/nonexistent/netns", func() error { return nil }); err == nil || !strings.Contains(err.Error(), "open netns /nonexistent/netns") {
		t.Fatalf("bad path: %v", err)
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
