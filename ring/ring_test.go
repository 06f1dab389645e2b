package ring

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// layout is a ring layout in plain Go memory like the kernel's: the three
// words, then the entries.
var layout = Offsets{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

func newMem[T Entry](size uint32) []byte {
	return make([]byte, int(layout.Desc)+int(size)*int(entrySize[T]()))
}

func setIndices(mem []byte, prod, cons uint32) {
	binary.NativeEndian.PutUint32(mem[layout.Producer:], prod)
	binary.NativeEndian.PutUint32(mem[layout.Consumer:], cons)
}

func pair[T Entry](t testing.TB, size, start uint32) (*Producer[T], *Consumer[T], []byte) {
	t.Helper()
	mem := newMem[T](size)
	setIndices(mem, start, start)
	p, err := NewProducer[T](mem, layout, size)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer[T](mem, layout, size)
	if err != nil {
		t.Fatal(err)
	}
	return p, c, mem
}

func TestNewValidates(t *testing.T) {
	good := newMem[Desc](8)
	tests := []struct {
		name string
		mem  []byte
		off  Offsets
		size uint32
		want string
	}{
		{"zero size", good, layout, 0, "ring size 0: must be a power of two"},
		{"not power of two", good, layout, 6, "ring size 6: must be a power of two"},
		{"too large", good, layout, 1 << 31, "must be a power of two between 1 and"},
		{"entries overflow", good, layout, 16, "16 entries of 16 bytes do not fit in 320 bytes"},
		{"producer outside", good, Offsets{Producer: 4096, Consumer: 64, Flags: 128, Desc: 192}, 8, "ring producer offset 4096: outside"},
		{"consumer misaligned", good, Offsets{Producer: 0, Consumer: 66, Flags: 128, Desc: 192}, 8, "ring consumer offset 66"},
		{"flags at the end", good, Offsets{Producer: 0, Consumer: 64, Flags: 318, Desc: 192}, 8, "ring flags offset 318"},
		{"desc misaligned", good, Offsets{Producer: 0, Consumer: 64, Flags: 128, Desc: 196}, 4, "ring entries at offset 196"},
		{"empty memory", nil, layout, 8, "outside or misaligned in 0 bytes"},
		{"unaligned memory", good[4:], layout, 4, "not 8-byte aligned"},
		{"words alias", good, Offsets{Producer: 0, Consumer: 0, Flags: 128, Desc: 192}, 8, "ring producer and consumer words overlap"},
		{"all zero", good, Offsets{}, 8, "overlap"},
		{"entries over a word", good, Offsets{Producer: 0, Consumer: 64, Flags: 128, Desc: 128}, 8, "ring flags word at offset 128 overlaps the entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errP := NewProducer[Desc](tt.mem, tt.off, tt.size)
			_, errC := NewConsumer[Desc](tt.mem, tt.off, tt.size)
			for _, err := range []error{errP, errC} {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("got %v, want error containing %q", err, tt.want)
				}
			}
		})
	}
}

// TestNewRefusesInconsistentIndices picks up a ring whose indices say it
// holds more entries than it has slots: Peek and Reserve would hand out
// slots twice.
func TestNewRefusesInconsistentIndices(t *testing.T) {
	for _, idx := range [][2]uint32{{9, 0}, {0, 1}, {3, 1<<32 - 6}} {
		mem := newMem[uint64](8)
		setIndices(mem, idx[0], idx[1])
		_, errP := NewProducer[uint64](mem, layout, 8)
		_, errC := NewConsumer[uint64](mem, layout, 8)
		for _, err := range []error{errP, errC} {
			if err == nil || !strings.Contains(err.Error(), "more entries than the ring's 8 slots") {
				t.Errorf("producer %d, consumer %d: got %v", idx[0], idx[1], err)
			}
		}
	}
	// A full ring, also across the wrap, is fine.
	for _, idx := range [][2]uint32{{8, 0}, {2, 1<<32 - 6}} {
		mem := newMem[uint64](8)
		setIndices(mem, idx[0], idx[1])
		if _, err := NewConsumer[uint64](mem, layout, 8); err != nil {
			t.Error(err)
		}
		if _, err := NewProducer[uint64](mem, layout, 8); err != nil {
			t.Error(err)
		}
	}
}

func TestReserveSubmitPeekRelease(t *testing.T) {
	p, c, _ := pair[uint64](t, 8, 0)
	idx, n := p.Reserve(5)
	if n != 5 {
		t.Fatalf("reserved %d of 5 on an empty ring", n)
	}
	for i := uint32(0); i < n; i++ {
		p.Set(idx+i, uint64(100+i))
	}
	// Nothing is visible before Submit.
	if got := c.Available(1); got != 0 {
		t.Fatalf("consumer sees %d entries before submit", got)
	}
	p.Submit(3)
	if got := c.Available(8); got != 3 {
		t.Fatalf("consumer sees %d entries, want 3", got)
	}
	p.Cancel(2) // the last two reserved slots
	if _, n := p.Reserve(8); n != 5 {
		t.Fatalf("after cancel reserved %d, want 5 (8 - 3 submitted)", n)
	}
	p.Cancel(100) // capped at what is reserved
	cidx, got := c.Peek(8)
	if got != 3 {
		t.Fatalf("peeked %d, want 3", got)
	}
	for i := uint32(0); i < got; i++ {
		if v := c.At(cidx + i); v != uint64(100+i) {
			t.Fatalf("entry %d = %d", i, v)
		}
	}
	c.Cancel(1)
	c.Release(2)
	idx, got = c.Peek(8)
	if got != 1 || c.At(idx) != 102 {
		t.Fatalf("after cancel: peeked %d entries, first %d", got, c.At(idx))
	}
	c.Release(1)
	if free := p.Free(8); free != 8 {
		t.Fatalf("free %d after everything was consumed, want 8", free)
	}
}

