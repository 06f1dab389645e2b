package sys

import (
	"io"
	"runtime"
)

// CloseObject closes c, an object of cilium/ebpf (a Map, a Program, a
// Link), and keeps it reachable until Close has returned.
//
// cilium/ebpf (v0.22.0) closes an object's descriptor and then cancels the
// descriptor's garbage-collection cleanup with runtime.Cleanup.Stop,
// without keeping the descriptor's holder reachable across that call, as
// Stop's documentation requires. When the object's last reference is the
// one Close was called through, a garbage collection that ends in that
// window queues the cleanup anyway, and the cleanup closes the same
// descriptor number again, later, when the number may already belong to
// another file: another goroutine's freshly opened map, a socket. The
// agent's TestFollowRepinsAtomically lost a pinned map's descriptor that
// way, between its BPF_OBJ_GET and its first use, about once in a few
// hundred thousand opens, and always with a garbage collection in
// between. Keeping c reachable until Close returns closes the window.
func CloseObject(c io.Closer) error {
	err := c.Close()
	runtime.KeepAlive(c)
	return err
}
