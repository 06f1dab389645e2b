package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRunAccountsForEveryFrame runs the examples' receiving loops on a
// generator-fed veth pair and checks the closing account against the
// kernel's own counters: the generator stops before the loop, so every
// frame the peer end took in was received or dropped by the socket, and
// the drops are the ones veth counted. The nap case sleeps far longer
// than its small rings last, so that drops do happen; the threaded case
// makes veth itself drop, its ring full, and counts those too.
func TestRunAccountsForEveryFrame(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name      string
		kind      Kind
		wait      WaitMode
		ring      int
		nap       time.Duration
		wantDrops bool
		threaded  bool // the peer's NAPI poll in a kernel thread, which falls behind the generator
	}{
		{name: "rxdrop spin", kind: RxDrop, wait: WaitSpin, ring: 2048},
		{name: "rxdrop nap overflowing", kind: RxDrop, wait: WaitNap, ring: 256, nap: 20 * time.Millisecond, wantDrops: true},
		{name: "l2fwd poll", kind: L2Fwd, wait: WaitPoll, ring: 2048},
		{name: "rxdrop spin threaded", kind: RxDrop, wait: WaitSpin, ring: 2048, threaded: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo := newTopology(t, &TopologyOptions{Generator: true, FrameLen: 64, HostSink: tc.kind == L2Fwd})
			var c Config
			c.Defaults()
			c.Wait, c.RingSize, c.CPU = tc.wait, tc.ring, 1
			if tc.nap > 0 {
				c.Nap = tc.nap
			}
			if tc.threaded {
				if err := SetVethThreadedNAPI(topo.Veth.Peer, true); err != nil {
					t.Fatal(err)
				}
			}
			// -d counts from the start of the loop, not the opening
			// of the socket, which a loaded machine makes slow.
			c.Duration = 1500 * time.Millisecond
			var out bytes.Buffer
			r, err := RunOn(context.Background(), tc.kind, &c, topo, 0, &out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			a := r.Account
			if a == nil {
				t.Fatalf("no account\n%s", out.String())
			}
			peer, err := pktgen.ReadCounters(topo.Veth.Peer)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("sent %d, peer took in %d, veth dropped %d, received %d, dropped %d (veth rx_dropped %d)",
				a.Sent, a.PeerIn, a.VethDropped, a.Received, a.Dropped, peer.RxDropped)
			if a.Sent < 100000 {
				t.Errorf("the generator sent %d frames in 1.5 s; want at least 100000", a.Sent)
			}
			// veth's own drops (its ring full when the peer's NAPI poll
			// falls behind on a loaded machine) are counted, not lost.
			if a.PeerIn+a.VethDropped != a.Sent {
				t.Errorf("the peer end took in %d frames and veth dropped %d of the %d sent", a.PeerIn, a.VethDropped, a.Sent)
			}
			if u := a.Unaccounted(); u != 0 {
				t.Errorf("%d frames unaccounted: took in %d, received %d, dropped %d", u, a.PeerIn, a.Received, a.Dropped)
			}
			// The peer's rx_dropped counts both the socket's drops (a
			// failed redirect) and veth's.
			if a.Dropped+a.VethDropped != peer.RxDropped {
				t.Errorf("socket dropped %d and veth %d, veth counted %d drops", a.Dropped, a.VethDropped, peer.RxDropped)
			}
			if tc.threaded && a.VethDropped == 0 {
				// The generator fills veth's 256-frame ring far faster
				// than a NAPI thread that has to be scheduled empties it.
				t.Errorf("veth dropped nothing with the peer's NAPI threaded\n%s", out.String())
			}
			if want := fmt.Sprintf("veth dropped %d", a.VethDropped); a.VethDropped > 0 && !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out.String())
			}
			if tc.wantDrops && a.Dropped == 0 {
				t.Errorf("no drops with a %v nap over rings of %d", tc.nap, tc.ring)
			}
			if tc.kind == L2Fwd {
				host, err := topo.HostReceived()
				if err != nil {
					t.Fatal(err)
				}
				if r.Stats.TxPackets != a.Received || host != a.Received {
					t.Errorf("l2fwd: received %d, queued %d for transmit, %d arrived back at the host end",
						a.Received, r.Stats.TxPackets, host)
				}
			}
			want := "every frame accounted for"
			if !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out.String())
			}
		})
	}
}

