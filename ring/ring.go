package ring

import (
	"fmt"
	"math/bits"
	"sync/atomic"
)

// Desc is an RX or TX descriptor, laid out as the kernel's struct xdp_desc.
type Desc struct {
	// Addr is the UMEM offset of the packet's first byte.
	Addr uint64
	// Len is the packet's length in bytes.
	Len uint32
	// Options carries flags such as XDP_PKT_CONTD.
	Options uint32
}

// Entry is the type of a ring's slots: a UMEM address (fill and completion
// rings) or a descriptor (RX and TX rings).
type Entry interface{ uint64 | Desc }

// Offsets locate a ring's fields, in bytes from the start of its memory, as
// the kernel reports them in struct xdp_ring_offset.
type Offsets struct {
	Producer, Consumer, Flags, Desc uint64
}

// FlagNeedWakeup is the bit of the flags word by which the kernel asks to be
// woken (XDP_RING_NEED_WAKEUP).
const FlagNeedWakeup = 1

// MaxSize is the largest ring size accepted.
const MaxSize = 1 << 30

// shared points at the words a ring shares with its other side.
type shared[T Entry] struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	entries  []T
	mask     uint32
	size     uint32
}

func newShared[T Entry](mem []byte, off Offsets, size uint32) (shared[T], error) {
	var s shared[T]
	if size == 0 || size > MaxSize || bits.OnesCount32(size) != 1 {
		return s, fmt.Errorf("ring size %d: must be a power of two between 1 and %d", size, MaxSize)
	}
	words := []struct {
		name string
		off  uint64
	}{{"producer", off.Producer}, {"consumer", off.Consumer}, {"flags", off.Flags}}
	for _, w := range words {
		if w.off%4 != 0 || w.off > uint64(len(mem)) || uint64(len(mem))-w.off < 4 {
			return s, fmt.Errorf("ring %s offset %d: outside or misaligned in %d bytes of memory", w.name, w.off, len(mem))
		}
	}
	esize := entrySize[T]()
	need := uint64(size) * esize
	if off.Desc%8 != 0 || off.Desc > uint64(len(mem)) || uint64(len(mem))-off.Desc < need {
		return s, fmt.Errorf("ring entries at offset %d: %d entries of %d bytes do not fit in %d bytes of memory",
			off.Desc, size, esize, len(mem))
	}
	// The words are 4-byte aligned, so two overlap only when equal.
	for i, w := range words {
		for _, v := range words[i+1:] {
			if w.off == v.off {
				return s, fmt.Errorf("ring %s and %s words overlap at offset %d", w.name, v.name, w.off)
			}
		}
		if w.off+4 > off.Desc && w.off < off.Desc+need {
			return s, fmt.Errorf("ring %s word at offset %d overlaps the entries at %d to %d", w.name, w.off, off.Desc, off.Desc+need)
		}
	}
	if !aligned(mem) {
		return s, fmt.Errorf("ring memory at %p: not 8-byte aligned", &mem[0])
	}
	s.producer = word(mem, off.Producer)
	s.consumer = word(mem, off.Consumer)
	s.flags = word(mem, off.Flags)
	s.entries = entries[T](mem, off.Desc, size)
	s.mask = size - 1
	s.size = size
	// A ring picked up as another left it must hold no more entries than
	// it has slots, or Peek and Reserve would hand out slots twice.
	if prod, cons := atomic.LoadUint32(s.producer), atomic.LoadUint32(s.consumer); prod-cons > size {
		return shared[T]{}, fmt.Errorf("ring indices: producer %d and consumer %d say %d entries, more entries than the ring's %d slots",
			prod, cons, prod-cons, size)
	}
	return s, nil
}

// Producer is the side of a ring that adds entries: the fill and TX rings.
// The zero value is a ring with no slots.
type Producer[T Entry] struct {
	s shared[T]
	// prod is the producer index last published to s.producer.
	prod uint32
	// cachedProd is prod plus the entries reserved but not yet submitted.
	cachedProd uint32
	// cachedCons is the consumer index last read, plus size: the index
	// that the producer may not reach.
	cachedCons uint32
}

