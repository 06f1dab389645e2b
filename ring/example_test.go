package ring_test

import (
	"fmt"

	"github.com/afxdp/afxdp/ring"
)

// A producer and a consumer share one ring in plain memory, laid out as the
// kernel lays out an AF_XDP ring: three index words, then the entries.
func Example() {
	off := ring.Offsets{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}
	mem := make([]byte, 192+4*16)

	prod, _ := ring.NewProducer[ring.Desc](mem, off, 4)
	cons, _ := ring.NewConsumer[ring.Desc](mem, off, 4)

	// Reserve slots, fill them, publish them with one store.
	idx, n := prod.Reserve(3)
	for i := range n {
		prod.Set(idx+i, ring.Desc{Addr: uint64(i) * 2048, Len: 60})
	}
	prod.Submit(n)

	// Take them in one batch and hand the slots back with one store.
	got := make([]ring.Desc, 8)
	k := cons.Consume(got)
	fmt.Println(k, got[:k])
	fmt.Println(prod.Free(4), "slots free")
	// Output:
	// 3 [{0 60 0} {2048 60 0} {4096 60 0}]
	// 4 slots free
}
