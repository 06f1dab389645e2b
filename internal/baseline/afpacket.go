package baseline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Offsets in the kernel's ring structures (include/uapi/linux/if_packet.h).
const (
	// struct tpacket_block_desc: version, offset_to_priv, then
	// tpacket_hdr_v1 {block_status, num_pkts, offset_to_first_pkt, ...}.
	blkStatus   = 8
	blkNumPkts  = 12
	blkFirstPkt = 16
	// struct tpacket3_hdr.
	t3NextOffset = 0
	t3Snaplen    = 12
	t3Len        = 16
	t3Mac        = 24
	// struct tpacket2_hdr.
	t2Status = 0
	t2Len    = 4
	// Frame data in a TPACKET_V2 TX ring starts at
	// TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) = 52 - 20.
	t2Data = 32
)

// AFPacketRxOptions configures [NewAFPacketReceiver]. The zero value means
// the defaults: 16 blocks of 256 KiB, 2 KiB frames, 1 ms block timeout,
// every EtherType.
type AFPacketRxOptions struct {
	// BlockSize is the size of a ring block in bytes: a multiple of the
	// page size and a power of two. Default 256 KiB.
	BlockSize int
	// Blocks is the number of blocks in the ring. Default 16.
	Blocks int
	// FrameSize is tp_frame_size, the largest frame plus its header;
	// a multiple of 16. Default 2048.
	FrameSize int
	// RetireTimeout is how long the kernel fills a block before handing
	// it to the reader anyway (tp_retire_blk_tov, in whole
	// milliseconds). Default 1 ms.
	RetireTimeout time.Duration
	// Protocol is the EtherType to receive, host order. Default
	// ETH_P_ALL.
	Protocol uint16
	// DstPort, when set, keeps only IPv4 UDP datagrams to that port
	// (whole ones or first fragments), with a socket filter that the
	// kernel runs before it queues a frame: the stray frames of a
	// topology (a bridge's, say) are then not counted as received.
	DstPort uint16
	// OnPacket, when set, is called by Receive for every frame, which is
	// valid only during the call.
	OnPacket func(frame []byte)
}

// AFPacketReceiver receives the frames arriving at one interface through a
// TPACKET_V3 ring. Frames the host itself sends are not seen
// (PACKET_IGNORE_OUTGOING). One goroutine at a time may call Receive; Stats
// may be called from others. Close must not race with Receive.
type AFPacketReceiver struct {
	fd      int
	ifindex int
	ring    []byte
	opts    AFPacketRxOptions
	pfd     [1]unix.PollFd

	// Position of the reader: current block, and within it the next
	// packet's index and offset when a Receive stopped mid-block.
	blk, pkt, poff int

	counters
}

