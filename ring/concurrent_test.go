package ring

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// TestConcurrentReservePeek runs a producer goroutine that reserves, sets,
// submits and cancels against a consumer goroutine that peeks, reads,
// releases and un-peeks, as the umem and xsk packages drive the rings,
// with the indices starting just below 2^32 so that they wrap while both
// run. The consumer checks that it sees every submitted entry once, in
// order, and nothing that was cancelled or is not yet submitted; the
// producer writes a poison value into every slot it reserves before the
// real one, so that an entry read before it is published, or a slot
// reused before it is released, shows up. Run it under -race.
func TestConcurrentReservePeek(t *testing.T) {
	total := 500_000
	if testing.Short() || raceEnabled {
		total = 20_000
	}
	const poison = ^uint64(0)
	for _, size := range []uint32{1, 2, 16, 256} {
		for _, start := range []uint32{1<<32 - 7, ^uint32(0) - 3*size + 1, 1 << 31} {
			p, c, _ := pair[uint64](t, size, start)
			var wg sync.WaitGroup
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(size), uint64(start)))
				next := uint64(0)
				for next < uint64(total) {
					want := uint32(1 + rng.IntN(int(2*size)))
					idx, n := p.Reserve(want)
					for i := range n {
						p.Set(idx+i, poison)
					}
					for i := range n {
						p.Set(idx+i, next+uint64(i))
					}
					// Submit some, cancel the rest, now and then.
					k := n
					if n > 0 && rng.IntN(4) == 0 {
						k = uint32(rng.IntN(int(n) + 1))
					}
					k = min(k, uint32(uint64(total)-next))
					p.Submit(k)
					p.Cancel(n - k)
					next += uint64(k)
				}
			})
			rng := rand.New(rand.NewPCG(uint64(size), 7))
			var got uint64
			for got < uint64(total) {
				idx, n := c.Peek(uint32(1 + rng.IntN(int(2*size))))
				if n > size {
					t.Fatalf("size %d start %#x: peeked %d entries", size, start, n)
				}
				for i := range n {
					if v := c.At(idx + i); v != got+uint64(i) {
						t.Fatalf("size %d start %#x: entry %d is %#x", size, start, got+uint64(i), v)
					}
				}
				// Release some, un-peek the rest, now and then.
				k := n
				if n > 0 && rng.IntN(4) == 0 {
					k = uint32(rng.IntN(int(n) + 1))
				}
				c.Release(k)
				c.Cancel(n - k)
				got += uint64(k)
			}
			wg.Wait()
			if n := c.Available(size); n != 0 {
				t.Fatalf("size %d start %#x: %d entries left after all %d", size, start, n, total)
			}
			if free := p.Free(size); free != size {
				t.Fatalf("size %d start %#x: producer sees %d of %d slots free at the end", size, start, free, size)
			}
		}
	}
}