// TestRunWithGenPPSEndsPromptly runs rxdrop on the built-in topology with
// a generator paced to 20,000 frames per second for 500 ms: the run must
// end within a few seconds, not once the generator's call of 2^20 frames
// (52 s at that rate) is through, and Ctrl-C (the same context) likewise.
// The bound is generous: this is a hang test, not a timing assertion.
func TestRunWithGenPPSEndsPromptly(t *testing.T) {
	testenv.RequirePrivileged(t)
	const pps = 20000
	var c Config
	c.Defaults()
	c.GenPPS, c.Wait = pps, WaitPoll
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	r, err := Run(ctx, RxDrop, &c, &out)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if took > 10*time.Second {
		t.Fatalf("a 500 ms run at %d pps took %v to end\n%s", pps, took, out.String())
	}
	a := r.Account
	if a == nil || a.Sent == 0 || float64(a.Sent) > 2*pps*took.Seconds() {
		t.Fatalf("account %+v after %v at %d pps\n%s", a, took, pps, out.String())
	}
	if r.CPU < 0 || r.GenCPU <= 0 {
		t.Errorf("CPU %v, generator's %v: want the generator's positive and the rest not negative", r.CPU, r.GenCPU)
	}
	t.Logf("ended after %v; the generator sent %d frames", took, a.Sent)
}

// TestRunDurationCountsFromTheLoop runs txonly on the built-in topology
// with Duration set and a context that does not end: the run must end by
// itself, its window at least Duration long, however long the veth pair
// and the socket took to set up (with 2^20-entry rings, 25 s here: a
// duration that counted them measured nothing).
func TestRunDurationCountsFromTheLoop(t *testing.T) {
	testenv.RequirePrivileged(t)
	var c Config
	c.Defaults()
	c.Duration = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	r, err := Run(ctx, TxOnly, &c, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("a run of Duration %v lasted until its context ended\n%s", c.Duration, out.String())
	}
	if r.Elapsed < c.Duration || r.TxPackets == 0 {
		t.Errorf("a run of Duration %v measured %d packets in %v\n%s", c.Duration, r.TxPackets, r.Elapsed, out.String())
	}
}

// TestRunRateLines runs each kind for one second on a generator-fed
// topology and checks its per-second report: one line for the one full
// second (the line that -d ended with its last tick was lost about half
// the time), and an offered rate that is the generator's over that
// second. The offered figure was the generator's count, which moves once
// per call of 2^20 frames, over the time since the start: "offered 0 pps"
// for the first seconds at rates below a million frames a second (as of
// this slow generator's), and otherwise often less than was received. What the loop received in a second
// was offered in it, or before it and waiting in the veth pair's and the
// socket's rings: the check allows for those rings and for the
// rounding of the printed rates, and assumes nothing about timing.
func TestRunRateLines(t *testing.T) {
	testenv.RequirePrivileged(t)
	// A generator that flushes every frame on its own, of 1500 bytes:
	// about 350 kpps here, 3 s for a call of 2^20 frames.
	topo := newTopology(t, &TopologyOptions{Generator: true, FrameLen: 1500, GenBatch: 1, HostSink: true})
	line := regexp.MustCompile(`^\s*\d+\.\ds  `)
	rxRate := regexp.MustCompile(`  rx ([\d.]+ [kM]?pps)`)
	offeredRate := regexp.MustCompile(`\(offered ([\d.]+ [kM]?pps)(?: on average)?\)`)
	for _, kind := range []Kind{RxDrop, L2Fwd, TxOnly} {
		var c Config
		c.Defaults()
		c.RingSize, c.Duration = 512, time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var out bytes.Buffer
		_, err := RunOn(ctx, kind, &c, topo, 0, &out)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", kind, err, out.String())
		}
		var lines []string
		for _, l := range strings.Split(out.String(), "\n") {
			if line.MatchString(l) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 {
			t.Errorf("%s: %d per-second lines in a run of -d 1s; want 1\n%s", kind, len(lines), out.String())
		}
		for _, l := range lines {
			if kind == TxOnly {
				if offeredRate.MatchString(l) {
					t.Errorf("%s: an offered rate without a generator: %q", kind, l)
				}
				continue
			}
			rx, offered := parseRate(t, rxRate.FindStringSubmatch(l)), parseRate(t, offeredRate.FindStringSubmatch(l))
			// The rings' frames over a second at the least, and the
			// rounding of two rates printed to three digits.
			slack := float64(c.RingSize+256+c.Batch) + 0.01*max(rx, offered)
			if rx == 0 || rx > offered+slack {
				t.Errorf("%s: received %.0f pps, offered %.0f pps: %q\n%s", kind, rx, offered, l, out.String())
			}
		}
		t.Logf("%s:\n%s", kind, out.String())
	}
}

// parseRate reads the rate that FormatRate printed in m[1] (no match:
// none, 0).
func parseRate(t *testing.T, m []string) float64 {
	t.Helper()
	if m == nil {
		return 0
	}
	s := m[1]
	var v float64
	var unit string
	if _, err := fmt.Sscanf(s, "%g %s", &v, &unit); err != nil {
		t.Fatalf("rate %q: %v", s, err)
	}
	return v * map[string]float64{"pps": 1, "kpps": 1e3, "Mpps": 1e6}[unit]
}