// NewAFPacketReceiver opens a packet socket bound to the interface ifindex
// in the calling thread's network namespace, with a TPACKET_V3 RX ring.
func NewAFPacketReceiver(ifindex int, opts *AFPacketRxOptions) (_ *AFPacketReceiver, err error) {
	var o AFPacketRxOptions
	if opts != nil {
		o = *opts
	}
	page := os.Getpagesize()
	if o.BlockSize == 0 {
		o.BlockSize = 256 << 10
	}
	if o.Blocks == 0 {
		o.Blocks = 16
	}
	if o.FrameSize == 0 {
		o.FrameSize = 2048
	}
	if o.RetireTimeout == 0 {
		o.RetireTimeout = time.Millisecond
	}
	if o.Protocol == 0 {
		o.Protocol = unix.ETH_P_ALL
	}
	switch {
	case ifindex <= 0 || ifindex > math.MaxInt32:
		return nil, fmt.Errorf("create af_packet receiver: ifindex %d: %w", ifindex, unix.ENODEV)
	case o.BlockSize < page || o.BlockSize%page != 0 || o.BlockSize&(o.BlockSize-1) != 0:
		return nil, fmt.Errorf("create af_packet receiver: BlockSize %d: must be a power of two and a multiple of %d", o.BlockSize, page)
	case o.Blocks < 1 || o.Blocks > 1<<16 || o.BlockSize*o.Blocks > 1<<30:
		return nil, fmt.Errorf("create af_packet receiver: Blocks %d: must be between 1 and %d and the ring at most 1 GiB", o.Blocks, 1<<16)
	case o.FrameSize < 64 || o.FrameSize%16 != 0 || o.FrameSize > o.BlockSize:
		return nil, fmt.Errorf("create af_packet receiver: FrameSize %d: must be a multiple of 16 between 64 and BlockSize", o.FrameSize)
	case o.RetireTimeout < time.Millisecond || o.RetireTimeout > time.Minute:
		return nil, fmt.Errorf("create af_packet receiver: RetireTimeout %v: must be between 1ms and 1m", o.RetireTimeout)
	}

	r := &AFPacketReceiver{fd: -1, ifindex: ifindex, opts: o}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	// Protocol 0 until bind: no frame is queued before the ring exists.
	r.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create af_packet receiver: %w", os.NewSyscallError("socket", err))
	}
	if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, fmt.Errorf("create af_packet receiver: %w", os.NewSyscallError("setsockopt PACKET_VERSION", err))
	}
	if err := unix.SetsockoptInt(r.fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return nil, fmt.Errorf("create af_packet receiver: %w", os.NewSyscallError("setsockopt PACKET_IGNORE_OUTGOING", err))
	}
	if o.DstPort != 0 {
		prog := udpPortFilter(o.DstPort)
		fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
		if err := unix.SetsockoptSockFprog(r.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
			return nil, fmt.Errorf("create af_packet receiver: %w", os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err))
		}
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(o.BlockSize),
		Block_nr:       uint32(o.Blocks),
		Frame_size:     uint32(o.FrameSize),
		Frame_nr:       uint32(o.BlockSize / o.FrameSize * o.Blocks),
		Retire_blk_tov: uint32(o.RetireTimeout / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(r.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("create af_packet receiver: %w", os.NewSyscallError("setsockopt PACKET_RX_RING", err))
	}
	r.ring, err = unix.Mmap(r.fd, 0, o.BlockSize*o.Blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("create af_packet receiver: %w", os.NewSyscallError("mmap", err))
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(o.Protocol), Ifindex: ifindex}
	if err := unix.Bind(r.fd, sa); err != nil {
		return nil, fmt.Errorf("create af_packet receiver on ifindex %d: %w", ifindex, os.NewSyscallError("bind", err))
	}
	r.pfd[0] = unix.PollFd{Fd: int32(r.fd), Events: unix.POLLIN | unix.POLLERR}
	return r, nil
}

// udpPortFilter is a classic BPF socket filter that keeps IPv4 UDP frames
// to port (not later fragments, which have no UDP header) and drops the
// rest.
func udpPortFilter(port uint16) []unix.SockFilter {
	const (
		ldh  = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
		ldb  = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
		ldhx = unix.BPF_LD | unix.BPF_H | unix.BPF_IND
		msh  = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH
		jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jset = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		ret  = unix.BPF_RET | unix.BPF_K
	)
	// A jump skips that many instructions after its own; the last is the
	// drop.
	return []unix.SockFilter{
		{Code: ldh, K: 12},                         // 0: EtherType
		{Code: jeq, K: 0x0800, Jt: 0, Jf: 8},       // 1: IPv4, else drop
		{Code: ldb, K: 23},                         // 2: IP protocol
		{Code: jeq, K: 17, Jt: 0, Jf: 6},           // 3: UDP, else drop
		{Code: ldh, K: 20},                         // 4: flags and fragment offset
		{Code: jset, K: 0x1fff, Jt: 4, Jf: 0},      // 5: a later fragment: drop
		{Code: msh, K: 14},                         // 6: X = IP header length
		{Code: ldhx, K: 16},                        // 7: UDP destination port
		{Code: jeq, K: uint32(port), Jt: 0, Jf: 1}, // 8: the port, else drop
		{Code: ret, K: 0xffffffff},                 // 9: keep
		{Code: ret, K: 0},                          // 10: drop
	}
}

