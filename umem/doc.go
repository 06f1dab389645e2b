// Package umem owns an AF_XDP socket's packet memory (the UMEM): the
// mmap'd area divided into equal frames, its registration with the kernel,
// its fill and completion rings, and the bookkeeping that says where every
// frame is.
//
// # Frames and their owners
//
// The frames are split in two pools by address. The first NumFrames-TxFrames
// frames belong to the receive side: they travel free → fill ring → (kernel)
// → RX ring → user → free. The rest belong to the transmit side: free → user
// (Alloc) → TX ring → (kernel) → completion ring → free. A received frame
// may also be transmitted (forwarding); when the kernel completes it, it
// goes back to the receive side through an internal lock-free recycle ring.
//
// Every frame has a state, so a frame released twice, transmitted while the
// kernel holds it, or never returned is noticed: [UMEM.Counts] says how many
// frames are free, in the kernel, held by the user and in transit, and they
// always add up to NumFrames.
//
// # Concurrency
//
// The receive-side methods (Refill, Received, and Release of received
// frames) are called by one goroutine; the transmit-side methods (Alloc,
// Send, Complete, and Release of allocated frames) by one goroutine, which
// may be another. A frame moves from one side to the other only through
// the kernel (a received frame transmitted by a goroutine that does both).
// Call Counts only when neither side is running: it reads both sides'
// bookkeeping without a lock, and may take back frames as Complete would.
//
// # Sharing
//
// Several sockets may use one UMEM (XDP_SHARED_UMEM), so that a frame
// received on one is transmitted on another without a copy. The first
// socket's fill and completion rings come from [UMEM.Register]; each socket
// on another interface or queue gets its own from [UMEM.AddRings], and the
// frames in all of them come from the one area and the one bookkeeping.
// The rules above then hold across the sockets: one goroutine makes the
// receive-side calls of all of them, one goroutine their transmit-side
// calls. The area is unmapped by the last of [UMEM.Close] and the added
// rings' [Rings.Close]; until then AddRings lets more sockets join. The
// receive frames the kernel held through rings that were closed are
// counted as lost ([Counts].Lost) and leave no room for new fill rings.
// Of the frames sent through a closed socket, those its completion ring
// had returned come back at the transmit side's next Complete; the rest
// are lost too.
//
// The xsk package composes a UMEM with an AF_XDP socket; most programs use
// it rather than this package directly.
package umem
