package bpf

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newBoundXSK returns an AF_XDP socket bound, in copy mode, to queue of
// ifindex, with the least set-up the kernel accepts for a bind: a small
// UMEM, fill and completion rings and an RX ring (none of them mapped). The
// kernel takes any AF_XDP socket into an XSKMAP, but redirects into one
// that is not bound to the frame's device and queue fail. Everything is
// released in t.Cleanup.
//
// The xsk package owns real sockets; this helper exists so that bpf's tests
// do not depend on it (the dependency runs the other way).
func newBoundXSK(t testing.TB, ifindex, queue int) int {
	t.Helper()
	const (
		frameSize = 4096
		frames    = 16
		ringSize  = 16
	)
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("create AF_XDP socket: %v", os.NewSyscallError("socket", err))
	}
	mem, err := unix.Mmap(-1, 0, frameSize*frames, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		unix.Close(fd)
		t.Fatalf("map umem: %v", os.NewSyscallError("mmap", err))
	}
	// Close the socket before unmapping the memory it was given.
	t.Cleanup(func() {
		unix.Close(fd)
		unix.Munmap(mem)
	})

	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
		Len:  uint64(len(mem)),
		Size: frameSize,
	}
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0)
	if errno != 0 {
		t.Fatalf("register umem: %v", os.NewSyscallError("setsockopt", errno))
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, opt, ringSize); err != nil {
			t.Fatalf("size ring %d: %v", opt, os.NewSyscallError("setsockopt", err))
		}
	}
	sa := &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatalf("bind AF_XDP socket to ifindex %d queue %d: %v", ifindex, queue, os.NewSyscallError("bind", err))
	}
	return fd
}