// Receive takes frames from the ring until it has n of them (n == 0: no
// limit) or deadline passes, and returns what it took. Reaching the deadline
// is not an error; it is checked before each block, so a call may pass it
// by the time one block's frames take. A frame is counted with its length
// on the wire (tp_len). When the interface has gone down, Receive returns
// an error wrapping ENETDOWN, once: the socket takes frames again once the
// interface is up.
func (r *AFPacketReceiver) Receive(n uint64, deadline time.Time) (Counts, error) {
	var c Counts
	defer r.add(&c)
	if r.ring == nil {
		return c, fmt.Errorf("receive af_packet: %w", net.ErrClosed)
	}
	bs := r.opts.BlockSize
	for n == 0 || c.Packets < n {
		off := r.blk * bs
		// Also when blocks are ready: while frames come faster than
		// they are handled, some always are.
		wait := time.Until(deadline)
		if wait <= 0 {
			return c, nil
		}
		if loadStatus(r.ring, off+blkStatus)&unix.TP_STATUS_USER == 0 {
			ms := int(min(wait, 100*time.Millisecond)/time.Millisecond) + 1
			if _, err := unix.Poll(r.pfd[:], ms); err != nil && !errors.Is(err, unix.EINTR) {
				return c, fmt.Errorf("receive af_packet: %w", os.NewSyscallError("poll", err))
			}
			if r.pfd[0].Revents&unix.POLLERR != 0 {
				// A socket error (ENETDOWN when the interface
				// went down) keeps poll returning at once
				// until it is read, which clears it.
				e, err := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
				if err != nil {
					return c, fmt.Errorf("receive af_packet: %w", os.NewSyscallError("getsockopt SO_ERROR", err))
				}
				if e != 0 {
					return c, fmt.Errorf("receive af_packet on ifindex %d: %w", r.ifindex, unix.Errno(e))
				}
			}
			continue
		}
		blk := r.ring[off : off+bs]
		num := int(binary.NativeEndian.Uint32(blk[blkNumPkts:]))
		if r.pkt == 0 {
			r.poff = int(binary.NativeEndian.Uint32(blk[blkFirstPkt:]))
		}
		for r.pkt < num && (n == 0 || c.Packets < n) {
			h := blk[r.poff:]
			snap := int(binary.NativeEndian.Uint32(h[t3Snaplen:]))
			mac := int(binary.NativeEndian.Uint16(h[t3Mac:]))
			c.Packets++
			c.Bytes += uint64(binary.NativeEndian.Uint32(h[t3Len:]))
			if r.opts.OnPacket != nil {
				r.opts.OnPacket(h[mac : mac+snap])
			}
			r.poff += int(binary.NativeEndian.Uint32(h[t3NextOffset:]))
			r.pkt++
		}
		if r.pkt < num {
			return c, nil // n reached mid-block: resume here next time
		}
		// Hand the block back to the kernel.
		storeStatus(r.ring, off+blkStatus, unix.TP_STATUS_KERNEL)
		r.pkt, r.poff = 0, 0
		r.blk = (r.blk + 1) % r.opts.Blocks
	}
	return c, nil
}

// Stats returns the counters since NewAFPacketReceiver; Drops are the
// frames the kernel found no room for in the ring (tp_drops). After Close,
// they are the counters at Close.
func (r *AFPacketReceiver) Stats() (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		if err := r.readDrops(); err != nil {
			return r.stats, err
		}
	}
	return r.stats, nil
}

// readDrops adds the kernel's drop count to r.stats; r.mu is held.
func (r *AFPacketReceiver) readDrops() error {
	// Reading PACKET_STATISTICS resets the kernel's counters.
	st, err := unix.GetsockoptTpacketStatsV3(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return fmt.Errorf("read af_packet statistics: %w", os.NewSyscallError("getsockopt PACKET_STATISTICS", err))
	}
	r.stats.Drops += uint64(st.Drops)
	return nil
}

