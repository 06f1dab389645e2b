package sys

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// getsockopt reads a struct option into *v. The kernel may write fewer
// bytes than the struct holds (an older layout); the rest stays zero.
func getsockopt[T any](fd, level, opt int, v *T) error {
	size := uint32(unsafe.Sizeof(*v))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(v)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return os.NewSyscallError("getsockopt", e)
	}
	return nil
}

// setsockopt writes a struct option from *v.
func setsockopt[T any](fd, level, opt int, v *T) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(v)), unsafe.Sizeof(*v), 0)
	if e != 0 {
		return os.NewSyscallError("setsockopt", e)
	}
	return nil
}

// Addr is the address of b's first byte, for the kernel.
func Addr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}

// statistics reads XDP_STATISTICS into *st. It is getsockopt written out
// for the one type: through the generic function, *st escapes to the heap
// (the shape instance is not inlined across packages), and statistics are
// read in loops that must not allocate (benchmarks read them every
// iteration).
func statistics(fd int, st *unix.XDPStatistics) error {
	size := uint32(unsafe.Sizeof(*st))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(st)), uintptr(unsafe.Pointer(&size)), 0)
	if e != 0 {
		return os.NewSyscallError("getsockopt", e)
	}
	return nil
}
