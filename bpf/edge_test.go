package bpf

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/afxdp/afxdp/internal/testenv"
)

// TestVerdictsEdgeCases runs the program on the frames that a header
// parser gets wrong most often: IPv4 options and bad header lengths, IP
// lengths that end before the port, IPv4 fragments, IPv6 extension
// headers, stacked VLAN tags, protocols that are not UDP, and broadcast
// and multicast destinations. Each verdict is the one Filter's doc gives.
func TestVerdictsEdgeCases(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	xsk := newBoundXSK(t, v.Host.Index, 0)

	const (
		port = 4000
		l3   = ethHeaderLen // where the IP header starts in an untagged frame
	)
	me4 := [4]byte{10, 1, 2, 3}
	me6 := netip.MustParseAddr("fd00::3").As16()
	allNodes6 := netip.MustParseAddr("ff02::1").As16()
	to4 := func(dst [4]byte, o ipv4Opts) []byte {
		o.dst = dst
		return pad(eth(0x0800, ipv4(17, udp(port), o)))
	}
	udp4 := to4(me4, ipv4Opts{})
	udp6 := pad(eth(0x86DD, ipv6To(17, me6, udp(port))))
	udp6Via := func(first uint8, chain []byte) []byte { return pad(eth(0x86DD, ipv6To(first, me6, chain))) }
	// A header whose bytes 2-3 read as port, as UDP's and TCP's do.
	l4Like := func(proto uint8) []byte { return pad(eth(0x0800, ipv4(proto, udp(port), ipv4Opts{dst: me4}))) }
	withFlags := func(frame []byte, flags byte) []byte {
		c := append([]byte(nil), frame...)
		c[l3+6] |= flags
		return c
	}

	type frame struct {
		name  string
		data  []byte
		match bool
	}
	// Every header length: below 5 is malformed, 5 to 15 carry options
	// (zeros) before the UDP header.
	var ihlFrames []frame
	for ihl := range 16 {
		f := to4(me4, ipv4Opts{ihl: ihl})
		f[l3] = 0x40 | byte(ihl) // the builder takes 0 for 5
		ihlFrames = append(ihlFrames, frame{fmt.Sprintf("ihl%d", ihl), f, ihl >= 5})
	}

	tests := []struct {
		filter Filter
		frames []frame
	}{
		{Filter{IPProto: 17, DstPort: port}, append(ihlFrames,
			frame{"ihl15-options-cut", eth(0x0800, ipv4(17, udp(port), ipv4Opts{ihl: 15})[:50]), false},
			// IPv4 total length: the port must be inside the packet,
			// not in the padding that follows it.
			frame{"total-length-0", withTotLen(udp4, l3, 0), false},
			frame{"total-length-header-only", withTotLen(udp4, l3, 20), false},
			frame{"total-length-port-cut", withTotLen(udp4, l3, 23), false},
			frame{"total-length-port-only", withTotLen(udp4, l3, 24), true},
			frame{"total-length-ihl6-port-cut", withTotLen(to4(me4, ipv4Opts{ihl: 6}), l3, 27), false},
			frame{"total-length-ihl6-port-only", withTotLen(to4(me4, ipv4Opts{ihl: 6}), l3, 28), true},
			// Fragments: flags word MF 0x2000, DF 0x4000, offset 0x1fff.
			frame{"first-fragment", to4(me4, ipv4Opts{mf: true}), false},
			frame{"middle-fragment", to4(me4, ipv4Opts{mf: true, fragOff: 185}), false},
			frame{"last-fragment", to4(me4, ipv4Opts{fragOff: 185}), false},
			frame{"last-fragment-offset-1", to4(me4, ipv4Opts{fragOff: 1}), false},
			frame{"last-fragment-top-offset-bit", to4(me4, ipv4Opts{fragOff: 0x1000}), false},
			frame{"dont-fragment", withFlags(udp4, 0x40), true},
			frame{"reserved-flag", withFlags(udp4, 0x80), true},
			// IPv6: the next header must be UDP itself.
			frame{"ipv6", udp6, true},
			frame{"ipv6-payload-length-0", withPayloadLen(udp6, l3, 0), false},
			frame{"ipv6-payload-length-port-cut", withPayloadLen(udp6, l3, 3), false},
			frame{"ipv6-payload-length-port-only", withPayloadLen(udp6, l3, 4), true},
			frame{"ipv6-hop-by-hop", udp6Via(0, ipv6Ext(17, 0, udp(port))), false},
			frame{"ipv6-routing", udp6Via(43, ipv6Ext(17, 2, udp(port))), false},
			frame{"ipv6-first-fragment", udp6Via(44, ipv6Frag(17, 0, true, udp(port))), false},
			frame{"ipv6-atomic-fragment", udp6Via(44, ipv6Frag(17, 0, false, udp(port))), false},
			frame{"ipv6-destination-options", udp6Via(60, ipv6Ext(17, 0, udp(port))), false},
			frame{"ipv6-chain", udp6Via(0, ipv6Ext(60, 0, ipv6Ext(43, 0, ipv6Ext(17, 0, udp(port))))), false},
			frame{"ipv6-hop-by-hop-past-end", udp6Via(0, ipv6Ext(17, 200, nil)[:8]), false},
			// VLAN tags: one of either kind is looked through, two are not.
			frame{"8021q", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x8100)), true},
			frame{"8021ad", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x88A8)), true},
			frame{"8021q-ipv6", pad(eth(0x86DD, ipv6(17, udp(port)), 0x8100)), true},
			frame{"qinq", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x88A8, 0x8100)), false},
			frame{"double-8021q", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x8100, 0x8100)), false},
			frame{"8021q-total-length-header-only", withTotLen(pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x8100)), l3+vlanTagLen, 20), false},
			// Other protocols whose bytes 2-3 hold the port.
			frame{"icmp", l4Like(1), false},
			frame{"tcp", l4Like(6), false},
			frame{"sctp", l4Like(132), false},
			frame{"udplite", l4Like(136), false},
			// With no DstAddr, any destination.
			frame{"broadcast", to4([4]byte{255, 255, 255, 255}, ipv4Opts{}), true},
			frame{"multicast", to4([4]byte{224, 0, 0, 251}, ipv4Opts{}), true},
			frame{"ipv6-multicast", pad(eth(0x86DD, ipv6To(17, allNodes6, udp(port)))), true},
		)},
		{Filter{IPProto: 6, DstPort: port}, []frame{
			{"tcp", pad(eth(0x0800, ipv4(6, tcp(port), ipv4Opts{}))), true},
			{"tcp-total-length-header-only", withTotLen(pad(eth(0x0800, ipv4(6, tcp(port), ipv4Opts{}))), l3, 20), false},
			{"udp", udp4, false},
		}},
		{Filter{IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom4(me4)}, []frame{
			{"to-me", udp4, true},
			{"to-me-ihl15", to4(me4, ipv4Opts{ihl: 15}), true},
			{"to-me-qinq", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4}), 0x88A8, 0x8100)), false},
			{"to-me-last-fragment", to4(me4, ipv4Opts{fragOff: 185}), false},
			{"to-me-icmp", l4Like(1), false},
			{"broadcast", to4([4]byte{255, 255, 255, 255}, ipv4Opts{}), false},
			{"subnet-broadcast", to4([4]byte{10, 1, 2, 255}, ipv4Opts{}), false},
			{"multicast", to4([4]byte{224, 0, 0, 251}, ipv4Opts{}), false},
			{"other", to4([4]byte{10, 1, 2, 4}, ipv4Opts{}), false},
		}},
		{Filter{IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom16(me6)}, []frame{
			{"to-me", udp6, true},
			{"to-me-hop-by-hop", udp6Via(0, ipv6Ext(17, 0, udp(port))), false},
			{"multicast", pad(eth(0x86DD, ipv6To(17, allNodes6, udp(port)))), false},
		}},
		// A multicast group the caller asked for is an address like any.
		{Filter{IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom16(allNodes6)}, []frame{
			{"to-group", pad(eth(0x86DD, ipv6To(17, allNodes6, udp(port)))), true},
			{"to-unicast", udp6, false},
		}},
		// IPProto is the IPv6 header's next header: extension headers
		// do not match an upper-layer protocol, but match themselves.
		{Filter{IPProto: 17}, []frame{
			{"ipv6", udp6, true},
			{"ipv6-hop-by-hop", udp6Via(0, ipv6Ext(17, 0, udp(port))), false},
			{"ipv6-fragment", udp6Via(44, ipv6Frag(17, 0, true, udp(port))), false},
			{"ipv4-middle-fragment", to4(me4, ipv4Opts{mf: true, fragOff: 185}), true}, // no port to check
			{"qinq", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x88A8, 0x8100)), false},
		}},
		{Filter{EtherType: 0x86DD, IPProto: 44}, []frame{
			{"ipv6-fragment", udp6Via(44, ipv6Frag(17, 0, true, udp(port))), true},
			{"ipv6", udp6, false},
		}},
		// DstAddr alone reads only the fixed IPv6 header.
		{Filter{DstAddr: netip.AddrFrom16(me6)}, []frame{
			{"to-me", udp6, true},
			{"to-me-chain", udp6Via(0, ipv6Ext(60, 0, ipv6Ext(43, 0, ipv6Ext(17, 0, udp(port))))), true},
			{"to-me-fragment", udp6Via(44, ipv6Frag(17, 185, false, nil)), true},
			{"to-me-qinq", pad(eth(0x86DD, ipv6To(17, me6, udp(port)), 0x88A8, 0x8100)), false},
		}},
		{Filter{EtherType: 0x0800}, []frame{
			{"8021ad", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x88A8)), true},
			{"qinq", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x88A8, 0x8100)), false},
			{"ipv6", udp6, false},
		}},
	}

	for _, tt := range tests {
		t.Run(tt.filter.String(), func(t *testing.T) {
			p := newTestProgram(t, &ProgramOptions{Filter: tt.filter, MaxQueues: 1})
			mustOK(t, p.Register(0, xsk))
			for _, f := range tt.frames {
				want := uint32(xdpPass)
				if f.match {
					want = xdpRedirect
				}
				if got := run(t, p, f.data, nil); got != want {
					t.Errorf("%s: verdict %d, want %d", f.name, got, want)
				}
				if ref := wantMatch(tt.filter, f.data); ref != f.match {
					t.Errorf("%s: wantMatch says %t, the table %t", f.name, ref, f.match)
				}
			}
		})
	}
}

