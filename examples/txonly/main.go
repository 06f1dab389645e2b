// Command txonly transmits one UDP frame of -size bytes again and again on
// one queue of an interface through an AF_XDP socket, printing the transmit
// rate every second and the socket statistics at the end (on Ctrl-C or
// after -d). Like libxdp's and DPDK's txonly, it writes the frame into
// every transmit frame of the UMEM once, so the loop only sets lengths.
//
// With no interface (-i) it builds its own veth pair in throwaway network
// namespaces and counts what arrives at the far end (an XDP_DROP program
// there), so it runs anywhere.
//
// Needs Linux 5.18+ (6.17+ for -tx-budget) and root. Copy-mode TX on veth
// sends inside the sendto(2) kick: -batch, -tx-budget and -wakeup decide
// how many frames each system call moves.
//
//	go run ./examples/txonly -d 10s -cpu 1
//	go run ./examples/txonly -i eth0 -dst-mac 02:00:00:00:00:02 -size 1500
package main

import "github.com/afxdp/afxdp/internal/app"

func main() { app.Main("txonly", app.TxOnly) }