// Close unmaps the ring and closes the socket, keeping the drop count for
// Stats. A second Close returns nil.
func (r *AFPacketReceiver) Close() error {
	return r.closeOnce(func() error {
		var errs []error
		if r.fd >= 0 && r.ring != nil { // a socket that got as far as its ring
			if err := r.readDrops(); err != nil {
				errs = append(errs, fmt.Errorf("close af_packet receiver: %w", err))
			}
		}
		return errors.Join(append(errs, closeRing("af_packet receiver", r.fd, &r.ring))...)
	})
}

func closeRing(what string, fd int, ring *[]byte) error {
	var errs []error
	if *ring != nil {
		if err := unix.Munmap(*ring); err != nil {
			errs = append(errs, os.NewSyscallError("munmap", err))
		}
		*ring = nil
	}
	if fd >= 0 {
		if err := unix.Close(fd); err != nil {
			errs = append(errs, os.NewSyscallError("close", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close %s: %w", what, err)
	}
	return nil
}

// AFPacketTxOptions configures [NewAFPacketSender]. The zero value means
// 256 frames of 2 KiB, 64 frames per send(2), through the qdisc.
type AFPacketTxOptions struct {
	// Frames is the number of frames in the TX ring. Default 256.
	Frames int
	// FrameSize is the size of a ring frame, header included: a power
	// of two from 128 to the page size. Default 2048.
	FrameSize int
	// Batch is the number of frames queued before each send(2). Default
	// 64; at most Frames.
	Batch int
	// QdiscBypass hands frames straight to the driver
	// (PACKET_QDISC_BYPASS), as pktgen-style senders do.
	QdiscBypass bool
}

// AFPacketSender sends frames out of one interface through a TPACKET_V2 TX
// ring: each frame is copied into the ring and marked for sending, and one
// send(2) per batch makes the kernel transmit what is marked. This was
// chosen over sendmmsg on a raw socket because it needs one system call
// per batch and no per-frame message headers.
//
// One goroutine at a time may call Send; Close must not race with it.
type AFPacketSender struct {
	fd         int
	ring       []byte
	opts       AFPacketTxOptions
	perBlock   int // frames per block (the ring has one frame per page-sized block or fewer)
	blockSize  int
	head       int // next ring frame to fill
	queued     int // frames marked since the last send
	seq        uint64
	maxPayload int

	counters
}

// NewAFPacketSender opens a packet socket bound to the interface ifindex in
// the calling thread's network namespace, with a TPACKET_V2 TX ring.
func NewAFPacketSender(ifindex int, opts *AFPacketTxOptions) (_ *AFPacketSender, err error) {
	var o AFPacketTxOptions
	if opts != nil {
		o = *opts
	}
	page := os.Getpagesize()
	if o.Frames == 0 {
		o.Frames = 256
	}
	if o.FrameSize == 0 {
		o.FrameSize = 2048
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	switch {
	case ifindex <= 0 || ifindex > math.MaxInt32:
		return nil, fmt.Errorf("create af_packet sender: ifindex %d: %w", ifindex, unix.ENODEV)
	case o.FrameSize < 128 || o.FrameSize > page || o.FrameSize&(o.FrameSize-1) != 0:
		return nil, fmt.Errorf("create af_packet sender: FrameSize %d: must be a power of two between 128 and %d", o.FrameSize, page)
	case o.Frames < 1 || o.Frames > 1<<20:
		return nil, fmt.Errorf("create af_packet sender: Frames %d: must be between 1 and %d", o.Frames, 1<<20)
	case o.Batch < 1 || o.Batch > o.Frames:
		return nil, fmt.Errorf("create af_packet sender: Batch %d: must be between 1 and Frames (%d)", o.Batch, o.Frames)
	}
	perBlock := page / o.FrameSize
	if o.Frames%perBlock != 0 {
		return nil, fmt.Errorf("create af_packet sender: Frames %d: must be a multiple of %d (frames per page)", o.Frames, perBlock)
	}

	s := &AFPacketSender{fd: -1, opts: o, perBlock: perBlock, blockSize: page, maxPayload: o.FrameSize - t2Data}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create af_packet sender: %w", os.NewSyscallError("socket", err))
	}
	if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return nil, fmt.Errorf("create af_packet sender: %w", os.NewSyscallError("setsockopt PACKET_VERSION", err))
	}
	if o.QdiscBypass {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return nil, fmt.Errorf("create af_packet sender: %w", os.NewSyscallError("setsockopt PACKET_QDISC_BYPASS", err))
		}
	}
	req := unix.TpacketReq{
		Block_size: uint32(page),
		Block_nr:   uint32(o.Frames / perBlock),
		Frame_size: uint32(o.FrameSize),
		Frame_nr:   uint32(o.Frames),
	}
	if err := unix.SetsockoptTpacketReq(s.fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return nil, fmt.Errorf("create af_packet sender: %w", os.NewSyscallError("setsockopt PACKET_TX_RING", err))
	}
	s.ring, err = unix.Mmap(s.fd, 0, page*int(req.Block_nr), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("create af_packet sender: %w", os.NewSyscallError("mmap", err))
	}
	// Protocol 0: the socket transmits but receives nothing.
	if err := unix.Bind(s.fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		return nil, fmt.Errorf("create af_packet sender on ifindex %d: %w", ifindex, os.NewSyscallError("bind", err))
	}
	return s, nil
}

// MaxFrameLen is the longest frame the ring takes.
func (s *AFPacketSender) MaxFrameLen() int { return s.maxPayload }

// Send sends n copies of frame and returns what the kernel took. A device
// that refuses frames (ENOBUFS) is retried for up to a second; after a
// failure, the frames not sent are not counted, and the next call fills
// their ring frames again.
func (s *AFPacketSender) Send(frame []byte, n uint64) (Counts, error) {
	return s.send(n, frame, nil)
}

// SendFunc sends n frames that fill writes: it gets a running sequence
// number (from 0, across calls) and the ring frame's buffer, and returns the
// frame's length. Sequence numbers of frames not sent (see Send) are
// given again by the next call.
func (s *AFPacketSender) SendFunc(n uint64, fill func(seq uint64, b []byte) int) (Counts, error) {
	return s.send(n, nil, fill)
}

func (s *AFPacketSender) send(n uint64, frame []byte, fill func(uint64, []byte) int) (Counts, error) {
	var c Counts
	defer s.add(&c)
	if s.ring == nil {
		return c, fmt.Errorf("send af_packet: %w", net.ErrClosed)
	}
	if fill == nil && (len(frame) < 14 || len(frame) > s.maxPayload) {
		return c, fmt.Errorf("send af_packet: frame of %d bytes: must be between 14 and %d", len(frame), s.maxPayload)
	}
	for c.Packets < n {
		off := s.frameOff(s.head)
		switch st := loadStatus(s.ring, off+t2Status); st {
		case unix.TP_STATUS_AVAILABLE:
		case unix.TP_STATUS_WRONG_FORMAT:
			err := fmt.Errorf("send af_packet: kernel refused frame %d: wrong format", s.seq)
			return c, errors.Join(err, s.flush(&c))
		default:
			// Still owned by the kernel: push out what is queued,
			// which also waits for it to complete.
			if err := s.flush(&c); err != nil {
				return c, err
			}
			if loadStatus(s.ring, off+t2Status) != unix.TP_STATUS_AVAILABLE {
				return c, fmt.Errorf("send af_packet: ring frame still busy (status %#x) after send", st)
			}
		}
		data := s.ring[off+t2Data : off+s.opts.FrameSize]
		var l int
		if fill != nil {
			l = fill(s.seq, data)
			if l < 14 || l > len(data) {
				// The frames marked before this one are good:
				// send them, so that c counts only sent ones.
				err := fmt.Errorf("send af_packet: fill returned length %d: must be between 14 and %d", l, len(data))
				return c, errors.Join(err, s.flush(&c))
			}
		} else {
			l = copy(data, frame)
		}
		binary.NativeEndian.PutUint32(s.ring[off+t2Len:], uint32(l))
		storeStatus(s.ring, off+t2Status, unix.TP_STATUS_SEND_REQUEST)
		s.seq++
		s.head = (s.head + 1) % s.opts.Frames
		s.queued++
		c.Packets++
		c.Bytes += uint64(l)
		if s.queued >= s.opts.Batch {
			if err := s.flush(&c); err != nil {
				return c, err
			}
		}
	}
	return c, s.flush(&c)
}

// refusedFor is how long flush retries while the device refuses the frame
// at the kernel's head and sends no other. A variable only so that a test
// can wait as long as a loaded machine needs to end a refusal.
var refusedFor = time.Second

// flush makes the kernel send every frame marked TP_STATUS_SEND_REQUEST and
// waits until they are all sent. The kernel walks the ring from its own
// head and stops at the first frame it cannot send, without moving its head
// past it: a frame the device refused (ENOBUFS: veth's peer backlog is
// full, say) stays marked for sending, and is sent again by the next
// send(2); a frame the device cannot take (EMSGSIZE, longer than its MTU)
// is marked TP_STATUS_WRONG_FORMAT, and nothing after it goes out. So flush
// retries refusals while they last no longer than refusedFor; on any other
// failure it takes the unsent frames back (see unqueue), which c counted.
func (s *AFPacketSender) flush(c *Counts) error {
	var stuck time.Time // when the device began refusing without progress
	for s.queued > 0 {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, 0, 0, 0)
		switch e {
		case 0:
			s.queued = 0
			return nil
		case unix.EINTR:
			continue
		case unix.ENOBUFS:
			if left := s.unsent(); left < s.queued {
				s.queued, stuck = left, time.Time{}
				continue
			}
			if stuck.IsZero() {
				stuck = time.Now()
			}
			if time.Since(stuck) < refusedFor {
				time.Sleep(100 * time.Microsecond)
				continue
			}
		}
		s.queued = s.unsent()
		n := s.unqueue(c)
		return fmt.Errorf("send af_packet: %d frames not sent: %w", n, os.NewSyscallError("send", e))
	}
	return nil
}

