// Command rxdrop receives packets on one queue of an interface through an
// AF_XDP socket and drops them, printing the receive rate every second and
// the socket statistics at the end (on Ctrl-C or after -d).
//
// With no interface (-i) it builds its own veth pair in throwaway network
// namespaces and feeds it with a kernel-speed generator (BPF_PROG_RUN live
// frames, internal/pktgen), printing what was offered beside what was
// received, so it runs anywhere. At the end it stops the generator first,
// lets the loop take in what is still arriving, and accounts for every
// frame sent: received, dropped by the socket, or lost in veth.
//
// Needs Linux 5.18+ and root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW,
// CAP_IPC_LOCK; CAP_SYS_ADMIN for the namespaces). -wait picks how it
// idles: spin (the default; a core at 100%), poll (sleep in poll(2)
// whenever the RX ring is empty), hybrid (spin -spin, then sleep) or nap
// (sleep -nap whenever the RX ring is empty, without a wake-up from the
// kernel: spin's rate for a third of its CPU, for up to -nap of latency).
//
//	go run ./examples/rxdrop -d 10s -cpu 1 -batch 64
//	go run ./examples/rxdrop -i eth0 -q 0 -wait hybrid
//	go run ./examples/rxdrop -d 10s -cpu 1 -wait nap -nap 50us
package main

import "github.com/afxdp/afxdp/internal/app"

func main() { app.Main("rxdrop", app.RxDrop) }
