package testenv

import (
	"sync"
	"testing"
	"time"
)

// Settle calls check every 100 ms until it finds no problem or within has
// passed, then reports each problem it still finds with tb.Error. Leak
// checks use it for what is released a moment after its owner goes: a
// process's links, namespaces and files outlive its exit until the
// kernel has put their last reference.
func Settle(tb testing.TB, within time.Duration, check func() []string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		problems := check()
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range problems {
				tb.Error(p)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitFor calls cond every 10 ms until it holds, and fails tb, saying
// that it timed out waiting for what, if it still does not after 10 s: a
// deadline generous enough for a loaded machine, for what the kernel or
// another goroutine does a moment after the test's call returns.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FailsOnce calls fn (a Close made to fail) from callers goroutines at
// once and fails tb unless exactly one of them returned an error, and
// unless a call after them returns nil: a failure is reported once, to
// one caller. It returns that error, for the test to check what it says.
// what names fn in the messages ("Close").
func FailsOnce(tb testing.TB, what string, callers int, fn func() error) error {
	tb.Helper()
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) != 1 {
		tb.Fatalf("%d of %d concurrent %s calls reported the failure, want 1: %v", len(failed), callers, what, errs)
	}
	if err := fn(); err != nil {
		tb.Fatalf("%s after a failed %s: %v, want nil", what, what, err)
	}
	return failed[0]
}
