package matrix

import (
	"errors"
	"testing"
	"time"

	"github.com/afxdp/afxdp/xsk"
)

// floodSocket is an AF_XDP socket whose RX ring is never empty: a
// receiver slower than its generator. After limit batches it fails, so
// that a receiver that ignores its deadline ends instead of hanging.
type floodSocket struct {
	batches, limit int
}

var errFloodNotLeft = errors.New("still receiving long after the deadline")

func (f *floodSocket) Receive(descs []xsk.Desc) (int, error) {
	if f.batches >= f.limit {
		return 0, errFloodNotLeft
	}
	f.batches++
	return len(descs), nil
}

func (f *floodSocket) Release([]xsk.Desc) error { return nil }
func (f *floodSocket) Wait(xsk.Events, time.Duration) (xsk.Events, error) {
	return xsk.Readable, nil
}
func (f *floodSocket) Stats() (xsk.Stats, error) { return xsk.Stats{}, nil }
func (f *floodSocket) Close() error              { return nil }

// TestXSKRecvKeepsDeadlineUnderFlood: the AF_XDP receiver stops at its
// deadline even when its RX ring never runs dry. It used to look at the
// deadline only when it found the ring empty, so under a generator faster
// than it the measured window of an afxdp rx cell ran on (0.46 s of a
// 0.1 s -duration on ptp) and the cell was measured over another span
// than its peers.
func TestXSKRecvKeepsDeadlineUnderFlood(t *testing.T) {
	f := &floodSocket{limit: 1000}
	x := &xskRecv{s: f, descs: make([]xsk.Desc, 64)}
	got, err := x.recv(0, time.Now().Add(-time.Millisecond))
	if err != nil {
		t.Fatalf("recv past its deadline: %v after %d batches (%d packets)", err, f.batches, got)
	}
	if f.batches != 1 || got != 64 {
		t.Errorf("recv past its deadline took %d batches, %d packets; want the one batch waiting", f.batches, got)
	}
	// A count to reach still stops at it.
	f = &floodSocket{limit: 1000}
	x = &xskRecv{s: f, descs: make([]xsk.Desc, 64)}
	if got, err := x.recv(100, time.Now().Add(time.Minute)); err != nil || got < 100 || f.batches != 2 {
		t.Errorf("recv(100) = %d, %v after %d batches; want 128 after 2", got, err, f.batches)
	}
}
