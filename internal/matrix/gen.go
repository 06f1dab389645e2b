package matrix

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
)

// generator feeds rx measurements.
type generator struct {
	name string
	// run sends until ctx ends and returns why it stopped early, if it did.
	run   func(ctx context.Context) error
	total func() uint64
	close func() error
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
	// Pinned like pinThread(0): to the first CPU this process may run on.
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		return nil, err
	}
	g, err := pktgen.NewFor(t.genAt, &pktgen.Options{Frame: frame, Chunk: 4096, Pin: len(cpus) > 1, CPU: cpus[0]})
	if err != nil {
		return nil, err
	}
	return &generator{
		name: "pktgen via " + t.genWhere,
		run: func(ctx context.Context) error {
			_, err := g.SendContext(ctx, 0)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
		total: g.Total,
		close: g.Close,
	}, nil
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
	return &generator{
		name: "AF_PACKET sender in A (" + t.genWhere + ")",
		run: func(ctx context.Context) error {
			unpin := pinThread(0)
			defer unpin()
			for ctx.Err() == nil {
				k, err := snd.send(time.Now().Add(2 * time.Millisecond))
				n.Add(k)
				if err != nil {
					return err
				}
			}
			return nil
		},
		total: n.Load,
		close: snd.close,
	}, nil
}
