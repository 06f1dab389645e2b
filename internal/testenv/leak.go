package testenv

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Resources counts what a process holds that afxdp could leak.
type Resources struct {
	// FDs is the number of open file descriptors.
	FDs int
	// SocketMappings is the number of memory mappings of sockets: an
	// AF_XDP socket's rings show up as "socket:[inode]" mappings.
	SocketMappings int
}

// Snapshot counts the process's file descriptors and socket mappings.
func Snapshot(tb testing.TB) Resources {
	tb.Helper()
	var r Resources
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatalf("count fds: %v", err)
	}
	r.FDs = len(ents) - 1 // the directory's own fd
	forEachMapping(tb, func(start, end uintptr, line string) {
		if strings.Contains(line, "socket:[") {
			r.SocketMappings++
		}
	})
	return r
}

// Mapped reports whether any mapping of the process covers addr.
func Mapped(tb testing.TB, addr uintptr) bool {
	tb.Helper()
	found := false
	forEachMapping(tb, func(start, end uintptr, _ string) {
		if start <= addr && addr < end {
			found = true
		}
	})
	return found
}

func forEachMapping(tb testing.TB, fn func(start, end uintptr, line string)) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		tb.Fatalf("read mappings: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		rng, _, _ := strings.Cut(line, " ")
		lo, hi, ok := strings.Cut(rng, "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		fn(uintptr(start), uintptr(end), line)
	}
}

// SharedDir makes a temporary directory that other users may traverse (mode
// 0755), for sockets that a test's unprivileged children reach, and removes
// it at cleanup. t.TempDir's parent is private to the test's user.
func SharedDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
