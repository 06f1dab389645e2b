package xsk_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/sys"
	"golang.org/x/sys/unix"
)

const testPort = 9000

// packetSocket is a raw AF_PACKET socket on one interface: the kernel's
// own way of sending and receiving frames, used as the far end of tests.
type packetSocket struct {
	fd int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// newPacketSocket opens a packet socket bound to ep, inside ep's namespace.
func newPacketSocket(t testing.TB, ep netenv.Endpoint) *packetSocket {
	t.Helper()
	var fd int
	err := ep.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
			return err
		}
		// Only frames that arrive, not the ones this host sends.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ep.Index})
	})
	if err != nil {
		if fd > 0 {
			unix.Close(fd)
		}
		t.Fatalf("packet socket on %s: %v", ep.Name, err)
	}
	p := &packetSocket{fd: fd}
	t.Cleanup(func() { unix.Close(fd) })
	return p
}

func (p *packetSocket) send(t testing.TB, frame []byte) {
	for {
		_, err := unix.Write(p.fd, frame)
		if err == nil {
			return
		}
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(10 * time.Microsecond)
			continue
		}
		t.Errorf("packet socket send: %v", err)
		return
	}
}

// recv reads one frame into buf, waiting at most timeout; it returns 0 on
// timeout.
func (p *packetSocket) recv(t testing.TB, buf []byte, timeout time.Duration) int {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(timeout/time.Millisecond))
	if err != nil && !errors.Is(err, unix.EINTR) {
		t.Errorf("poll packet socket: %v", err)
		return 0
	}
	if n == 0 {
		return 0
	}
	m, _, err := unix.Recvfrom(p.fd, buf, unix.MSG_DONTWAIT)
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return 0
		}
		t.Errorf("packet socket recv: %v", err)
		return 0
	}
	return m
}

// flow describes test frames from one endpoint to another.
type flow struct {
	hdr        packet.UDP
	payloadLen int
}

func newFlow(from, to netenv.Endpoint, payloadLen int) *flow {
	return &flow{
		hdr: packet.UDP{
			SrcMAC: from.MAC, DstMAC: to.MAC,
			SrcIP: addrOr(from.Addr, "10.0.0.1"), DstIP: addrOr(to.Addr, "10.0.0.2"),
			SrcPort: 40000, DstPort: testPort,
		},
		payloadLen: payloadLen,
	}
}

func addrOr(p netip.Prefix, def string) netip.Addr {
	if p.IsValid() {
		return p.Addr()
	}
	return netip.MustParseAddr(def)
}

// payloadLenFor varies the payload length with the sequence number so that
// lengths are checked too.
func (f *flow) payloadLenFor(seq uint64) int {
	return f.payloadLen + int(seq%7)
}

// write builds frame seq into b and returns its length.
func (f *flow) write(b []byte, seq uint64) (int, error) {
	plen := f.payloadLenFor(seq)
	if len(b) < packet.FrameLen(plen) {
		return 0, fmt.Errorf("buffer of %d bytes too small", len(b))
	}
	packet.FillPayload(b[packet.HeadersLen:packet.HeadersLen+plen], seq)
	h := f.hdr
	h.ID = uint16(seq)
	return h.Write(b, plen)
}

// ours reports whether frame belongs to the flow by its headers alone
// (IPv4, UDP, the flow's ports), so that a receiver that also sees the
// kernel's own traffic (ARP, ICMP) can skip the rest.
func (f *flow) ours(frame []byte) bool {
	if len(frame) < packet.HeadersLen || binary.BigEndian.Uint16(frame[12:14]) != 0x0800 || frame[23] != 17 {
		return false
	}
	ihl := int(frame[14]&0x0f) * 4
	if len(frame) < 14+ihl+8 {
		return false
	}
	udp := frame[14+ihl:]
	return binary.BigEndian.Uint16(udp[0:2]) == f.hdr.SrcPort && binary.BigEndian.Uint16(udp[2:4]) == f.hdr.DstPort
}

