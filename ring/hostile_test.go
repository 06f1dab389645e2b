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

// TestWithdrawHostileConsumer withdraws from rings whose consumer index
// says it took more than was submitted, or went back further than the
// ring has slots: no entry can be named as not taken, so none is handed
// back, instead of the billions that the index difference counts, and the
// ring is left empty and usable.
func TestWithdrawHostileConsumer(t *testing.T) {
	for _, cons := range []uint32{5, 1<<32 - 12, 1 << 31} {
		p, _, mem := pair[uint64](t, 8, 1<<32-2)
		if n := p.Produce([]uint64{1, 2, 3}); n != 3 {
			t.Fatalf("produced %d", n)
		}
		setIndices(mem, 1, 1+cons) // the producer index is 1 after the wrap
		calls := 0
		n := p.Withdraw(func(uint64) {
			if calls++; calls > 8 {
				t.Fatalf("consumer index %#x: Withdraw handed back more entries than the ring's 8 slots", 1+cons)
			}
		})
		if n != 0 || calls != 0 {
			t.Fatalf("consumer index %#x: withdrew %d entries (%d calls), want none", 1+cons, n, calls)
		}
		// The consumer starts over where the ring was left: empty.
		c, err := NewConsumer[uint64](mem, layout, 8)
		if err != nil {
			t.Fatal(err)
		}
		if n := c.Available(8); n != 0 {
			t.Fatalf("consumer index %#x: %d entries after Withdraw", 1+cons, n)
		}
		if _, n := p.Reserve(16); n != 8 {
			t.Fatalf("consumer index %#x: reserved %d slots of 8 after Withdraw", 1+cons, n)
		}
		p.Cancel(8)
		if n := p.Produce([]uint64{4, 5}); n != 2 {
			t.Fatalf("consumer index %#x: produced %d after Withdraw", 1+cons, n)
		}
		got := make([]uint64, 8)
		if n := c.Consume(got); n != 2 || got[0] != 4 || got[1] != 5 {
			t.Fatalf("consumer index %#x: consumed %v after Withdraw", 1+cons, got[:n])
		}
	}
}

// TestIndicesJumpingAhead has the other side move its index further than
// it honestly can: a consumer index ahead of the producer's, a producer
// index more than the ring's size ahead of the consumer's. A batch still
// never takes more slots or entries than the ring has, so that a
// producer does not write one slot twice in a batch and a consumer does
// not report entries the ring cannot hold.
func TestIndicesJumpingAhead(t *testing.T) {
	const size = 8
	for _, jump := range []uint32{1, size, 1 << 31, 1<<32 - size - 1} {
		p, _, mem := pair[uint64](t, size, 1<<32-3)
		if n := p.Produce([]uint64{1, 2}); n != 2 {
			t.Fatalf("produced %d", n)
		}
		setIndices(mem, 1<<32-1, 1<<32-1+jump) // the consumer runs ahead
		src := make([]uint64, 4*size)
		if _, n := p.Reserve(4 * size); n > size {
			t.Errorf("consumer %d ahead: reserved %d slots of %d", jump, n, size)
		}
		p.Cancel(4 * size)
		if n := p.Produce(src); n > size {
			t.Errorf("consumer %d ahead: produced %d entries into %d slots", jump, n, size)
		}

		_, c, mem := pair[uint64](t, size, 1<<32-3)
		start := uint32(1<<32 - 3)
		setIndices(mem, start+size+jump, start) // the producer runs ahead
		if _, n := c.Peek(4 * size); n > size {
			t.Errorf("producer %d ahead: peeked %d entries of %d slots", size+jump, n, size)
		}
		c.Cancel(4 * size)
		dst := make([]uint64, 4*size)
		if n := c.Consume(dst); n > size {
			t.Errorf("producer %d ahead: consumed %d entries from %d slots", size+jump, n, size)
		}
	}
}

// TestPendingHostileConsumer has the consumer's index say that it took more
// than was submitted, or went back further than the ring has slots. No
// submitted entry is then known to be waiting, as Withdraw also judges, so
// Pending is zero, not the billions the index difference counts.
func TestPendingHostileConsumer(t *testing.T) {
	const size = 8
	for _, cons := range []uint32{1, 5, 1 << 31, 1<<32 - size - 4} {
		p, _, mem := pair[uint64](t, size, 1<<32-2)
		if n := p.Produce([]uint64{1, 2, 3}); n != 3 {
			t.Fatalf("produced %d", n)
		}
		if n := p.Pending(); n != 3 {
			t.Fatalf("pending %d, want 3", n)
		}
		setIndices(mem, 1, 1+cons) // the producer index is 1 after the wrap
		p.Free(size)               // reloads the consumer's index
		if n := p.Pending(); n != 0 {
			t.Errorf("consumer index %#x, producer index 1: pending %d, want 0", 1+cons, n)
		}
	}
}
