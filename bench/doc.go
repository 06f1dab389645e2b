// Package bench holds afxdp's benchmarks on veth pairs: AF_XDP rxdrop,
// txonly, l2fwd and xconnect (internal/app's loops) over batch and ring
// sizes, and, in the same run, the kernel's own ways of doing the same —
// UDP sockets with recvmmsg/sendmmsg, AF_PACKET rings (internal/baseline)
// — and the kernel's XDP_DROP rate, the ceiling for any receiver. Every
// receive benchmark is fed by internal/pktgen (BPF_PROG_RUN live frames)
// on CPU 0, with the code under test pinned to CPU 1.
//
//	go test -run '^$' -bench . ./bench/
//
// Each benchmark reports pps, ns/pkt and cpu-s/Mpkt: the CPU seconds the
// process spent per million packets, the generator's thread excluded (both
// read from the scheduler's clock, to the nanosecond). Those fed by the
// generator also report offered-pps (what it offered: the frames the
// veth pair's host end put on the peer's ring or dropped for want of room
// there, read just before and just after the timed loop, over the time
// between the two readings) and drops; the forwarding ones (l2fwd,
// xconnect) add peer-pps, what arrived at the far end. The send
// benchmarks report peer-pps and lost instead of offered-pps and drops:
// lost counts the frames sent that did not arrive at the far end, once
// the TX ring has been drained. Rates are over the timed loop (ns/op's
// span); drops and CPU time are read at the start of its first iteration
// and at the end of each, not around it, where testing's b.Loop stops the
// world to read memory statistics while the code under test is not
// running.
//
// An iteration handles 4096 packets, so allocs/op is per 4096 packets. It
// counts every allocation the process made during the timed loop: in the
// receive benchmarks that includes the generator's goroutine, which
// allocates a few times per BPF_PROG_RUN call of 2^20 frames, and the
// reading of the drop counters once an iteration (none for an AF_XDP
// socket's statistics; a few for the kernel baselines' socket options and
// for the CPUMAP benchmark's per-CPU map), so it is an upper bound for the
// loop under test. TestLoopsAllocateNothing is what
// shows that the loops themselves allocate nothing per packet
// (testing.AllocsPerRun with the generator stopped).
//
// bench/cmd/compare runs the same loops side by side with DPDK's testpmd;
// bench/cmd/results regenerates bench/RESULTS.md. Both need the machine
// to themselves: one of them runs at a time (a second refuses, naming the
// first), and neither should share the machine with these benchmarks.
package bench