// check verifies that frame is frame seq of this flow, byte for byte, and
// returns seq.
func (f *flow) check(frame []byte) (uint64, error) {
	p, err := packet.Parse(frame)
	if err != nil {
		return 0, err
	}
	seq, ok := packet.CheckPayload(p.Payload)
	if !ok {
		return seq, fmt.Errorf("frame %d: payload corrupted", seq)
	}
	if len(p.Payload) != f.payloadLenFor(seq) {
		return seq, fmt.Errorf("frame %d: payload of %d bytes, want %d", seq, len(p.Payload), f.payloadLenFor(seq))
	}
	if p.DstPort != f.hdr.DstPort || p.SrcIP != f.hdr.SrcIP || binary.BigEndian.Uint16(frame[18:20]) != uint16(seq) {
		return seq, fmt.Errorf("frame %d: headers %+v do not match the flow", seq, p)
	}
	return seq, nil
}

// seen records sequence numbers and catches duplicates.
type seen struct {
	bits []uint64
	n    int
}

func newSeen(total int) *seen { return &seen{bits: make([]uint64, (total+63)/64)} }

func (s *seen) add(seq uint64) error {
	if seq >= uint64(len(s.bits))*64 {
		return fmt.Errorf("sequence %d out of range", seq)
	}
	w, b := seq/64, seq%64
	if s.bits[w]&(1<<b) != 0 {
		return fmt.Errorf("frame %d received twice", seq)
	}
	s.bits[w] |= 1 << b
	s.n++
	return nil
}

// receiveAll reads frames of fl from the packet socket until want have
// arrived or the deadline passes, verifying each; frames of other traffic
// (the kernel's ARP, ICMP) are skipped. It reports progress in got.
func (p *packetSocket) receiveAll(t testing.TB, fl *flow, want int, got *atomic.Int64, deadline time.Time) *seen {
	sn := newSeen(want)
	buf := make([]byte, 2048)
	for sn.n < want && time.Now().Before(deadline) {
		n := p.recv(t, buf, 100*time.Millisecond)
		if n == 0 || !fl.ours(buf[:n]) {
			continue
		}
		seq, err := fl.check(buf[:n])
		if err == nil {
			err = sn.add(seq)
		}
		if err != nil {
			t.Error(err)
			return sn
		}
		got.Add(1)
	}
	return sn
}

// holdNAPI holds back ep's NAPI poll for d, as a busy machine does when
// it leaves the poll to a ksoftirqd that does not get the CPU. ep's NAPI
// must be threaded (app.SetVethThreadedNAPI) and have its threads (on
// veth: a socket with its program is open). The calling goroutine is wired
// to one CPU for the rest of its life (its thread ends with it), and the
// NAPI threads are moved there with SCHED_IDLE, so that they run only when
// that CPU has nothing else to do. After d, or at the end of the test,
// they get their normal policy and every CPU back.
func holdNAPI(t *testing.T, ep netenv.Endpoint, d time.Duration) {
	t.Helper()
	cpus, err := sys.AllowedCPUs()
	if err != nil || len(cpus) == 0 {
		t.Fatalf("allowed cpus: %v %v", cpus, err)
	}
	all, err := sys.AllowedCPUSet()
	if err != nil {
		t.Fatal(err)
	}
	pids := napiThreads(t, ep)
	runtime.LockOSThread() // never unlocked: the thread goes with the goroutine
	var one unix.CPUSet
	one.Set(cpus[0])
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatalf("pin the sender to cpu %d: %v", cpus[0], err)
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			for _, pid := range pids {
				if err := unix.SchedSetAttr(pid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}, 0); err != nil {
					t.Errorf("napi thread %d: back to SCHED_NORMAL: %v", pid, err)
				}
				if err := unix.SchedSetaffinity(pid, &all); err != nil {
					t.Errorf("napi thread %d: unpin: %v", pid, err)
				}
			}
		})
	}
	t.Cleanup(release)
	for _, pid := range pids {
		if err := unix.SchedSetaffinity(pid, &one); err != nil {
			t.Fatalf("pin napi thread %d to cpu %d: %v", pid, cpus[0], err)
		}
		if err := unix.SchedSetAttr(pid, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}, 0); err != nil {
			t.Fatalf("napi thread %d: SCHED_IDLE: %v", pid, err)
		}
	}
	timer := time.AfterFunc(d, release)
	t.Cleanup(func() { timer.Stop() })
}

// napiThreads returns the pids of ep's threaded-NAPI kernel threads,
// failing the test when there are none.
func napiThreads(t *testing.T, ep netenv.Endpoint) []int {
	t.Helper()
	pids, err := app.NAPIThreads(ep)
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) == 0 {
		t.Fatalf("no threaded-NAPI threads for %s", ep.Name)
	}
	return pids
}
