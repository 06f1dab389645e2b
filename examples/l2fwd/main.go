// Command l2fwd receives packets on one queue of an interface through an
// AF_XDP socket, swaps their source and destination MAC addresses and
// transmits them back out of the same queue, from the same UMEM frame (no
// copy), printing rates every second and the socket statistics at the end
// (on Ctrl-C or after -d).
//
// With no interface (-i) it builds its own veth pair in throwaway network
// namespaces, feeds it with a kernel-speed generator (internal/pktgen) and
// counts what comes back at the far end (an XDP_DROP program there). At
// the end it accounts for every frame sent, as rxdrop does.
//
// Needs Linux 5.18+ (6.17+ for -tx-budget) and root (CAP_NET_ADMIN,
// CAP_BPF, CAP_NET_RAW, CAP_IPC_LOCK, CAP_SYS_ADMIN).
//
//	go run ./examples/l2fwd -d 10s -cpu 1
//	go run ./examples/l2fwd -i eth0 -q 0
package main

import "github.com/afxdp/afxdp/internal/app"

func main() { app.Main("l2fwd", app.L2Fwd) }
