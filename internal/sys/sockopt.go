package sys

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// SocketDrops reads a socket's drop counter (sk_drops) with getsockopt
// SO_MEMINFO: the packets the kernel dropped for want of room in the
// socket's receive buffer.
func SocketDrops(fd int) (uint32, error) {
	var mem [unix.SK_MEMINFO_VARS]uint32
	if err := getsockopt(fd, unix.SOL_SOCKET, unix.SO_MEMINFO, &mem); err != nil {
		return 0, fmt.Errorf("read socket drops (SO_MEMINFO): %w", err)
	}
	return mem[unix.SK_MEMINFO_DROPS], nil
}

// ConnDrops is SocketDrops for the socket under c (a *net.UDPConn, say).
func ConnDrops(c syscall.Conn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("read socket drops: %w", err)
	}
	var n uint32
	var serr error
	if err := raw.Control(func(fd uintptr) { n, serr = SocketDrops(int(fd)) }); err != nil {
		return 0, fmt.Errorf("read socket drops: %w", err)
	}
	return n, serr
}