// frameOff is the offset in the ring of frame i.
func (s *AFPacketSender) frameOff(i int) int {
	return (i/s.perBlock)*s.blockSize + (i%s.perBlock)*s.opts.FrameSize
}

// unsent is how many of the s.queued frames before s.head the kernel has
// not taken: they are the last ones, still marked for sending or of the
// wrong format, since the kernel takes frames in ring order.
func (s *AFPacketSender) unsent() int {
	for i := range s.queued {
		f := (s.head - s.queued + i + s.opts.Frames) % s.opts.Frames
		switch loadStatus(s.ring, s.frameOff(f)+t2Status) {
		case unix.TP_STATUS_SEND_REQUEST, unix.TP_STATUS_WRONG_FORMAT:
			return s.queued - i
		}
	}
	return 0
}

// unqueue takes the s.queued frames before s.head, which the kernel has
// not taken, back out of the ring after a failed send: it marks them
// available, takes them off c, and moves the head (and the sequence
// number) back to the first of them, which is where the kernel's head
// stopped. It returns how many it took back. Only frames of this call are
// queued, as every call ends with a flush.
func (s *AFPacketSender) unqueue(c *Counts) int {
	n := s.queued
	for range n {
		s.head = (s.head - 1 + s.opts.Frames) % s.opts.Frames
		off := s.frameOff(s.head)
		c.Packets--
		c.Bytes -= uint64(binary.NativeEndian.Uint32(s.ring[off+t2Len:]))
		storeStatus(s.ring, off+t2Status, unix.TP_STATUS_AVAILABLE)
	}
	s.seq -= uint64(n)
	s.queued = 0
	return n
}

// Stats returns the counters since NewAFPacketSender (Drops is always 0:
// drops after the socket show in the interface's counters).
func (s *AFPacketSender) Stats() Stats { return s.snapshot() }

// Close unmaps the ring and closes the socket. A second Close returns nil.
func (s *AFPacketSender) Close() error {
	return s.closeOnce(func() error { return closeRing("af_packet sender", s.fd, &s.ring) })
}
