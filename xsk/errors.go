package xsk

import (
	"errors"
	"fmt"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/umem"
)

// ErrNotSupported is matched (errors.Is) by errors for a feature that this
// kernel or driver lacks; the error names the feature.
var ErrNotSupported = errors.New("not supported")

// ErrBusy is matched by errors for an interface whose XDP hook holds
// someone else's program. It is bpf.ErrBusy.
var ErrBusy = bpf.ErrBusy

// ErrInvalidDesc is matched by errors for a descriptor that does not name a
// frame the caller holds. It is umem.ErrInvalidDesc.
var ErrInvalidDesc = umem.ErrInvalidDesc

// OpError is the error of an operation on a socket: what was done, on which
// interface and queue, and why. It unwraps to the cause, so errors.Is
// finds errnos (unix.EBUSY), net.ErrClosed and the sentinels above.
type OpError struct {
	// Op is the operation: "open", "receive", "transmit", ...
	Op string
	// Interface and Queue name the socket's queue.
	Interface string
	Queue     int
	// Err is why the operation failed.
	Err error
}

// Error says what failed, where, and why: "receive eth0 queue 3: ...".
func (e *OpError) Error() string {
	return fmt.Sprintf("%s %s queue %d: %v", e.Op, e.Interface, e.Queue, e.Err)
}

// Unwrap returns Err.
func (e *OpError) Unwrap() error { return e.Err }
