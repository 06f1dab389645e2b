package matrix

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// socketDrops reads a socket's drop counter (sk_drops) with getsockopt
// SO_MEMINFO: what the kernel dropped for want of room in its receive
// buffer. The only use of package unsafe here.
func socketDrops(fd int) (uint64, error) {
	var mem [unix.SK_MEMINFO_VARS]uint32
	l := uint32(unsafe.Sizeof(mem))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return uint64(mem[unix.SK_MEMINFO_DROPS]), nil
}