// TestRunTxAccount runs the sending kinds on the built-in topology for a
// few milliseconds, a window in which some of the frames queued are still
// on their way to the host end when it closes, and checks the closing
// account against the host end's own count: every frame the socket
// queued was completed and arrived, and the report says so rather than
// calling them lost.
func TestRunTxAccount(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, kind := range []Kind{TxOnly, L2Fwd} {
		t.Run(kind.String(), func(t *testing.T) {
			var c Config
			c.Defaults()
			c.Duration = 100 * time.Millisecond // long enough that a loop a busy machine starts late still sends
			var out bytes.Buffer
			r, err := Run(context.Background(), kind, &c, &out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			a := r.TxAccount
			if a == nil {
				t.Fatalf("no transmit account\n%s", out.String())
			}
			if a.Sent == 0 || a.Sent != r.Stats.TxPackets || a.Completed != a.Sent || a.HostIn != a.Sent {
				t.Errorf("account %+v, socket queued %d\n%s", *a, r.Stats.TxPackets, out.String())
			}
			if s := out.String(); !strings.Contains(s, "every frame arrived") || strings.Contains(s, "lost") {
				t.Errorf("report:\n%s", s)
			}
		})
	}
}

// TestRunTxAccountCountsDeviceDrops runs txonly on the built-in topology
// with the host end down, so that the peer end, where the socket is, has
// no carrier and drops every frame the kernel tries to send (the kernel
// still completes them, as if sent). The account must count those frames
// as dropped by the device, as many as the interface's tx_dropped, rather
// than as sent, and the report must say so rather than call them lost on
// the way.
func TestRunTxAccountCountsDeviceDrops(t *testing.T) {
	testenv.RequirePrivileged(t)
	var c Config
	c.Defaults()
	c.Duration = 20 * time.Millisecond
	topo := newTopology(t, &TopologyOptions{FrameLen: c.PacketSize, HostSink: true})
	testenv.SetLink(t, topo.Veth.Host, false)
	before, err := pktgen.ReadCounters(topo.Veth.Peer)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r, err := RunOn(context.Background(), TxOnly, &c, topo, 0, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	after, err := pktgen.ReadCounters(topo.Veth.Peer)
	if err != nil {
		t.Fatal(err)
	}
	a := r.TxAccount
	if a == nil {
		t.Fatalf("no transmit account\n%s", out.String())
	}
	dropped := after.TxDropped - before.TxDropped
	t.Logf("account %+v; interface tx_dropped %d, tx_packets %d", *a, dropped, after.TxPackets-before.TxPackets)
	if a.Sent == 0 || a.Completed != a.Sent || a.Dropped != a.Sent || a.HostIn != 0 ||
		r.Stats.TxDropped != a.Dropped || dropped != a.Dropped {
		t.Errorf("account %+v, socket statistics %+v, interface tx_dropped %d: want every frame queued completed and dropped, counted alike by both",
			*a, r.Stats, dropped)
	}
	s := out.String()
	for _, want := range []string{fmt.Sprintf("the device dropped %d (not sent)", a.Dropped), "every frame accounted for",
		fmt.Sprintf("tx dropped        %d", a.Dropped)} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "lost") {
		t.Errorf("report calls frames the device dropped lost:\n%s", s)
	}
}

// TestRunReportsDeletedInterface deletes the interface under a running
// rxdrop loop: the run ends at once with the socket's error (not at the
// end of its duration), and prints the socket statistics before it, as
// a run that ends well does.
func TestRunReportsDeletedInterface(t *testing.T) {
	testenv.RequirePrivileged(t)
	topo, err := NewTopology(&TopologyOptions{FrameLen: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	var c Config
	c.Defaults()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out testenv.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := RunOn(ctx, RxDrop, &c, topo, 0, &out)
		done <- err
	}()
	// Once the socket is open (its line printed), not after a guess at
	// how long that takes: on a busy machine, opening it (loading and
	// attaching the program, RCU grace periods) can take longer than
	// any fixed wait, and the run would then fail to open the socket
	// on a deleted interface instead.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "rxdrop on "); time.Sleep(time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("the run ended before the interface was deleted: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("the run did not open its socket in 30 s:\n%s", out.String())
		}
	}
	// The link only: the namespaces stay until topo.Close.
	err = topo.Veth.Host.Do(func() error {
		l, err := netlink.LinkByName(topo.Veth.Host.Name)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatal("the run went on after its interface was deleted")
	}
	if !errors.Is(err, unix.ENXIO) {
		t.Fatalf("run on a deleted interface: %v, want ENXIO\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "stopped by an error") || !strings.Contains(out.String(), "socket statistics:") {
		t.Errorf("no statistics before the error:\n%s", out.String())
	}
}

// newTopology builds a topology for t and closes it when t ends, failing t
// if Close fails.
func newTopology(t *testing.T, o *TopologyOptions) *Topology {
	t.Helper()
	topo, err := NewTopology(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	})
	return topo
}