// NewProducer makes the producing side of the ring of size entries in mem.
// The indices in mem are taken as they are, so a ring may be picked up where
// another left it; they must not say that it holds more entries than it has
// slots. The three words must not overlap each other or the entries.
func NewProducer[T Entry](mem []byte, off Offsets, size uint32) (*Producer[T], error) {
	s, err := newShared[T](mem, off, size)
	if err != nil {
		return nil, err
	}
	p := &Producer[T]{s: s}
	p.prod = atomic.LoadUint32(s.producer)
	p.cachedProd = p.prod
	p.cachedCons = atomic.LoadUint32(s.consumer) + size
	return p, nil
}

// Size is the number of slots.
func (p *Producer[T]) Size() uint32 { return p.s.size }

// Free returns the number of free slots, reloading the consumer's index only
// when fewer than n are known to be free. It is never more than the ring's
// size, even when the consumer's index says so (it ran ahead of the
// producer's, or went back).
func (p *Producer[T]) Free(n uint32) uint32 {
	free := p.cachedCons - p.cachedProd
	if free >= n || p.s.consumer == nil { // nil: a zero Producer
		return min(free, p.s.size)
	}
	p.cachedCons = atomic.LoadUint32(p.s.consumer) + p.s.size
	return min(p.cachedCons-p.cachedProd, p.s.size)
}

// Reserve reserves up to n slots and returns the index of the first and how
// many it got. Fill them with Set, then Submit or Cancel them.
func (p *Producer[T]) Reserve(n uint32) (idx, got uint32) {
	if free := p.Free(n); n > free {
		n = free
	}
	idx = p.cachedProd
	p.cachedProd += n
	return idx, n
}

// Set writes the entry at index idx, which Reserve returned.
func (p *Producer[T]) Set(idx uint32, v T) { p.s.entries[idx&p.s.mask] = v }

// Submit publishes the first n reserved entries to the consumer. n is capped
// at the number reserved.
func (p *Producer[T]) Submit(n uint32) {
	if r := p.cachedProd - p.prod; n > r {
		n = r
	}
	if n == 0 {
		return
	}
	p.prod += n
	atomic.StoreUint32(p.s.producer, p.prod)
}

// Cancel gives back the last n reserved entries. n is capped at the number
// reserved.
func (p *Producer[T]) Cancel(n uint32) {
	if r := p.cachedProd - p.prod; n > r {
		n = r
	}
	p.cachedProd -= n
}

// Produce reserves room for as many of src as fit, copies them in and
// submits them: one reload of the consumer index at most and one store.
// It returns the number produced.
func (p *Producer[T]) Produce(src []T) int {
	n := uint32(min(len(src), MaxSize))
	idx, n := p.Reserve(n)
	if n == 0 {
		return 0
	}
	start := idx & p.s.mask
	c := copy(p.s.entries[start:], src[:n])
	copy(p.s.entries, src[c:n])
	p.Submit(n)
	return int(n)
}

// Withdraw takes back the submitted entries that the consumer has not
// taken, calling fn with each in ring order, and returns how many. It is
// for a ring whose consumer is known to have stopped, or never to have
// started (a fill ring of a socket whose bind failed). A consumer index
// that says more entries are left than the ring has slots (it ran past
// the producer's, or went back) names none: Withdraw hands back nothing
// and leaves the ring empty.
func (p *Producer[T]) Withdraw(fn func(T)) uint32 {
	if p.s.consumer == nil { // a zero Producer
		return 0
	}
	cons := atomic.LoadUint32(p.s.consumer)
	n := p.prod - cons
	if n > p.s.size {
		n = 0
	}
	for i := range n {
		fn(p.s.entries[(cons+i)&p.s.mask])
	}
	p.prod, p.cachedProd, p.cachedCons = cons, cons, cons+p.s.size
	atomic.StoreUint32(p.s.producer, cons)
	return n
}

// NeedWakeup reports whether the consumer (the kernel) asks to be woken by
// a system call before it looks at the ring again.
func (p *Producer[T]) NeedWakeup() bool {
	if p.s.flags == nil { // a zero Producer
		return false
	}
	return atomic.LoadUint32(p.s.flags)&FlagNeedWakeup != 0
}

