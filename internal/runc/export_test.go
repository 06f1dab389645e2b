package runc

import "time"

// SetWaitDelay changes how long Run tries to kill the container and waits
// for runc after its context ends, for a test, and returns a function that
// restores it.
func SetWaitDelay(d time.Duration) (restore func()) {
	old := waitDelay
	waitDelay = d
	return func() { waitDelay = old }
}
