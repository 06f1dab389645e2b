package ring

import "unsafe"

// The functions here alias ring memory, which may be a kernel mapping, with
// Go pointers. newShared checks bounds and alignment before calling them.

func entrySize[T Entry]() uint64 {
	var zero T
	return uint64(unsafe.Sizeof(zero))
}

func aligned(mem []byte) bool {
	return len(mem) == 0 || uintptr(unsafe.Pointer(&mem[0]))%8 == 0
}

// word returns a pointer to the 32-bit word at off in mem.
func word(mem []byte, off uint64) *uint32 {
	return (*uint32)(unsafe.Pointer(&mem[off]))
}

// entries returns the n entries starting at off in mem.
func entries[T Entry](mem []byte, off uint64, n uint32) []T {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&mem[off])), n)
}