func TestFullRing(t *testing.T) {
	p, c, _ := pair[Desc](t, 4, 0)
	src := []Desc{{Addr: 1}, {Addr: 2}, {Addr: 3}, {Addr: 4}, {Addr: 5}}
	if n := p.Produce(src); n != 4 {
		t.Fatalf("produced %d into a 4-slot ring", n)
	}
	if n := p.Produce(src); n != 0 {
		t.Fatalf("produced %d into a full ring", n)
	}
	if p.Pending() != 4 {
		t.Fatalf("pending %d, want 4", p.Pending())
	}
	dst := make([]Desc, 2)
	if n := c.Consume(dst); n != 2 || dst[0].Addr != 1 || dst[1].Addr != 2 {
		t.Fatalf("consumed %d: %v", n, dst)
	}
	if n := p.Produce(src[4:]); n != 1 {
		t.Fatalf("produced %d after two were consumed", n)
	}
	dst = make([]Desc, 8)
	if n := c.Consume(dst); n != 3 || dst[0].Addr != 3 || dst[2].Addr != 5 {
		t.Fatalf("consumed %d: %v", n, dst[:n])
	}
}

func TestNeedWakeup(t *testing.T) {
	p, c, mem := pair[uint64](t, 4, 0)
	if p.NeedWakeup() || c.NeedWakeup() {
		t.Fatal("wakeup flagged on a fresh ring")
	}
	binary.NativeEndian.PutUint32(mem[layout.Flags:], FlagNeedWakeup)
	if !p.NeedWakeup() || !c.NeedWakeup() {
		t.Fatal("wakeup flag not seen")
	}
}

// TestWrapAround starts the indices just below 2^32 so that they wrap while
// the ring is in use.
func TestWrapAround(t *testing.T) {
	for _, start := range []uint32{0, 1<<32 - 1, 1<<32 - 3, 1<<32 - 16, 1 << 31} {
		p, c, _ := pair[Desc](t, 8, start)
		var next, want uint64
		buf := make([]Desc, 5)
		for round := 0; round < 40; round++ {
			for i := range buf {
				buf[i] = Desc{Addr: next, Len: uint32(next)}
				next++
			}
			n := p.Produce(buf)
			next -= uint64(len(buf) - n)
			out := make([]Desc, 3+round%5)
			m := c.Consume(out)
			for _, d := range out[:m] {
				if d.Addr != want || d.Len != uint32(want) {
					t.Fatalf("start %#x: got %v, want addr %d", start, d, want)
				}
				want++
			}
		}
		if want == 0 {
			t.Fatalf("start %#x: nothing passed", start)
		}
	}
}

// TestConcurrent passes seeded-random entries from a producer goroutine to a
// consumer goroutine, in batches of random size, and checks that none is
// lost, duplicated or reordered. Run it under -race.
func TestConcurrent(t *testing.T) {
	total := 2_000_000
	if testing.Short() || raceEnabled {
		total = 100_000
	}
	for _, size := range []uint32{1, 64, 2048} {
		p, c, _ := pair[Desc](t, size, 1<<32-1000)
		seed := uint64(size)
		var wg sync.WaitGroup
		var produced atomic.Int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			batch := make([]Desc, 300)
			sent := 0
			for sent < total {
				k := min(1+rng.IntN(len(batch)), total-sent)
				for i := range k {
					batch[i] = entryFor(seed, sent+i)
				}
				// Entries that do not fit are offered again next time.
				sent += p.Produce(batch[:k])
			}
			produced.Store(int64(sent))
		}()

		rng := rand.New(rand.NewPCG(seed, 3))
		buf := make([]Desc, 300)
		got := 0
		for got < total {
			n := c.Consume(buf[:1+rng.IntN(len(buf))])
			for _, d := range buf[:n] {
				if want := entryFor(seed, got); d != want {
					t.Fatalf("size %d: entry %d is %v, want %v", size, got, d, want)
				}
				got++
			}
		}
		wg.Wait()
		if int(produced.Load()) != total || c.Available(1) != 0 {
			t.Fatalf("size %d: produced %d, consumed %d, %d left", size, produced.Load(), got, c.Available(1))
		}
	}
}

