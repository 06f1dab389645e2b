// Package packet builds and parses the Ethernet/IPv4/UDP frames that afxdp's
// tests, examples and benchmarks send. It writes into caller-provided memory
// (a UMEM frame) and allocates nothing.
package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Header sizes in bytes.
const (
	EthLen  = 14
	IPv4Len = 20
	UDPLen  = 8
	// HeadersLen is the length of the Ethernet, IPv4 and UDP headers.
	HeadersLen = EthLen + IPv4Len + UDPLen
	// MinFrame is the shortest Ethernet frame without FCS.
	MinFrame = 60
)

const (
	etherTypeIPv4 = 0x0800
	protoUDP      = 17
)

// UDP describes the headers of a UDP/IPv4 Ethernet frame.
type UDP struct {
	SrcMAC, DstMAC   net.HardwareAddr
	SrcIP, DstIP     netip.Addr
	SrcPort, DstPort uint16
	// TTL defaults to 64.
	TTL uint8
	// ID is the IPv4 identification field.
	ID uint16
}

// maxPayload is the largest UDP payload of one IPv4 packet.
const maxPayload = 0xffff - IPv4Len - UDPLen

// ErrShort is returned (wrapped) when a buffer or frame is too short.
var ErrShort = errors.New("too short")

// FrameLen is the length of a frame carrying payloadLen bytes of UDP payload.
func FrameLen(payloadLen int) int { return HeadersLen + payloadLen }

// Write builds the headers for payloadLen bytes of payload at the start of b
// and computes both checksums over the payload already in
// b[HeadersLen:HeadersLen+payloadLen]. It returns the frame length.
func (u *UDP) Write(b []byte, payloadLen int) (int, error) {
	// Before any arithmetic on it: HeadersLen plus a payload near
	// MaxInt wraps around to a negative length.
	if payloadLen < 0 || payloadLen > maxPayload {
		return 0, fmt.Errorf("build udp frame: payload of %d bytes: must be 0 to %d (an IPv4 packet is at most 65535 bytes)", payloadLen, maxPayload)
	}
	n := HeadersLen + payloadLen
	if len(b) < n {
		return 0, fmt.Errorf("build udp frame: buffer of %d bytes for a %d-byte frame: %w", len(b), n, ErrShort)
	}
	if len(u.SrcMAC) != 6 || len(u.DstMAC) != 6 {
		return 0, errors.New("build udp frame: source and destination MAC must be 6 bytes")
	}
	if !u.SrcIP.Is4() || !u.DstIP.Is4() {
		return 0, errors.New("build udp frame: source and destination IP must be IPv4")
	}
	copy(b[0:6], u.DstMAC)
	copy(b[6:12], u.SrcMAC)
	binary.BigEndian.PutUint16(b[12:14], etherTypeIPv4)

	ip := b[EthLen : EthLen+IPv4Len]
	ip[0] = 0x45
	ip[1] = 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(IPv4Len+UDPLen+payloadLen))
	binary.BigEndian.PutUint16(ip[4:6], u.ID)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ttl := u.TTL
	if ttl == 0 {
		ttl = 64
	}
	ip[8] = ttl
	ip[9] = protoUDP
	ip[10], ip[11] = 0, 0
	src, dst := u.SrcIP.As4(), u.DstIP.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], ^fold(sum(ip, 0)))

	udp := b[EthLen+IPv4Len : n]
	binary.BigEndian.PutUint16(udp[0:2], u.SrcPort)
	binary.BigEndian.PutUint16(udp[2:4], u.DstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(UDPLen+payloadLen))
	udp[6], udp[7] = 0, 0
	binary.BigEndian.PutUint16(udp[6:8], udpChecksum(ip[12:16], ip[16:20], udp))
	return n, nil
}

func udpChecksum(src, dst, udp []byte) uint16 {
	s := sum(src, 0)
	s = sum(dst, s)
	s += protoUDP + uint32(len(udp))
	c := ^fold(sum(udp, s))
	if c == 0 {
		return 0xffff // zero means "no checksum" in UDP over IPv4
	}
	return c
}

