package matrix

import (
	"context"
	"errors"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/testenv"
)

// TestRRCPUOverTheWindow: rr's machine-wide CPU is read at the window's
// ends, the same moments as its length, and not after the wait for late
// replies. The readings are replaced by ones whose softirq and system
// times are the clock at the moment of reading, so a window read at the
// right moments charges exactly its own length to the kernel (one
// nanosecond of clock per nanosecond of window), whatever the machine or
// the scheduler did. Reading the CPU after the 200 ms wait for late replies
// charged that wait to the window as well.
func TestRRCPUOverTheWindow(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	epoch := time.Now()
	var mu sync.Mutex
	var reads int
	m := &measurer{cfg: Config{Warmup: 2 * time.Second, Duration: 100 * time.Millisecond, Rate: 10000}}
	m.read = func() (reading, error) {
		r, err := readNow()
		r.sys = sysCPU{System: r.at.Sub(epoch), Softirq: r.at.Sub(epoch)}
		mu.Lock()
		reads++
		mu.Unlock()
		return r, err
	}
	s, _, err := m.rr(context.Background(), tp, "udp", 64)
	if err != nil {
		t.Fatal(err)
	}
	if reads != 2 {
		t.Errorf("the window took %d readings, want 2: its start and its end", reads)
	}
	window := s.Seconds * 1e9
	for name, got := range map[string]float64{
		"softirq": s.SoftirqNs * float64(s.Received),
		"kernel":  s.KernelNs * float64(s.Received) / 2, // system + softirq
	} {
		if math.Abs(got-window) > 1e-6*window {
			t.Errorf("%s CPU covers %v of clock, but the window is %v long", name,
				time.Duration(got), time.Duration(window))
		}
	}
}

// TestRREchoFailureReported: when the echo fails before any reply comes
// back, rr says why, with the echo's error that errors.Is can read, and
// reads it only once the echo has stopped. B has no way back to A (an
// unreachable route), so the echo's first reply fails with EHOSTUNREACH
// and the echo ends while the client is still warming up. rr used to read
// the echo's error while the echo's goroutine could still be writing it (a
// data race) and format it with %v.
func TestRREchoFailureReported(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	if err := tp.B.NS.Handle().RouteAdd(&netlink.Route{
		Dst:  &net.IPNet{IP: tp.A.IP().AsSlice(), Mask: net.CIDRMask(32, 32)},
		Type: unix.RTN_UNREACHABLE,
	}); err != nil {
		t.Fatal(err)
	}
	m := &measurer{cfg: Config{Warmup: 300 * time.Millisecond, Duration: 100 * time.Millisecond, Rate: 1000}}
	_, _, err := m.rr(context.Background(), tp, "udp", 64)
	if !errors.Is(err, unix.EHOSTUNREACH) {
		t.Errorf("rr with an echo that cannot answer: %v, want the echo's %v", err, unix.EHOSTUNREACH)
	}
}
