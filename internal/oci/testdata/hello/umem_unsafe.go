package main

import (
	"syscall"
	"unsafe"
)

// tryUMEM registers size bytes of anonymous memory as an AF_XDP UMEM, which
// the kernel charges against RLIMIT_MEMLOCK unless the process has
// CAP_IPC_LOCK.
func tryUMEM(size int) string {
	fd, err := syscall.Socket(44 /* AF_XDP */, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return "error socket: " + err.Error()
	}
	defer syscall.Close(fd)
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return "error mmap: " + err.Error()
	}
	defer syscall.Munmap(mem)
	// struct xdp_umem_reg: addr, len u64; chunk_size, headroom, flags,
	// tx_metadata_len u32.
	reg := struct {
		addr, len                          uint64
		chunk, headroom, flags, txMetadata uint32
	}{uint64(uintptr(unsafe.Pointer(&mem[0]))), uint64(size), 4096, 0, 0, 0}
	const solXDP, xdpUMEMReg = 283, 4
	_, _, e := syscall.Syscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), solXDP, xdpUMEMReg,
		uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0)
	if e != 0 {
		return "error register: " + e.Error()
	}
	return "ok"
}
