package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestRunAccountsForEveryFrame runs the examples' receiving loops on a
// generator-fed veth pair and checks the closing account against the
// kernel's own counters: the generator stops before the loop, so every
// frame the peer end took in was received or dropped by the socket, and
// the drops are the ones veth counted. The nap case sleeps far longer
// than its small rings last, so that drops do happen.
func TestRunAccountsForEveryFrame(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name      string
		kind      Kind
		wait      WaitMode
		ring      int
		nap       time.Duration
		wantDrops bool
	}{
		{name: "rxdrop spin", kind: RxDrop, wait: WaitSpin, ring: 2048},
		{name: "rxdrop nap overflowing", kind: RxDrop, wait: WaitNap, ring: 256, nap: 20 * time.Millisecond, wantDrops: true},
		{name: "l2fwd poll", kind: L2Fwd, wait: WaitPoll, ring: 2048},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topo, err := NewTopology(&TopologyOptions{Generator: true, FrameLen: 64, HostSink: tc.kind == L2Fwd})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := topo.Close(); err != nil {
					t.Error(err)
				}
			}()
			var c Config
			c.Defaults()
			c.Wait, c.RingSize, c.CPU = tc.wait, tc.ring, 1
			if tc.nap > 0 {
				c.Nap = tc.nap
			}
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			var out bytes.Buffer
			r, err := RunOn(ctx, tc.kind, &c, topo, 0, &out)
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
			t.Logf("sent %d, peer took in %d, received %d, dropped %d (veth rx_dropped %d)",
				a.Sent, a.PeerIn, a.Received, a.Dropped, peer.RxDropped)
			if a.Sent < 100000 {
				t.Errorf("the generator sent %d frames in 1.5 s; want at least 100000", a.Sent)
			}
			if a.PeerIn != a.Sent {
				t.Errorf("the peer end took in %d frames of the %d sent", a.PeerIn, a.Sent)
			}
			if u := a.Unaccounted(); u != 0 {
				t.Errorf("%d frames unaccounted: took in %d, received %d, dropped %d", u, a.PeerIn, a.Received, a.Dropped)
			}
			if a.Dropped != peer.RxDropped {
				t.Errorf("socket dropped %d, veth counted %d drops", a.Dropped, peer.RxDropped)
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
