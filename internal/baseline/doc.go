// Package baseline holds the ways a program receives and sends packets
// without AF_XDP, so that benchmarks can put afxdp side by side with them:
//
//   - kernel UDP sockets with batched I/O: recvmmsg and sendmmsg, 64
//     messages a call, through the socket's RawConn so that the Go poller
//     does the waiting (golang.org/x/net/ipv4's ReadBatch and WriteBatch do
//     the same but allocate once per message);
//   - AF_PACKET with a TPACKET_V3 receive ring (mmap'd blocks that the kernel
//     retires when full or after a timeout; the reader walks a block's
//     frames and hands the block back by resetting its status word);
//   - AF_PACKET with a TPACKET_V2 transmit ring (frames written into the
//     mmap'd ring, marked for sending, and flushed with one send(2) per
//     batch).
//
// Each one counts packets and bytes, reports the kernel's drop counter for
// its socket, allocates nothing per packet, and has an idempotent Close.
//
// Sockets belong to the network namespace of the thread that makes them:
// call the constructors inside netenv.Endpoint.Do (or netenv.Netns.Do); the
// sockets may be used from any goroutine afterwards.
//
// The system calls for the packet rings are kept here rather than in
// internal/sys, because no library package uses AF_PACKET or mmsg; every
// use of package unsafe (atomic access to ring status words, the mmsghdr
// vectors) sits in baseline_unsafe.go; a UDP socket's drops are read with
// internal/sys.
//
// [BenchRecv] is the receive benchmark harness: it drives any [Receiver]
// on a veth pair fed by an internal/pktgen generator.
package baseline
