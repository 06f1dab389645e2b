// Package xsk is the AF_XDP socket: Go programs receive and transmit raw
// Ethernet frames on one queue of a network interface, bypassing the
// kernel's network stack, through memory they share with the kernel.
//
// # Rings and frames
//
// A socket owns a UMEM (package umem): an area of equal frames. Four
// single-producer, single-consumer rings (package ring) pass frames between
// the program and the kernel:
//
//   - fill: the program gives the kernel empty frames to receive into;
//   - RX: the kernel returns them holding received packets;
//   - TX: the program gives the kernel frames holding packets to send;
//   - completion: the kernel returns them once sent (or dropped).
//
// A receive frame's life: free → fill ring → RX ring → [Socket.Receive]
// hands its descriptor to the program → [Socket.Release] makes it free
// again (the next Receive puts it back in the fill ring; in copy mode only
// as many frames as the RX ring holds are ever with the kernel, see
// [Options.RxRingSize]). A transmit
// frame's: free → [Socket.Alloc] → the program writes a packet into
// [Socket.Frame] → [Socket.Transmit] → completion ring → free (reaped by
// Alloc, Transmit or [Socket.Complete]); in copy mode a frame the device
// dropped instead of sending comes back the same way, counted in
// [Stats].TxDropped. A received frame may be passed
// straight to Transmit (forwarding) instead of Release. The bytes of a
// frame alias the UMEM: they are valid until the frame is released or
// transmitted.
//
// # XDP
//
// Packets reach an AF_XDP socket only through an XDP program that
// redirects them into an XSKMAP. [Open] loads and attaches one (package
// bpf) unless told the XDP side belongs to someone else ([Options.XSKMap],
// [Options.NoXDP]) or that the socket only transmits ([Options.TxOnly],
// which needs a program only in zero-copy mode); sockets on several queues
// of one interface in one process share it. Frames for queues with no
// socket, and frames that miss [Options.Filter], go on to the kernel's
// stack.
//
// # Sharing a UMEM
//
// A socket opened with [Options.ShareUMEM] uses another socket's UMEM, on
// another interface or queue, with fill and completion rings of its own:
// a frame received on either may be transmitted on either, so a forwarder
// between two interfaces never copies a packet in user space (and, on
// drivers with zero-copy, nowhere).
//
// The UMEM's receive frames (NumFrames minus TxFrames of the socket that
// made it) must fill every sharing socket's fill ring at once (a TxOnly
// socket in copy mode fills none, and has none by default), and a fill
// ring left at its default size takes what is left, up to 2048: two
// sockets with every default need NumFrames 8192 on the first (4096
// receive frames), or smaller fill rings.
//
// # Checksums
//
// A frame is received as it was on the wire, and sent as written. On veth
// and other virtual devices, a frame that a kernel on the same machine
// sent carries an unfinished UDP or TCP checksum when the sender's device
// offloads checksums (the default on veth): only the pseudo-header sum is
// in the field, since no hardware was going to finish it. Such a checksum
// does not verify. A program that sends a received frame on to another
// kernel stack, changed or not (an echo, a forwarder between two
// namespaces), must compute the checksum afresh, or the receiving kernel
// drops the frame (UdpInCsumErrors); or the sending device's offload must
// be off (ethtool -K DEV tx off).
//
// # Concurrency
//
// One goroutine may receive (Receive, Release of received frames, Refill)
// while another transmits (Alloc, Transmit, Complete, Release of allocated
// frames); forwarding a received frame needs one goroutine that does both.
// Sockets that share a UMEM count as one socket here: one goroutine
// receives on all of them, one transmits on all of them.
// Wait, Stats and Close may be called from any goroutine; Close waits for
// the other calls in flight to return and makes later ones fail with
// net.ErrClosed (Frame returns nil). Frame and Release are the exceptions
// to the waiting: neither may run at the same time as Close, and a slice
// from Frame must not be used once Close has begun.
package xsk
