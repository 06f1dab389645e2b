package agent

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// mapGetFDByIDAttr is the part of union bpf_attr that BPF_MAP_GET_FD_BY_ID
// reads.
type mapGetFDByIDAttr struct {
	mapID     uint32
	nextID    uint32
	openFlags uint32
}

// readOnlyMapFD opens a new descriptor of m that only reads the map from
// user space (BPF_F_RDONLY): the kernel refuses updates through it with
// EPERM. The descriptor is close-on-exec; the caller closes it.
func readOnlyMapFD(m *ebpf.Map) (int, error) {
	info, err := m.Info()
	if err != nil {
		return -1, fmt.Errorf("open read-only xskmap: %w", err)
	}
	id, ok := info.ID()
	if !ok {
		return -1, fmt.Errorf("open read-only xskmap: map id: %w", unix.ENOTSUP)
	}
	attr := mapGetFDByIDAttr{mapID: uint32(id), openFlags: unix.BPF_F_RDONLY}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_GET_FD_BY_ID, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, fmt.Errorf("open read-only xskmap: %w", os.NewSyscallError("bpf BPF_MAP_GET_FD_BY_ID", errno))
	}
	return int(fd), nil
}
