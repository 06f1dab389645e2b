package testenv

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// Resources counts what a process holds that afxdp could leak.
type Resources struct {
	// FDs is the number of open file descriptors.
	FDs int
	// XDPMappings is the number of memory mappings of AF_XDP sockets
	// (rings) and anonymous mappings are not told apart by the kernel, so
	// this counts mappings whose backing is an XSK socket.
	XDPMappings int
	// Mappings is the total number of mappings.
	Mappings int
}

// Snapshot counts the process's file descriptors and mappings.
func Snapshot(tb testing.TB) Resources {
	tb.Helper()
	var r Resources
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatalf("count fds: %v", err)
	}
	r.FDs = len(ents) - 1 // the directory's own fd
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		tb.Fatalf("count mappings: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		r.Mappings++
		if strings.Contains(s.Text(), "XDP") || strings.Contains(s.Text(), "xdp") {
			r.XDPMappings++
		}
	}
	return r
}
