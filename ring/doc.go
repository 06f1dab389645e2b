// Package ring implements the single-producer, single-consumer rings that an
// AF_XDP socket shares with the kernel.
//
// Each ring is a power-of-two array of entries plus three 32-bit words: a
// producer index, a consumer index and a flags word. Indices grow without
// bound and wrap at 2^32; an entry's slot is index & (size-1). Exactly one
// side writes each index:
//
//	ring         user role   the user writes   the kernel writes
//	fill         Producer    producer          consumer, flags
//	completion   Consumer    consumer          producer
//	RX           Consumer    consumer          producer
//	TX           Producer    producer          consumer, flags
//
// Fill and completion rings carry 64-bit UMEM addresses (uint64); RX and TX
// rings carry [Desc]. The types here know nothing of sockets and make no
// system call: they take memory (the mmap'd ring, or any []byte in tests) and
// the offsets that XDP_MMAP_OFFSETS reports.
//
// Both sides keep private cached copies of the two indices and touch the
// shared ones at most once per batch: a producer reloads the consumer index
// only when its cached view shows too little room, and publishes its own
// index once per Submit; a consumer reloads the producer index only when its
// cached view holds too few entries, and publishes once per Release. The
// shared loads and stores are atomic, which in Go's memory model orders them
// as the kernel's smp_load_acquire and smp_store_release require.
//
// A Producer or Consumer is not safe for concurrent use: one goroutine owns
// each. The two ends of one ring may be used by two goroutines at once, which
// is how the tests stand in for the kernel.
package ring
