package bpf

import "encoding/binary"

// Frame builders for the verdict tests. The program reads only EtherTypes,
// IP header lengths, protocol fields, fragment offsets, destination
// addresses and ports, so the builders fill in only those (and leave
// checksums and source addresses zero).

var (
	testDstMAC = []byte{0x02, 0, 0, 0, 0, 0x01}
	testSrcMAC = []byte{0x02, 0, 0, 0, 0, 0x02}
)

// eth returns an Ethernet header with EtherType typ (after any VLAN tags,
// given as TPIDs) followed by payload.
func eth(typ uint16, payload []byte, tpids ...uint16) []byte {
	b := append([]byte{}, testDstMAC...)
	b = append(b, testSrcMAC...)
	for i, tpid := range tpids {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // VLAN ID
	}
	b = binary.BigEndian.AppendUint16(b, typ)
	return append(b, payload...)
}

// ipv4Opts varies an IPv4 header.
type ipv4Opts struct {
	ihl     int    // header length in 32-bit words; 0 means 5
	fragOff uint16 // fragment offset in 8-byte units
	mf      bool   // more fragments
	options []byte // filled into the bytes after the first 20; padded
	dst     [4]byte
}

// ipv4 returns an IPv4 header carrying proto, then payload.
func ipv4(proto uint8, payload []byte, o ipv4Opts) []byte {
	ihl := o.ihl
	if ihl == 0 {
		ihl = 5
	}
	hl := max(ihl*4, 20)
	h := make([]byte, hl)
	h[0] = 0x40 | byte(ihl&0x0f)
	binary.BigEndian.PutUint16(h[2:4], uint16(hl+len(payload)))
	flags := o.fragOff & 0x1fff
	if o.mf {
		flags |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:8], flags)
	h[8] = 64
	h[9] = proto
	copy(h[16:20], o.dst[:])
	copy(h[20:], o.options)
	return append(h, payload...)
}

// ipv6 returns an IPv6 header with next header next, then payload.
func ipv6(next uint8, payload []byte) []byte { return ipv6To(next, [16]byte{}, payload) }

// ipv6To is ipv6 with destination address dst.
func ipv6To(next uint8, dst [16]byte, payload []byte) []byte {
	h := make([]byte, 40)
	copy(h[24:40], dst[:])
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(payload)))
	h[6] = next
	h[7] = 64
	return append(h, payload...)
}

// udp returns a UDP header to dstPort with a short payload.
func udp(dstPort uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, 40000)
	b = binary.BigEndian.AppendUint16(b, dstPort)
	b = binary.BigEndian.AppendUint16(b, 8+4)
	b = binary.BigEndian.AppendUint16(b, 0)
	return append(b, "ping"...)
}

// tcp returns a TCP header (SYN) to dstPort.
func tcp(dstPort uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:2], 40000)
	binary.BigEndian.PutUint16(b[2:4], dstPort)
	b[12] = 5 << 4
	b[13] = 0x02
	return b
}

// arp returns an ARP request payload.
func arp() []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:4], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], 1) // request
	return b
}

// pad extends a frame to the 60-byte Ethernet minimum, as a NIC would.
func pad(b []byte) []byte {
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

// ipv6Ext returns an IPv6 extension header (hop-by-hop, routing,
// destination options: next header, length in 8-byte units beyond the
// first 8, then zeros) with next header next, then payload.
func ipv6Ext(next uint8, units uint8, payload []byte) []byte {
	h := make([]byte, 8*(int(units)+1))
	h[0], h[1] = next, units
	return append(h, payload...)
}

// ipv6Frag returns an IPv6 fragment header with next header next, offset
// off (in 8-byte units) and the more-fragments flag mf, then payload.
func ipv6Frag(next uint8, off uint16, mf bool, payload []byte) []byte {
	h := make([]byte, 8)
	h[0] = next
	v := off << 3
	if mf {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:4], v)
	binary.BigEndian.PutUint32(h[4:8], 0x1234)
	return append(h, payload...)
}

// withTotLen returns a copy of frame with the IPv4 total length at l3
// set to n.
func withTotLen(frame []byte, l3 int, n uint16) []byte {
	c := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(c[l3+2:], n)
	return c
}

// withPayloadLen returns a copy of frame with the IPv6 payload length at
// l3 set to n.
func withPayloadLen(frame []byte, l3 int, n uint16) []byte {
	c := append([]byte(nil), frame...)
	binary.BigEndian.PutUint16(c[l3+4:], n)
	return c
}
