// Package app is the plumbing shared by afxdp's example programs and
// benchmarks: the command-line knobs that rxdrop, txonly, l2fwd and echo
// share (interface, queue, batch and ring sizes, bind mode, need_wakeup,
// busy polling, how to wait), the allocation-free run loops (rxdrop,
// txonly, l2fwd, and xconnect's forwarder), the per-second rate report
// and end-of-run statistics, process and thread CPU accounting, signal
// handling, and the throwaway veth topology that the examples build when
// no interface is given.
//
// It is internal: its API serves examples/ and bench/ and may change with
// them.
package app
