package sys

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// collectable is an io.Closer whose Close runs two garbage collections
// and then waits for a while for the closer's own cleanup, which runs only
// if nothing kept the closer reachable meanwhile: what cilium/ebpf's
// Close does between closing a descriptor and cancelling its cleanup.
type collectable struct {
	collected *atomic.Bool
	_         [64]byte // not a tiny object: tiny ones share a block with others
}

func newCollectable() (*collectable, *atomic.Bool) {
	var collected atomic.Bool
	c := &collectable{collected: &collected}
	runtime.AddCleanup(c, func(b *atomic.Bool) { b.Store(true) }, &collected)
	return c, &collected
}

func (c *collectable) Close() error {
	collected := c.collected // c is not used after this
	runtime.GC()
	runtime.GC()
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); {
		if collected.Load() {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// TestCloseObjectKeepsReachable checks that an object closed through
// CloseObject is not collected while its Close runs, and, as a control,
// that the same object closed by a plain call through its last reference
// is: without the control, the first half could not fail.
func TestCloseObjectKeepsReachable(t *testing.T) {
	c, collected := newCollectable()
	if err := CloseObject(c); err != nil {
		t.Fatal(err)
	}
	if collected.Load() {
		t.Error("the object was collected while CloseObject's Close ran")
	}

	plain := func() *atomic.Bool {
		c, collected := newCollectable()
		c.Close()
		return collected
	}
	if !plain().Load() {
		t.Error("control: a plain Close through the last reference did not let the object be collected, so the check above proves nothing")
	}
}