// sum adds b as big-endian 16-bit words to s (one's complement, unfolded).
func sum(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// Parsed is what [Parse] found in a UDP/IPv4 frame. Payload aliases the frame.
type Parsed struct {
	SrcMAC, DstMAC   net.HardwareAddr
	SrcIP, DstIP     netip.Addr
	SrcPort, DstPort uint16
	Payload          []byte
}

// Parse checks that frame is a well-formed UDP/IPv4 frame with correct
// checksums, holding a whole datagram (not a fragment), and returns its
// fields. IPv4 options are skipped; trailing Ethernet padding is ignored.
func Parse(frame []byte) (Parsed, error) {
	var p Parsed
	if len(frame) < HeadersLen {
		return p, fmt.Errorf("parse frame of %d bytes: %w", len(frame), ErrShort)
	}
	if et := binary.BigEndian.Uint16(frame[12:14]); et != etherTypeIPv4 {
		return p, fmt.Errorf("parse frame: ethertype %#04x is not IPv4", et)
	}
	ip := frame[EthLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < IPv4Len || len(ip) < ihl+UDPLen {
		return p, fmt.Errorf("parse frame: bad IPv4 header (version/IHL byte %#02x)", ip[0])
	}
	if fold(sum(ip[:ihl], 0)) != 0xffff {
		return p, errors.New("parse frame: bad IPv4 header checksum")
	}
	// A fragment is not a datagram: the first holds only the start of
	// one (its UDP length and checksum are the whole datagram's), a later
	// one has no UDP header at all.
	if ff := binary.BigEndian.Uint16(ip[6:8]); ff&0x3fff != 0 {
		return p, fmt.Errorf("parse frame: IPv4 fragment (offset %d bytes, more fragments %t), not a whole datagram", int(ff&0x1fff)*8, ff&0x2000 != 0)
	}
	if ip[9] != protoUDP {
		return p, fmt.Errorf("parse frame: IP protocol %d is not UDP", ip[9])
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total < ihl+UDPLen || total > len(ip) {
		return p, fmt.Errorf("parse frame: IPv4 total length %d does not fit a %d-byte frame", total, len(frame))
	}
	udp := ip[ihl:total]
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen != len(udp) {
		return p, fmt.Errorf("parse frame: UDP length %d, IP payload %d", ulen, len(udp))
	}
	if c := binary.BigEndian.Uint16(udp[6:8]); c != 0 {
		s := sum(ip[12:16], 0)
		s = sum(ip[16:20], s)
		s += protoUDP + uint32(len(udp))
		if fold(sum(udp, s)) != 0xffff {
			return p, errors.New("parse frame: bad UDP checksum")
		}
	}
	p.DstMAC = net.HardwareAddr(frame[0:6])
	p.SrcMAC = net.HardwareAddr(frame[6:12])
	p.SrcIP = netip.AddrFrom4([4]byte(ip[12:16]))
	p.DstIP = netip.AddrFrom4([4]byte(ip[16:20]))
	p.SrcPort = binary.BigEndian.Uint16(udp[0:2])
	p.DstPort = binary.BigEndian.Uint16(udp[2:4])
	p.Payload = udp[UDPLen:]
	return p, nil
}

// SeqLen is the size of the sequence header that [FillPayload] writes.
const SeqLen = 8

// FillPayload writes seq into the first 8 bytes of p and fills the rest with
// bytes derived from seq, so that a receiver can check every byte with
// [CheckPayload]. len(p) must be at least SeqLen.
func FillPayload(p []byte, seq uint64) {
	binary.BigEndian.PutUint64(p, seq)
	x := uint32(seq)*2654435761 + 1
	for i := SeqLen; i < len(p); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
}

// CheckPayload returns the sequence number in p and whether every byte of p
// is what FillPayload wrote for it.
func CheckPayload(p []byte) (seq uint64, ok bool) {
	if len(p) < SeqLen {
		return 0, false
	}
	seq = binary.BigEndian.Uint64(p)
	x := uint32(seq)*2654435761 + 1
	for i := SeqLen; i < len(p); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		if p[i] != byte(x) {
			return seq, false
		}
	}
	return seq, true
}
