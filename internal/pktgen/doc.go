// Package pktgen is a traffic generator for afxdp's tests and benchmarks. It
// injects frames into an interface at kernel speed with BPF_PROG_RUN in
// live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18+): a tiny XDP
// program, run Repeat times on one frame, returns bpf_redirect_map into a
// DEVMAP that holds the target interface, so every run sends one frame out
// of it. No socket, no copy per frame and no system call per batch: the
// kernel builds frames in a page pool and hands them to the target's
// ndo_xdp_xmit 64 (BatchSize) at a time.
//
// On a veth pair, frames sent out of one end arrive at the other end, which
// must have NAPI enabled: an XDP program attached in native (driver) mode
// (an AF_XDP socket's, or a [Sink]; a generic-mode program does not count),
// or GRO turned on. Otherwise veth refuses them without a trace
// in any interface counter (kernel 6.18), and Send fails (see below). The
// receiving end's NAPI poll, and
// whatever the kernel does with the frames after XDP (build skbs, run the
// IP stack, fill sockets), runs on the generator's CPU, in the softirqs
// that follow each batch inside BPF_PROG_RUN: the rate a generator reaches
// depends on how much work its receiver makes the kernel do. The peer RX
// queue is chosen by that CPU (CPU modulo the number of queues), not by
// flow hash, so [Options.Pin] selects the queue. veth's XDP ring holds 256
// frames: with BatchSize 256 a few frames in 10^4 were lost in benchmarks
// here, so the default of 64 is the safe choice.
//
// Where the target is named: New resolves the ifindex in the calling
// thread's network namespace when it fills the DEVMAP (use [NewFor] or
// netenv.Endpoint.Do); the DEVMAP then holds the device itself, so sending
// works from any namespace. (A plain bpf_redirect(ifindex) would instead
// resolve the ifindex at every run in the namespace of the BPF_PROG_RUN
// caller, whose loopback device is the frames' pretend ingress device.)
//
// Counting is exact: the program takes each frame it redirected from a
// budget in an array map and drops once the budget is spent, so a run that
// the kernel aborts with EINTR and cilium/ebpf restarts never sends more
// than asked, and the number sent is read back from the map. A frame whose
// redirect fails because the target device is gone is not counted, and
// the send fails with ENODEV. Frames the kernel drops after the program
// has returned, because the target cannot take them, are not counted
// either: two raw tracepoint programs on the tracepoints
// xdp:xdp_redirect_err and xdp:xdp_devmap_xmit (one run per refused frame,
// and one per batch flushed) count them for the generator, and the send
// fails with the kernel's error: ENETDOWN (the target is down),
// EOPNOTSUPP (it cannot transmit XDP frames: on veth, the peer has neither
// a native-mode XDP program nor GRO), ENXIO (on veth: the peer is down),
// EMSGSIZE (the frame is longer than the target's MTU). What Send,
// SendContext and Total report as offered is what the target's driver
// took. A driver may still drop a frame it took for want of room (a veth
// whose peer's ring is full): veth counts those in the target's tx_dropped
// and the peer's rx_dropped, as the receiver's loss. veth drops, and
// counts, in the same way, without an error, a frame longer than its
// peer's MTU allows (the peer's MTU plus 18 bytes): such frames are
// counted as offered though none arrives, so give both ends of a pair an
// MTU that fits the frame.
//
// Frames are buffers the kernel reuses: what the receiving side writes into
// one stays for the next run. A peer that forwards the frames in the
// kernel (IP forwarding rewrites the MAC addresses and the TTL in place)
// therefore changes every later copy, and most then arrive addressed to
// someone else. Feed a forwarding topology from another sender, or make
// the receiver's XDP program consume the frames.
//
// pktgen needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or CAP_SYS_ADMIN),
// and the kernel's BTF (/sys/kernel/btf/vmlinux), where it finds the
// tracepoints' arguments; it does not need tracefs.
package pktgen
