package sys

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// XSKSocket creates an AF_XDP socket.
func XSKSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

// SetRingSize sets the size of the ring opt (unix.XDP_RX_RING,
// XDP_TX_RING, XDP_UMEM_FILL_RING or XDP_UMEM_COMPLETION_RING).
func SetRingSize(fd, opt, size int) error {
	return os.NewSyscallError("setsockopt", unix.SetsockoptInt(fd, unix.SOL_XDP, opt, size))
}

// Bind binds an AF_XDP socket to a queue of an interface.
func Bind(fd, ifindex, queue int, flags uint16) error {
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	return os.NewSyscallError("bind", unix.Bind(fd, sa))
}

// BindShared binds fd to queue of ifindex on the UMEM of the socket
// sharedFD (XDP_SHARED_UMEM).
func BindShared(fd, ifindex, queue, sharedFD int) error {
	sa := &unix.SockaddrXDP{Flags: unix.XDP_SHARED_UMEM, Ifindex: uint32(ifindex), QueueID: uint32(queue), SharedUmemFD: uint32(sharedFD)}
	return os.NewSyscallError("bind", unix.Bind(fd, sa))
}

// XDPOptions returns the socket's XDP_OPTIONS flags (XDP_OPTIONS_ZEROCOPY).
func XDPOptions(fd int) (uint32, error) {
	v, err := unix.GetsockoptInt(fd, unix.SOL_XDP, unix.XDP_OPTIONS)
	if err != nil {
		return 0, os.NewSyscallError("getsockopt", err)
	}
	return uint32(v), nil
}

// SetsockoptInt sets an integer socket option.
func SetsockoptInt(fd, level, opt, v int) error {
	return os.NewSyscallError("setsockopt", unix.SetsockoptInt(fd, level, opt, v))
}

// IncomingNAPIID returns SO_INCOMING_NAPI_ID of the socket fd: the NAPI
// instance its last packet came from (0: none with an ID).
func IncomingNAPIID(fd int) (uint32, error) {
	id, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_INCOMING_NAPI_ID)
	if err != nil {
		return 0, os.NewSyscallError("getsockopt SO_INCOMING_NAPI_ID", err)
	}
	return uint32(id), nil
}

// Mmap maps length bytes of the socket fd at offset (one of the
// XDP_PGOFF_* / XDP_UMEM_PGOFF_* constants) shared and populated.
func Mmap(fd int, offset int64, length int) ([]byte, error) {
	b, err := unix.Mmap(fd, offset, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// MmapAnon maps length bytes of private anonymous memory, populated up
// front, with huge pages if asked.
func MmapAnon(length int, huge bool) ([]byte, error) {
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_POPULATE
	if huge {
		flags |= unix.MAP_HUGETLB
	}
	b, err := unix.Mmap(-1, 0, length, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return b, nil
}

// Munmap unmaps b; a nil b is a no-op.
func Munmap(b []byte) error {
	if b == nil {
		return nil
	}
	return os.NewSyscallError("munmap", unix.Munmap(b))
}

// Close closes fd.
func Close(fd int) error {
	return os.NewSyscallError("close", unix.Close(fd))
}

// Kick asks the kernel to process the TX ring: sendto(fd, NULL, 0,
// MSG_DONTWAIT). It returns the raw errno (0 on success) and allocates
// nothing.
//
// Kick and WakeRx use RawSyscall: the calls never sleep (MSG_DONTWAIT), so
// the Go scheduler's bookkeeping around a blocking system call (handing the
// P off, taking it back) is pure cost, and in copy mode, where every frame
// is sent inside this call, that cost is per batch on the hot path. It cut
// txonly's CPU per packet from 1.54 to 1.32 CPU-s per million packets on a
// veth pair here (bench/cmd/compare -only txonly) and raised the rate 3-14%.
// The price: the goroutine holds its P for the call's duration (up to
// TxBudget frames' work).
func Kick(fd int) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// WakeRx asks the kernel to refill from the fill ring and deliver to the RX
// ring: recvfrom(fd, NULL, 0, MSG_DONTWAIT). It returns the raw errno.
func WakeRx(fd int) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// Eventfd creates a non-blocking eventfd used to interrupt Poll.
func Eventfd() (int, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, os.NewSyscallError("eventfd", err)
	}
	return fd, nil
}

// Signal adds one to the eventfd fd, waking any Poll on it.
func Signal(fd int) error {
	var one = [8]byte{1}
	_, err := unix.Write(fd, one[:])
	if err == unix.EAGAIN {
		return nil // the counter is saturated: already signalled
	}
	return os.NewSyscallError("write", err)
}

// Poll waits for events on fds for at most timeout (negative: forever),
// retrying on EINTR with the remaining time. It returns the number of fds
// with events.
func Poll(fds []unix.PollFd, timeout time.Duration) (int, error) {
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		ms := -1
		if timeout >= 0 {
			rem := time.Until(deadline)
			if rem < 0 {
				rem = 0
			}
			ms = int((rem + time.Millisecond - 1) / time.Millisecond)
		}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("poll", err)
		}
		return n, nil
	}
}

// MmapOffsets returns the ring offsets the kernel reports.
func MmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	if err := getsockopt(fd, unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, &off); err != nil {
		return off, fmt.Errorf("read ring offsets: %w", err)
	}
	return off, nil
}

// Statistics returns the socket's XDP_STATISTICS. Fields the kernel does
// not report (older kernels report fewer) stay zero.
func Statistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	err := statistics(fd, &st)
	return st, err
}

// RegisterUMEM registers the memory at addr, length bytes, as the socket's
// UMEM with frames of frameSize bytes and headroom bytes reserved in each.
func RegisterUMEM(fd int, addr uintptr, length uint64, frameSize, headroom uint32) error {
	reg := unix.XDPUmemReg{
		Addr:     uint64(addr),
		Len:      length,
		Size:     frameSize,
		Headroom: headroom,
	}
	return setsockopt(fd, unix.SOL_XDP, unix.XDP_UMEM_REG, &reg)
}

// MemlockLimit is the calling process's soft RLIMIT_MEMLOCK in bytes,
// with unix.RLIM_INFINITY for no limit.
func MemlockLimit() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil {
		return 0, os.NewSyscallError("getrlimit", err)
	}
	return rl.Cur, nil
}
