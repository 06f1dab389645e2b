package cni

import "time"

// SetTimeouts shortens the DEL timeout and the pipe wait for a test, and
// returns a function that restores them.
func SetTimeouts(del, wait time.Duration) (restore func()) {
	oldDel, oldWait := delTimeout, waitDelay
	delTimeout, waitDelay = del, wait
	return func() { delTimeout, waitDelay = oldDel, oldWait }
}
