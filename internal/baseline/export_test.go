package baseline

import "time"

// SetRefusedFor sets how long an AFPacketSender retries a device that
// refuses frames, until the returned function restores it.
func SetRefusedFor(d time.Duration) (restore func()) {
	old := refusedFor
	refusedFor = d
	return func() { refusedFor = old }
}
