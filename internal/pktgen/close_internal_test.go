package pktgen

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/afxdp/afxdp/internal/testenv"
)

// failingLink is a real bpf_link whose Close closes it and then reports
// a failure: closing a link fd does not fail on demand.
type failingLink struct {
	link.Link
	err error
}

func (l failingLink) Close() error { return errors.Join(l.Link.Close(), l.err) }

// TestSinkCloseFailsOnce makes a sink's Close fail: of Closes called at
// the same time, one reports the failure and the others return nil once
// it is done, as does a Close after them, instead of every call
// reporting the first one's failure again.
func TestSinkCloseFailsOnce(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s, err := AttachSink(v.Peer, Drop)
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected link close failure")
	s.lnk = failingLink{Link: s.lnk, err: injected}
	err = testenv.FailsOnce(t, "Close", 8, s.Close)
	if !errors.Is(err, injected) {
		t.Errorf("Close: %v; want the injected failure", err)
	}
	if s.prog.FD() >= 0 {
		t.Error("program still loaded after a Close whose link failed to close")
	}
}

// TestGeneratorCloseFailsOnce is TestSinkCloseFailsOnce for a
// generator, whose link to the resident namespace's loopback fails to
// close: everything is closed all the same.
func TestGeneratorCloseFailsOnce(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	g, err := NewFor(v.Host, &Options{Frame: make([]byte, 60)})
	if err != nil {
		t.Fatal(err)
	}
	if g.resident == nil {
		g.Close()
		t.Fatalf("generator not resident: %v", g.ResidentErr())
	}
	injected := errors.New("injected link close failure")
	g.resident = failingLink{Link: g.resident, err: injected}
	err = testenv.FailsOnce(t, "Close", 8, g.Close)
	if !errors.Is(err, injected) {
		t.Errorf("Close: %v; want the injected failure", err)
	}
	if g.prog.FD() >= 0 || g.state.FD() >= 0 || g.devmap.FD() >= 0 {
		t.Error("program or maps still open after a Close whose link failed to close")
	}
}
