package matrix

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
)

// genChunk is pktgen's frames per BPF_PROG_RUN call: small calls cost a
// page pool setup each (256 frames a call lose a fifth of the rate), and
// the generator's count moves only when a call ends.
const genChunk = 4096

// generator feeds rx measurements.
type generator struct {
	name string
	// run sends until ctx ends and returns why it stopped early, if it did.
	run   func(ctx context.Context) error
	total func() uint64
	close func() error

	// marks are the frames offered so far at the end of each of run's
	// calls, from its start: the count is exact only there (pktgen's
	// moves a whole call of frames at once).
	mu    sync.Mutex
	marks []genMark
}

type genMark struct {
	at    time.Time
	total uint64
}

// mark records that n frames were offered by now.
func (g *generator) mark(n uint64) {
	g.mu.Lock()
	g.marks = append(g.marks, genMark{time.Now(), n})
	g.mu.Unlock()
}

// rate is the frames offered per second between the marks that enclose
// from..to most closely: the last one at or before from and the first at
// or after to (or the last there is). Counts read at from and to instead
// would be off by up to a call of frames at either end: more than a
// short window holds.
func (g *generator) rate(from, to time.Time) float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.marks) < 2 {
		return 0
	}
	i, j := 0, len(g.marks)-1
	for k, m := range g.marks {
		if !m.at.After(from) {
			i = k
		}
	}
	for k := len(g.marks) - 1; k > i; k-- {
		if !g.marks[k].at.Before(to) {
			j = k
		}
	}
	a, b := g.marks[i], g.marks[j]
	if d := b.at.Sub(a.at); d > 0 && b.total >= a.total {
		return float64(b.total-a.total) / d.Seconds()
	}
	return 0
}

// newGenerator returns pktgen where it can feed the topology, else an
// AF_PACKET sender in A.
func newGenerator(t *topo, size int) (*generator, error) {
	if t.genSender {
		return newSenderGenerator(t, size)
	}
	frame, err := t.genFrame(size)
	if err != nil {
		return nil, err
	}
	pg, err := pktgen.NewFor(t.genAt, &pktgen.Options{Frame: frame, Chunk: genChunk})
	if err != nil {
		return nil, err
	}
	g := &generator{name: "pktgen via " + t.genWhere, total: pg.Total, close: pg.Close}
	g.run = func(ctx context.Context) error {
		// Pinned once for all its calls (pktgen's Pin would pin and
		// unpin around each) to the first CPU this process may run on.
		unpin := pinThread(0)
		defer unpin()
		// A call at a time, to mark each one's end.
		g.mark(pg.Total())
		for {
			_, err := pg.SendContext(ctx, genChunk)
			g.mark(pg.Total())
			if errors.Is(err, context.Canceled) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	return g, nil
}

func newSenderGenerator(t *topo, size int) (*generator, error) {
	frame := make([]byte, frameLen(size))
	if _, err := t.requestFrame(frame, payloadLen(size)); err != nil {
		return nil, err
	}
	var snd sender
	if err := t.A.Do(func() (err error) {
		snd, _, err = newSender("afpacket", t, frame, payloadLen(size))
		return err
	}); err != nil {
		return nil, err
	}
	var n atomic.Uint64
	g := &generator{
		name:  "AF_PACKET sender in A (" + t.genWhere + ")",
		total: n.Load,
		close: snd.close,
	}
	g.run = func(ctx context.Context) error {
		unpin := pinThread(0)
		defer unpin()
		g.mark(0)
		for ctx.Err() == nil {
			k, err := snd.send(time.Now().Add(2 * time.Millisecond))
			g.mark(n.Add(k))
			if err != nil {
				return err
			}
		}
		return nil
	}
	return g, nil
}
