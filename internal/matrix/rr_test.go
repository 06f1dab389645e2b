package matrix

import (
	"context"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
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
// the scheduler did. Reading the CPU after the wait for late replies
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

// pausedEcho answers as the echo it wraps does until pause is closed, and
// then not at all until rr stops it: an echo starved of the CPU from then
// on, whose requests wait in B's socket (or overflow it, counted).
type pausedEcho struct {
	rrEcho
	pause <-chan struct{}
}

func (e pausedEcho) serve(stop <-chan struct{}) (uint64, error) {
	until := make(chan struct{})
	go func() {
		select {
		case <-e.pause:
		case <-stop:
		}
		close(until)
	}()
	n, err := e.rrEcho.serve(until)
	if err != nil {
		return n, err
	}
	<-stop
	k, err := e.rrEcho.serve(stop)
	return n + k, err
}

// pausedClient receives as the client it wraps does until pause is
// closed, and then takes nothing until resume is closed: a client starved
// of the CPU, whose replies wait in A's socket (or overflow it, counted).
type pausedClient struct {
	rrClient
	pause, resume <-chan struct{}
}

func (c pausedClient) recv(timeout time.Duration, fn func([]byte)) error {
	select {
	case <-c.pause:
		select {
		case <-c.resume:
		default:
			<-c.resume
			return nil // the pause took the call's time
		}
	default:
	}
	return c.rrClient.recv(timeout, fn)
}

// TestRRStarvedEndLosesNothingUncounted: an echo or a client that gets no
// CPU from the start of the window until after the sending ends (as on a
// loaded machine) leaves requests in B's socket or replies in A's. rr
// waits for them and both ends take what their sockets hold when they are
// stopped, so that all that is lost is what a drop counter counts. rr
// used to wait a fixed 200 ms after the sending, then stop the receiver
// and the echo at once: what they had not yet taken was lost with no
// counter to say so (and here, no reply of the window counted at all).
func TestRRStarvedEndLosesNothingUncounted(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	for _, end := range []string{"echo", "client"} {
		for _, path := range Paths {
			t.Run(end+"/"+path, func(t *testing.T) {
				pause, resume := make(chan struct{}), make(chan struct{})
				m := &measurer{cfg: Config{Warmup: 2 * time.Second, Duration: 100 * time.Millisecond, Rate: 20000}}
				opened := false
				m.read = func() (reading, error) {
					if !opened {
						// The window opens: the starving starts. The
						// client is starved until well after rr's old
						// wait for stragglers.
						opened = true
						close(pause)
						time.AfterFunc(m.cfg.Duration+500*time.Millisecond, func() { close(resume) })
					}
					return readNow()
				}
				if end == "echo" {
					m.wrapEcho = func(e rrEcho) rrEcho { return pausedEcho{rrEcho: e, pause: pause} }
				} else {
					m.wrapClient = func(c rrClient) rrClient { return pausedClient{rrClient: c, pause: pause, resume: resume} }
				}
				s, _, err := m.rr(context.Background(), tp, path, 64)
				if err != nil {
					t.Fatal(err)
				}
				var counted uint64
				for _, v := range s.Drops {
					counted += v
				}
				t.Logf("sent %d, received %d, lost %d; drops %v", s.Sent, s.Received, s.Lost, s.Drops)
				if counted < s.Lost {
					t.Errorf("lost %d, but the drop counters account for %d: %v", s.Lost, counted, s.Drops)
				}
			})
		}
	}
}

// countingClient counts the requests sent after ctx ended.
type countingClient struct {
	rrClient
	ctx   context.Context
	after *atomic.Int64
}

func (c countingClient) send(p []byte) error {
	if c.ctx.Err() != nil {
		c.after.Add(1)
	}
	return c.rrClient.send(p)
}

// tricklingClient, from the moment pause is closed, hands over the
// replies it waits for one per trickle, and those it takes without
// waiting (as rr's receiver does when it is stopped) at once: a client
// whose late replies keep coming in, so that rr's wait for them lasts
// until stragglerMax unless the interrupt ends it.
type tricklingClient struct {
	rrClient
	pause   <-chan struct{}
	trickle time.Duration
}

func (c tricklingClient) recv(timeout time.Duration, fn func([]byte)) error {
	if timeout <= 0 {
		return c.rrClient.recv(timeout, fn)
	}
	return c.rrClient.recv(timeout, func(p []byte) {
		select {
		case <-c.pause:
			time.Sleep(c.trickle)
		default:
		}
		fn(p)
	})
}

// TestRRCancelStopsPromptly: rr interrupted while it waits for the next
// request's time (a second at -rate 1) or for late replies stops there
// and reports the interrupt. rr used to sleep through both: it sent one
// more request after the interrupt and returned when that request was
// due, and an interrupt during the wait for late replies was not
// reported at all. Each case checks that rr returned before the moment
// the wait would have ended by itself (the next request's time; the end
// of the longest wait for late replies, which replies coming in one by
// one keep going), not within some time of the interrupt: how long rr
// takes to close its sockets and stop its goroutines depends on how busy
// the machine is (half a second and more with six busy loops on two
// CPUs). A request sent after the interrupt fails the test whatever the
// timing.
func TestRRCancelStopsPromptly(t *testing.T) {
	testenv.RequirePrivileged(t)
	tp := buildT(t, "veth")
	for _, tc := range []struct {
		name string
		cfg  Config
		// at is the reading of the window (0: its start, 1: its end)
		// at which the interrupt is set off, 50 ms later.
		at int
		// wait is how long after that reading rr's wait would end
		// by itself.
		wait time.Duration
	}{
		{"pacing", Config{Warmup: 2 * time.Second, Duration: 10 * time.Second, Rate: 1}, 0, time.Second},
		{"stragglers", Config{Warmup: 2 * time.Second, Duration: 100 * time.Millisecond, Rate: 1000}, 1, stragglerMax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var mu sync.Mutex
			var cancelled, at time.Time
			var after atomic.Int64
			pause := make(chan struct{})
			m := &measurer{cfg: tc.cfg}
			reads := 0
			m.read = func() (reading, error) {
				r, err := readNow()
				if reads == 0 {
					// From the window on, replies come in one
					// every 100 ms, so that there are late
					// replies to wait for.
					close(pause)
				}
				if reads == tc.at {
					mu.Lock()
					at = r.at
					mu.Unlock()
					time.AfterFunc(50*time.Millisecond, func() {
						mu.Lock()
						cancelled = time.Now()
						mu.Unlock()
						cancel()
					})
				}
				reads++
				return r, err
			}
			m.wrapClient = func(c rrClient) rrClient {
				c = tricklingClient{rrClient: c, pause: pause, trickle: 100 * time.Millisecond}
				return countingClient{rrClient: c, ctx: ctx, after: &after}
			}
			_, _, err := m.rr(ctx, tp, "udp", 64)
			returned := time.Now()
			if !errors.Is(err, context.Canceled) {
				t.Errorf("rr interrupted: %v, want %v", err, context.Canceled)
			}
			if n := after.Load(); n > 0 {
				t.Errorf("rr sent %d requests after the interrupt", n)
			}
			mu.Lock()
			defer mu.Unlock()
			if cancelled.IsZero() {
				t.Fatal("rr returned before the interrupt")
			}
			t.Logf("rr returned %v after the interrupt", returned.Sub(cancelled))
			if end := at.Add(tc.wait); !returned.Before(end) {
				t.Errorf("rr returned %v after the interrupt, %v after its wait would have ended by itself: it waited it out",
					returned.Sub(cancelled), returned.Sub(end))
			}
		})
	}
}
