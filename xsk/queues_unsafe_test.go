package xsk_test

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolChannels is the kernel's struct ethtool_channels.
type ethtoolChannels struct {
	cmd                                         uint32
	maxRx, maxTx, maxOther, maxCombined         uint32
	rxCount, txCount, otherCount, combinedCount uint32
}

// setChannels sets the RX and TX queues in use on ifname, in the calling
// thread's network namespace, as `ethtool -L ifname rx rx tx tx` does.
func setChannels(t *testing.T, ifname string, rx, tx uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ch := ethtoolChannels{cmd: unix.ETHTOOL_GCHANNELS}
	var req struct {
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [16]byte
	}
	copy(req.name[:], ifname)
	req.data = uintptr(unsafe.Pointer(&ch))
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); e != 0 {
		t.Fatalf("ETHTOOL_GCHANNELS %s: %v", ifname, e)
	}
	ch.cmd, ch.rxCount, ch.txCount = unix.ETHTOOL_SCHANNELS, rx, tx
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); e != 0 {
		t.Fatalf("ETHTOOL_SCHANNELS %s rx %d tx %d: %v", ifname, rx, tx, e)
	}
}
