package ring

import (
	"testing"

	"github.com/afxdp/afxdp/internal/testenv"
)

// TestZeroValues calls every method of a Producer and a Consumer that
// NewProducer and NewConsumer did not make: they act as rings of no slots.
func TestZeroValues(t *testing.T) {
	var p Producer[Desc]
	testenv.NoPanic(t, "Producer", func() {
		if n := p.Free(1); n != 0 {
			t.Errorf("Free: %d", n)
		}
		if _, n := p.Reserve(4); n != 0 {
			t.Errorf("Reserve: %d", n)
		}
		p.Submit(4)
		p.Cancel(4)
		if n := p.Produce(make([]Desc, 3)); n != 0 {
			t.Errorf("Produce: %d", n)
		}
		if n := p.Withdraw(func(Desc) { t.Error("Withdraw found an entry") }); n != 0 {
			t.Errorf("Withdraw: %d", n)
		}
		if p.NeedWakeup() || p.Pending() != 0 || p.Size() != 0 {
			t.Errorf("NeedWakeup %v, Pending %d, Size %d", p.NeedWakeup(), p.Pending(), p.Size())
		}
	})
	var c Consumer[uint64]
	testenv.NoPanic(t, "Consumer", func() {
		if n := c.Available(1); n != 0 {
			t.Errorf("Available: %d", n)
		}
		if _, n := c.Peek(4); n != 0 {
			t.Errorf("Peek: %d", n)
		}
		c.Release(4)
		c.Cancel(4)
		if n := c.Consume(make([]uint64, 3)); n != 0 {
			t.Errorf("Consume: %d", n)
		}
		if c.NeedWakeup() || c.Size() != 0 {
			t.Errorf("NeedWakeup %v, Size %d", c.NeedWakeup(), c.Size())
		}
	})
}
