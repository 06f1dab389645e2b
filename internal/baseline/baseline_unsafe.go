package baseline

import (
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The status words of packet ring blocks and frames are shared with the
// kernel, which reads and writes them concurrently: access them atomically,
// so that the compiler and CPU order them against the frame data (the
// kernel pairs them with smp_rmb/smp_wmb).

// loadStatus atomically reads the 32-bit word at b[off:]; off must be 4-byte
// aligned within a mapping that is.
func loadStatus(b []byte, off int) uint32 {
	_ = b[off+3]
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[off])))
}

// storeStatus atomically writes the 32-bit word at b[off:].
func storeStatus(b []byte, off int, v uint32) {
	_ = b[off+3]
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[off])), v)
}

// mmsgs is a reusable vector of message headers for recvmmsg and sendmmsg,
// one buffer per message, driven through the socket's RawConn so that the
// runtime poller waits for readiness and honours deadlines. golang.org/x/net
// ipv4's ReadBatch and WriteBatch allocate per message; this allocates
// nothing per call: the headers point at buffers made once, and the poller
// callbacks are bound once.
type mmsgs struct {
	raw  syscall.RawConn
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
	name unix.RawSockaddrInet4 // destination for sendmmsg, if set

	// In and out of the callbacks.
	vlen  int
	done  int
	errno syscall.Errno

	readFn, writeFn func(fd uintptr) bool
}

func newMmsgs(raw syscall.RawConn, bufs [][]byte) *mmsgs {
	m := &mmsgs{raw: raw, bufs: bufs, hdrs: make([]unix.Mmsghdr, len(bufs)), iovs: make([]unix.Iovec, len(bufs))}
	for i, b := range bufs {
		m.iovs[i].Base = &b[0]
		m.iovs[i].SetLen(len(b))
		m.hdrs[i].Hdr.Iov = &m.iovs[i]
		m.hdrs[i].Hdr.SetIovlen(1)
	}
	// MSG_TRUNC: a datagram longer than its buffer gives its whole
	// length, and the flag in its header.
	m.readFn = func(fd uintptr) bool { return m.call(fd, unix.SYS_RECVMMSG, unix.MSG_TRUNC) }
	m.writeFn = func(fd uintptr) bool { return m.call(fd, unix.SYS_SENDMMSG, 0) }
	return m
}

// setDest makes every message go to dst (an unconnected socket's sendmmsg).
func (m *mmsgs) setDest(dst netip.AddrPort) {
	m.name = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&m.name.Port))
	p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
	for i := range m.hdrs {
		m.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&m.name))
		m.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
}

// call runs one recvmmsg or sendmmsg; it returns false to make the poller
// wait when the socket would block.
func (m *mmsgs) call(fd uintptr, nr uintptr, flags uintptr) bool {
	for {
		n, _, e := unix.Syscall6(nr, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(m.vlen), unix.MSG_DONTWAIT|flags, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		m.done, m.errno = int(n), e
		return true
	}
}

// recv receives up to vlen datagrams; msgLen(i) gives their lengths, which
// may be longer than their buffers (see truncated).
func (m *mmsgs) recv(vlen int) (int, error) {
	for i := range vlen {
		m.iovs[i].SetLen(len(m.bufs[i]))
	}
	m.vlen = vlen
	if err := m.raw.Read(m.readFn); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", m.errno)
	}
	return m.done, nil
}

// send sends the first vlen buffers, each cut to length l.
func (m *mmsgs) send(vlen, l int) (int, error) {
	for i := range vlen {
		m.iovs[i].SetLen(l)
	}
	m.vlen = vlen
	if err := m.raw.Write(m.writeFn); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, os.NewSyscallError("sendmmsg", m.errno)
	}
	return m.done, nil
}

func (m *mmsgs) msgLen(i int) int { return int(m.hdrs[i].Len) }

// truncated reports whether received message i was longer than its
// buffer, which holds its start.
func (m *mmsgs) truncated(i int) bool { return m.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 }
