package app

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/testenv"
)

// TestRunEndsWhenGeneratorFails takes the generator's target (the host end)
// down before an rxdrop run on the built-in topology that has no duration:
// the generator's first send fails (ENETDOWN), and the run must end with
// that error rather than go on receiving nothing until interrupted. The
// bound is generous: this is a hang test, not a timing assertion.
func TestRunEndsWhenGeneratorFails(t *testing.T) {
	testenv.RequirePrivileged(t)
	topo := newTopology(t, &TopologyOptions{Generator: true, FrameLen: 64})
	testenv.SetLink(t, topo.Veth.Host, false)
	var c Config
	c.Defaults()
	c.Quiet = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testenv.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := RunOn(ctx, RxDrop, &c, topo, 0, &out)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatalf("the run went on for 30 s after its generator failed:\n%s", out.String())
	}
	if !errors.Is(err, unix.ENETDOWN) || !strings.Contains(err.Error(), "generator") {
		t.Fatalf("run whose generator's target is down: %v, want the generator's ENETDOWN\n%s", err, out.String())
	}
	t.Log(err)
}

// TestRunCancelledBeforeStart gives Run and RunOn a context that has
// already ended: they must say so, without starting the generator (an
// unpaced call of 2^20 frames into the topology) or reporting a window of
// nothing as a run.
func TestRunCancelledBeforeStart(t *testing.T) {
	testenv.RequirePrivileged(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var c Config
	c.Defaults()
	var out testenv.Buffer
	if r, err := Run(ctx, RxDrop, &c, &out); r != nil || !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context = %v, %v; want no result and context.Canceled\n%s", r, err, out.String())
	}
	topo := newTopology(t, &TopologyOptions{Generator: true, FrameLen: 64})
	for _, kind := range []Kind{RxDrop, TxOnly, L2Fwd} {
		r, err := RunOn(ctx, kind, &c, topo, 0, &out)
		if r != nil || !errors.Is(err, context.Canceled) {
			t.Errorf("RunOn(%v) with a cancelled context = %v, %v; want no result and context.Canceled\n%s", kind, r, err, out.String())
		}
		t.Log(err)
	}
	if n := topo.Gen.Total(); n != 0 {
		t.Errorf("the generator sent %d frames for runs that never started", n)
	}
}

// TestNewTopologyNilOptions builds a topology from nil options, which
// mean the zero value (a bare veth pair), rather than panicking.
func TestNewTopologyNilOptions(t *testing.T) {
	testenv.RequirePrivileged(t)
	var topo *Topology
	testenv.NoPanic(t, "NewTopology(nil)", func() {
		var err error
		if topo, err = NewTopology(nil); err != nil {
			t.Error(err)
		}
	})
	if topo == nil {
		return
	}
	if topo.Veth == nil || topo.Gen != nil || topo.Sink != nil || topo.PeerSink != nil {
		t.Errorf("NewTopology(nil) = %+v, want a veth pair and nothing else", topo)
	}
	if err := topo.Close(); err != nil {
		t.Error(err)
	}
}

// TestTopologyCloseTwice makes the first Close of a topology fail (a
// failure injected after everything is removed, since no real part fails
// to close on demand): the first Close reports it and still removes
// everything, and a second Close returns nil, as the doc says, instead of
// reporting the first one's failure again.
func TestTopologyCloseTwice(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	topo, err := NewTopology(&TopologyOptions{Generator: true, FrameLen: 64, HostSink: true})
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected close failure")
	topo.closeFail = injected
	if err := topo.Close(); !errors.Is(err, injected) {
		t.Fatalf("first Close: %v; want the injected failure", err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Errorf("a failed Close left things open: before %+v, after %+v", before, after)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v; want nil", err)
	}
}