// TestVerdictsTruncated cuts matching frames after every byte and checks
// that a frame is redirected exactly when it still holds every byte the
// filter reads: cut anywhere before, it goes to the kernel.
func TestVerdictsTruncated(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	xsk := newBoundXSK(t, v.Host.Index, 0)

	const port = 4000
	me4 := [4]byte{10, 1, 2, 3}
	me6 := netip.MustParseAddr("fd00::3").As16()
	var (
		udp4     = eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4}))
		udp4VLAN = eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4}), 0x8100)
		udp4IHL6 = eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4, ihl: 6}))
		udp4IHLF = eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4, ihl: 15}))
		tcp4     = eth(0x0800, ipv4(6, tcp(port), ipv4Opts{dst: me4}))
		udp6     = eth(0x86DD, ipv6To(17, me6, udp(port)))
		udp6VLAN = eth(0x86DD, ipv6To(17, me6, udp(port)), 0x88A8)
	)
	for _, tt := range []struct {
		name   string
		filter Filter
		frame  []byte
		need   int // bytes the filter reads: Ethernet, tag, IP, port
	}{
		{"udp4", Filter{EtherType: 0x0800}, udp4, 14},
		{"udp4-vlan", Filter{EtherType: 0x0800}, udp4VLAN, 18},
		{"udp4", Filter{IPProto: 17}, udp4, 14 + 20},
		{"udp4-vlan", Filter{IPProto: 17}, udp4VLAN, 18 + 20},
		{"udp6", Filter{IPProto: 17}, udp6, 14 + 40},
		{"udp4", Filter{DstAddr: netip.AddrFrom4(me4)}, udp4, 14 + 20},
		{"udp6-vlan", Filter{DstAddr: netip.AddrFrom16(me6)}, udp6VLAN, 18 + 40},
		{"udp4", Filter{IPProto: 17, DstPort: port}, udp4, 14 + 20 + 4},
		{"udp4-vlan", Filter{IPProto: 17, DstPort: port}, udp4VLAN, 18 + 20 + 4},
		{"udp4-ihl6", Filter{IPProto: 17, DstPort: port}, udp4IHL6, 14 + 24 + 4},
		{"udp4-ihl15", Filter{IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom4(me4)}, udp4IHLF, 14 + 60 + 4},
		{"tcp4", Filter{IPProto: 6, DstPort: port}, tcp4, 14 + 20 + 4},
		{"udp6", Filter{IPProto: 17, DstPort: port}, udp6, 14 + 40 + 4},
		{"udp6-vlan", Filter{EtherType: 0x86DD, IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom16(me6)}, udp6VLAN, 18 + 40 + 4},
	} {
		t.Run(tt.filter.String()+"/"+tt.name, func(t *testing.T) {
			p := newTestProgram(t, &ProgramOptions{Filter: tt.filter, MaxQueues: 1})
			mustOK(t, p.Register(0, xsk))
			// BPF_PROG_RUN takes no frame shorter than an Ethernet header.
			for n := ethHeaderLen; n <= len(tt.frame); n++ {
				want := uint32(xdpPass)
				if n >= tt.need {
					want = xdpRedirect
				}
				if got := run(t, p, tt.frame[:n], nil); got != want {
					t.Errorf("cut to %d of %d bytes: verdict %d, want %d", n, len(tt.frame), got, want)
				}
			}
		})
	}
}