// Pending is the number of submitted entries the consumer has not taken,
// as of the last reload of its index. It is never more than the ring's
// size: a consumer index that says more are left (it ran past the
// producer's, or went back) names none, as for Withdraw, and Pending is 0.
func (p *Producer[T]) Pending() uint32 {
	n := p.prod - (p.cachedCons - p.s.size)
	if n > p.s.size {
		return 0
	}
	return n
}

// Consumer is the side of a ring that takes entries: the RX and completion
// rings. The zero value is a ring with no slots.
type Consumer[T Entry] struct {
	s shared[T]
	// cons is the consumer index last published to s.consumer.
	cons uint32
	// cachedCons is cons plus the entries peeked but not yet released.
	cachedCons uint32
	// cachedProd is the producer index last read.
	cachedProd uint32
}

// NewConsumer makes the consuming side of the ring of size entries in mem,
// with the checks of NewProducer.
func NewConsumer[T Entry](mem []byte, off Offsets, size uint32) (*Consumer[T], error) {
	s, err := newShared[T](mem, off, size)
	if err != nil {
		return nil, err
	}
	c := &Consumer[T]{s: s}
	c.cons = atomic.LoadUint32(s.consumer)
	c.cachedCons = c.cons
	c.cachedProd = atomic.LoadUint32(s.producer)
	return c, nil
}

// Size is the number of slots.
func (c *Consumer[T]) Size() uint32 { return c.s.size }

// Available returns the number of entries ready to peek, reloading the
// producer's index only when fewer than n are known to be ready. It is
// never more than the ring's size, even when the producer's index says so.
func (c *Consumer[T]) Available(n uint32) uint32 {
	avail := c.cachedProd - c.cachedCons
	if avail >= n || c.s.producer == nil { // nil: a zero Consumer
		return min(avail, c.s.size)
	}
	c.cachedProd = atomic.LoadUint32(c.s.producer)
	return min(c.cachedProd-c.cachedCons, c.s.size)
}

// Peek takes up to n entries and returns the index of the first and how many
// it got. Read them with At, then Release or Cancel them.
func (c *Consumer[T]) Peek(n uint32) (idx, got uint32) {
	if avail := c.Available(n); n > avail {
		n = avail
	}
	idx = c.cachedCons
	c.cachedCons += n
	return idx, n
}

// At reads the entry at index idx, which Peek returned.
func (c *Consumer[T]) At(idx uint32) T { return c.s.entries[idx&c.s.mask] }

// Release hands the first n peeked slots back to the producer. n is capped
// at the number peeked.
func (c *Consumer[T]) Release(n uint32) {
	if r := c.cachedCons - c.cons; n > r {
		n = r
	}
	if n == 0 {
		return
	}
	c.cons += n
	atomic.StoreUint32(c.s.consumer, c.cons)
}

// Cancel un-peeks the last n peeked entries, so that the next Peek returns
// them again. n is capped at the number peeked.
func (c *Consumer[T]) Cancel(n uint32) {
	if r := c.cachedCons - c.cons; n > r {
		n = r
	}
	c.cachedCons -= n
}

// Consume copies up to len(dst) entries into dst and releases their slots:
// one reload of the producer index at most and one store. It returns the
// number consumed.
func (c *Consumer[T]) Consume(dst []T) int {
	n := uint32(min(len(dst), MaxSize))
	idx, n := c.Peek(n)
	if n == 0 {
		return 0
	}
	start := idx & c.s.mask
	k := copy(dst[:n], c.s.entries[start:])
	copy(dst[k:n], c.s.entries)
	c.Release(n)
	return int(n)
}

// NeedWakeup reports whether the producer asks to be woken by a system
// call before it adds entries again. The kernel sets the flag only on the
// rings it consumes (fill and TX), so on the RX and completion rings this
// is always false; it is here for rings whose other side does use it.
func (c *Consumer[T]) NeedWakeup() bool {
	if c.s.flags == nil { // a zero Consumer
		return false
	}
	return atomic.LoadUint32(c.s.flags)&FlagNeedWakeup != 0
}