// entryFor is the i-th entry of the stream for seed: a pseudo-random address
// (splitmix64) that no other position repeats by accident.
func entryFor(seed uint64, i int) Desc {
	z := seed*0x9e3779b97f4a7c15 + uint64(i)*0xbf58476d1ce4e5b9
	z ^= z >> 31
	z *= 0x94d049bb133111eb
	z ^= z >> 29
	return Desc{Addr: z, Len: uint32(i), Options: uint32(z >> 40)}
}

func TestHotPathAllocatesNothing(t *testing.T) {
	p, c, _ := pair[Desc](t, 64, 0)
	in := make([]Desc, 32)
	out := make([]Desc, 32)
	allocs := testing.AllocsPerRun(1000, func() {
		p.Produce(in)
		c.Consume(out)
		idx, n := p.Reserve(8)
		for i := range n {
			p.Set(idx+i, Desc{Addr: uint64(i)})
		}
		p.Submit(n)
		idx, n = c.Peek(8)
		for i := range n {
			_ = c.At(idx + i)
		}
		c.Release(n)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
}

// FuzzRing drives a producer and a consumer with operations decoded from the
// input and checks them against a model queue.
func FuzzRing(f *testing.F) {
	f.Add([]byte{0x13, 0x45, 0x80, 0xff, 0x21}, uint32(0))
	f.Add([]byte{0xf0, 0xf0, 0xf0, 0x0f, 0x0f}, uint32(1<<32-2))
	f.Fuzz(func(t *testing.T, ops []byte, start uint32) {
		const size = 16
		p, c, _ := pair[uint64](t, size, start)
		var model []uint64 // submitted, not released
		var reserved, peeked uint32
		var next uint64
		for _, op := range ops {
			n := uint32(op & 0x1f)
			switch op >> 5 {
			case 0, 1:
				idx, got := p.Reserve(n)
				if got > n || int(got)+len(model)+int(reserved) > size && got != 0 {
					t.Fatalf("reserved %d of %d with %d queued", got, n, len(model))
				}
				for i := range got {
					p.Set(idx+i, next+uint64(reserved+i))
				}
				reserved += got
			case 2:
				k := min(n, reserved)
				p.Submit(n)
				for i := range k {
					model = append(model, next+uint64(i))
				}
				next += uint64(k)
				reserved -= k
				// Move not-yet-submitted reservations' values along.
				if reserved > 0 {
					p.Cancel(reserved)
					reserved = 0
				}
			case 3:
				p.Cancel(n)
				reserved -= min(n, reserved)
			case 4, 5:
				idx, got := c.Peek(n)
				if int(peeked+got) > len(model) {
					t.Fatalf("peeked %d+%d with %d submitted", peeked, got, len(model))
				}
				for i := range got {
					if v := c.At(idx + i); v != model[peeked+i] {
						t.Fatalf("entry %d = %d, want %d", peeked+i, v, model[peeked+i])
					}
				}
				peeked += got
			case 6:
				k := min(n, peeked)
				c.Release(n)
				model = model[k:]
				peeked -= k
			case 7:
				c.Cancel(n)
				peeked -= min(n, peeked)
			}
		}
		// Everything submitted can be read back in order.
		c.Cancel(peeked)
		out := make([]uint64, size)
		n := c.Consume(out)
		if n != len(model) {
			t.Fatalf("consumed %d, model holds %d", n, len(model))
		}
		for i := range n {
			if out[i] != model[i] {
				t.Fatalf("entry %d = %d, want %d", i, out[i], model[i])
			}
		}
	})
}

// TestWithdraw takes back what the consumer has not taken, across the
// wrap of the indices, and leaves the ring usable.
func TestWithdraw(t *testing.T) {
	p, c, mem := pair[uint64](t, 8, ^uint32(0)-2)
	if n := p.Produce([]uint64{1, 2, 3, 4, 5}); n != 5 {
		t.Fatalf("produced %d", n)
	}
	got := make([]uint64, 2)
	if n := c.Consume(got); n != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("consumed %d: %v", n, got)
	}
	var back []uint64
	if n := p.Withdraw(func(v uint64) { back = append(back, v) }); n != 3 {
		t.Fatalf("withdrew %d entries, want 3", n)
	}
	if len(back) != 3 || back[0] != 3 || back[1] != 4 || back[2] != 5 {
		t.Fatalf("withdrew %v, want [3 4 5]", back)
	}
	// The consumer stopped; one that starts over on the ring sees none
	// of the withdrawn entries.
	c, err := NewConsumer[uint64](mem, layout, 8)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.Consume(got); n != 0 {
		t.Fatalf("consumer still sees %d withdrawn entries", n)
	}
	if n := p.Withdraw(func(uint64) { t.Fatal("withdrew from an empty ring") }); n != 0 {
		t.Fatalf("second Withdraw: %d", n)
	}
	// The freed slots are the producer's again.
	if n := p.Produce([]uint64{6, 7, 8, 9, 10, 11, 12, 13}); n != 8 {
		t.Fatalf("produced %d after Withdraw, want 8", n)
	}
	all := make([]uint64, 8)
	if n := c.Consume(all); n != 8 || all[0] != 6 || all[7] != 13 {
		t.Fatalf("consumed %d after Withdraw: %v", n, all)
	}
}
