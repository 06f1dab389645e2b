package bpf

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// xdpMD mirrors struct xdp_md, the context BPF_PROG_RUN accepts for XDP
// programs. DataEnd must equal the frame's length; RxQueueIndex may be
// non-zero only with IngressIfindex, whose queue must exist.
type xdpMD struct {
	Data           uint32
	DataEnd        uint32
	DataMeta       uint32
	IngressIfindex uint32
	RxQueueIndex   uint32
	EgressIfindex  uint32
}

// run runs p's program once on frame and returns the verdict.
func run(t testing.TB, p *Program, frame []byte, ctx *xdpMD) uint32 {
	t.Helper()
	opts := &ebpf.RunOptions{Data: frame}
	if ctx != nil {
		c := *ctx
		c.DataEnd = uint32(len(frame))
		opts.Context = c
	}
	ret, err := p.Prog().Run(opts)
	if err != nil {
		t.Fatalf("BPF_PROG_RUN: %v", err)
	}
	return ret
}

func newTestProgram(t *testing.T, opts *ProgramOptions) *Program {
	t.Helper()
	p, err := NewProgram(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// TestVerdicts runs the program on crafted frames, with and without a
// socket registered for queue 0, for several filters. Without a socket every
// frame must be passed on; with one, exactly the matching frames must be
// redirected.
func TestVerdicts(t *testing.T) {
	// One socket, bound to queue 0 of a veth of the test's own, is
	// registered in every program's map; BPF_PROG_RUN without a context
	// runs the program as if on queue 0.
	v := testenv.NewVeth(t, nil)
	xsk := newBoundXSK(t, v.Host.Index, 0)

	const port = 4000
	var (
		udp4      = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{})))
		udp4Other = pad(eth(0x0800, ipv4(17, udp(port+1), ipv4Opts{})))
		udp6      = pad(eth(0x86DD, ipv6(17, udp(port))))
		udp6Ext   = pad(eth(0x86DD, ipv6(0, udp(port)))) // hop-by-hop first
		tcp4      = pad(eth(0x0800, ipv4(6, tcp(port), ipv4Opts{})))
		arpReq    = pad(eth(0x0806, arp()))
		vlanUDP4  = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x8100))
		qinqUDP4  = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{}), 0x88A8, 0x8100))
		// IHL 6: the 4 option bytes read as ports 4000 (source) and 4000
		// (destination) to a program that ignored IHL; the real UDP
		// header, after them, goes to port+1.
		optsOther = pad(eth(0x0800, ipv4(17, udp(port+1), ipv4Opts{ihl: 6, options: []byte{0x0f, 0xa0, 0x0f, 0xa0}})))
		optsMatch = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{ihl: 6})))
		badIHL    = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{ihl: 4})))
		fragment  = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{fragOff: 100})))
		firstFrag = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{mf: true})))
		custom    = pad(eth(0x88B5, []byte("hello")))
		// Destination addresses: mine, and ones that differ from it in
		// the first or the last byte only, so that every 32-bit word of
		// the address has to be compared.
		me4       = [4]byte{10, 1, 2, 3}
		me6       = [16]byte{0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
		toMe4     = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4})))
		toMe4Opts = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4, ihl: 6})))
		toMe4Frag = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4, mf: true})))
		toMe4TCP  = pad(eth(0x0800, ipv4(6, tcp(port), ipv4Opts{dst: me4})))
		toMe4VLAN = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: me4}), 0x8100))
		toOther4  = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: [4]byte{11, 1, 2, 3}})))
		toLast4   = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: [4]byte{10, 1, 2, 4}})))
		toBcast4  = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: [4]byte{255, 255, 255, 255}})))
		toMe6     = pad(eth(0x86DD, ipv6To(17, me6, udp(port))))
		toMe6Cut  = eth(0x86DD, ipv6To(17, me6, udp(port))[:39])
		toOther6  = pad(eth(0x86DD, ipv6To(17, [16]byte{0xfe, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, udp(port))))
		toMid6    = pad(eth(0x86DD, ipv6To(17, [16]byte{0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 0xff, 9, 10, 11, 12, 13, 14}, udp(port))))
		toLast6   = pad(eth(0x86DD, ipv6To(17, [16]byte{0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15}, udp(port))))
		// Addresses whose 32-bit words, loaded on this little-endian
		// machine, have the top bit set: a 64-bit comparison would
		// sign-extend the immediate and never match them.
		hi4     = [4]byte{192, 0, 2, 200}
		hi6     = [16]byte{0xfd, 0, 0, 0x80, 0, 0, 0, 0xff, 0, 0, 0, 0x90, 0, 0, 0, 0xc8}
		toHi4   = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: hi4})))
		toHi4Lo = pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: [4]byte{192, 0, 2, 72}})))
		toHi6   = pad(eth(0x86DD, ipv6To(17, hi6, udp(port))))
		toHi6Lo = pad(eth(0x86DD, ipv6To(17, [16]byte{0xfd, 0, 0, 0x80, 0, 0, 0, 0xff, 0, 0, 0, 0x90, 0, 0, 0, 0x48}, udp(port))))
		// The IPv6 address whose first four bytes are the IPv4 one's.
		me4As6 = pad(eth(0x86DD, ipv6To(17, [16]byte{10, 1, 2, 3}, udp(port))))
		// Truncated frames; BPF_PROG_RUN refuses frames shorter than an
		// Ethernet header (14 bytes), so that is the shortest here.
		ethOnly    = eth(0x0800, nil)
		vlanCut    = eth(0x8100, []byte{0, 100}) // tag without inner type
		ipv4Cut    = eth(0x0800, ipv4(17, udp(port), ipv4Opts{})[:10])
		udpCut     = eth(0x0800, ipv4(17, udp(port), ipv4Opts{})[:20+2]) // no destination port
		ipv6Cut    = eth(0x86DD, ipv6(17, udp(port))[:30])
		optsUDPCut = eth(0x0800, ipv4(17, udp(port), ipv4Opts{ihl: 6})[:24+3])
	)

	type frame struct {
		name  string
		data  []byte
		match bool
	}
	tests := []struct {
		filter Filter
		frames []frame
	}{
		{Filter{}, []frame{
			{"udp4", udp4, true}, {"arp", arpReq, true}, {"eth-only", ethOnly, true},
			{"ipv4-cut", ipv4Cut, true}, {"custom", custom, true},
		}},
		{Filter{IPProto: 17, DstPort: port}, []frame{
			{"udp4", udp4, true},
			{"udp6", udp6, true},
			{"udp4-other-port", udp4Other, false},
			{"udp6-ext-header", udp6Ext, false},
			{"tcp4-same-port", tcp4, false},
			{"arp", arpReq, false},
			{"vlan-udp4", vlanUDP4, true},
			{"qinq-udp4", qinqUDP4, false},
			{"ihl6-options-look-like-port", optsOther, false},
			{"ihl6-udp4", optsMatch, true},
			{"ihl4-malformed", badIHL, false},
			{"non-first-fragment", fragment, false},
			{"first-fragment", firstFrag, false}, // the kernel reassembles
			{"custom-ethertype", custom, false},
			{"eth-only", ethOnly, false},
			{"vlan-cut", vlanCut, false},
			{"ipv4-cut", ipv4Cut, false},
			{"udp-port-cut", udpCut, false},
			{"ipv6-cut", ipv6Cut, false},
			{"ihl6-udp-cut", optsUDPCut, false},
		}},
		{Filter{EtherType: 0x0800, IPProto: 17, DstPort: port}, []frame{
			{"udp4", udp4, true},
			{"udp6", udp6, false},
			{"vlan-udp4", vlanUDP4, true},
			{"udp4-other-port", udp4Other, false},
		}},
		{Filter{EtherType: 0x86DD, IPProto: 17}, []frame{
			{"udp6", udp6, true},
			{"udp4", udp4, false},
			{"udp6-ext-header", udp6Ext, false},
			{"ipv6-cut", ipv6Cut, false},
		}},
		{Filter{IPProto: 6, DstPort: port}, []frame{
			{"tcp4", tcp4, true},
			{"udp4", udp4, false},
		}},
		{Filter{IPProto: 17}, []frame{
			{"udp4", udp4, true},
			{"udp6", udp6, true},
			{"non-first-fragment", fragment, true}, // no port to check
			{"first-fragment", firstFrag, true},
			{"tcp4", tcp4, false},
			{"ipv4-cut", ipv4Cut, false},
		}},
		{Filter{EtherType: 0x88B5}, []frame{
			{"custom", custom, true},
			{"udp4", udp4, false},
			{"arp", arpReq, false},
			{"vlan-cut", vlanCut, false},
		}},
		{Filter{EtherType: 0x0806}, []frame{
			{"arp", arpReq, true},
			{"udp4", udp4, false},
		}},
		{Filter{IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom4(me4)}, []frame{
			{"to-me", toMe4, true},
			{"to-me-ihl6", toMe4Opts, true},
			{"to-me-vlan", toMe4VLAN, true},
			{"to-me-first-fragment", toMe4Frag, false},
			{"to-me-tcp", toMe4TCP, false},
			{"to-other", toOther4, false},
			{"to-other-last-byte", toLast4, false},
			{"to-broadcast", toBcast4, false},
			{"to-zero", udp4, false},
			{"udp6-same-first-word", me4As6, false},
			{"to-me6", toMe6, false},
			{"arp", arpReq, false},
			{"ipv4-cut", ipv4Cut, false},
		}},
		{Filter{DstAddr: netip.AddrFrom4(me4)}, []frame{
			{"to-me", toMe4, true},
			{"to-me-tcp", toMe4TCP, true},
			{"to-me-first-fragment", toMe4Frag, true}, // no port to check
			{"to-other", toOther4, false},
			{"to-other-last-byte", toLast4, false},
			{"arp", arpReq, false},
			{"custom", custom, false},
			{"ipv4-cut", ipv4Cut, false},
		}},
		{Filter{EtherType: 0x86DD, IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom16(me6)}, []frame{
			{"to-me", toMe6, true},
			{"to-other-first-byte", toOther6, false},
			{"to-other-third-word", toMid6, false},
			{"to-other-last-byte", toLast6, false},
			{"to-zero", udp6, false},
			{"to-me-cut", toMe6Cut, false},
			{"udp4", toMe4, false},
		}},
		{Filter{IPProto: 17, DstPort: port, DstAddr: netip.AddrFrom4(hi4)}, []frame{
			{"to-me", toHi4, true},
			{"to-me-vlan", pad(eth(0x0800, ipv4(17, udp(port), ipv4Opts{dst: hi4}), 0x8100)), true},
			{"to-other-top-bit", toHi4Lo, false},
			{"to-other", toMe4, false},
		}},
		{Filter{DstAddr: netip.AddrFrom16(hi6)}, []frame{
			{"to-me", toHi6, true},
			{"to-other-top-bit", toHi6Lo, false},
			{"to-other", toMe6, false},
			{"udp4", toHi4, false},
		}},
	}

	for _, tt := range tests {
		t.Run(tt.filter.String(), func(t *testing.T) {
			p := newTestProgram(t, &ProgramOptions{Filter: tt.filter, MaxQueues: 4})
			for _, f := range tt.frames {
				if got := run(t, p, f.data, nil); got != xdpPass {
					t.Errorf("%s with no socket registered: verdict %d, want %d (XDP_PASS)", f.name, got, xdpPass)
				}
			}
			mustOK(t, p.Register(0, xsk))
			for _, f := range tt.frames {
				want := uint32(xdpPass)
				if f.match {
					want = xdpRedirect
				}
				if got := run(t, p, f.data, nil); got != want {
					t.Errorf("%s with a socket registered: verdict %d, want %d", f.name, got, want)
				}
			}
			mustOK(t, p.Unregister(0))
			if got := run(t, p, udp4, nil); got != xdpPass {
				t.Errorf("after Unregister: verdict %d, want %d (XDP_PASS)", got, xdpPass)
			}
		})
	}
}

// TestVerdictQueueIndex checks that the XSKMAP key is the frame's receive
// queue: a socket registered for queue 1 gets queue 1's frames only.
func TestVerdictQueueIndex(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	p := newTestProgram(t, nil)
	mustOK(t, p.Register(1, newBoundXSK(t, v.Host.Index, 1)))

	frame := pad(eth(0x0800, ipv4(17, udp(9), ipv4Opts{})))
	q0 := &xdpMD{IngressIfindex: uint32(v.Host.Index), RxQueueIndex: 0}
	q1 := &xdpMD{IngressIfindex: uint32(v.Host.Index), RxQueueIndex: 1}
	if got := run(t, p, frame, q0); got != xdpPass {
		t.Errorf("queue 0 has no socket: verdict %d, want %d (XDP_PASS)", got, xdpPass)
	}
	if got := run(t, p, frame, q1); got != xdpRedirect {
		t.Errorf("queue 1 has a socket: verdict %d, want %d (XDP_REDIRECT)", got, xdpRedirect)
	}
}

// mustOK stops the test if err is not nil.
func mustOK(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// fuzzFilters are the filters FuzzVerdict checks, one program each.
var fuzzFilters = []Filter{
	{},
	{IPProto: 17, DstPort: 4000},
	{EtherType: 0x0800, IPProto: 6, DstPort: 22},
	{EtherType: 0x86DD, IPProto: 17},
	{IPProto: 1},
	{EtherType: 0x88B5},
	{IPProto: 17, DstPort: 4000, DstAddr: netip.AddrFrom4([4]byte{10, 0, 0, 1})},
	{DstAddr: netip.MustParseAddr("fd00::1")},
	// Words with the top bit set, as the program compares them.
	{EtherType: 0x0800, DstAddr: netip.MustParseAddr("192.0.2.200")},
	{IPProto: 6, DstAddr: netip.MustParseAddr("fd00:80:0:ff:0:90:0:c8")},
}

// FuzzVerdict compares the program's verdict on arbitrary frames with
// wantMatch, a plain-Go statement of what Filter promises.
func FuzzVerdict(f *testing.F) {
	v := testenv.NewVeth(f, nil)
	progs := make([]*Program, len(fuzzFilters))
	for i, flt := range fuzzFilters {
		p, err := NewProgram(&ProgramOptions{Filter: flt, MaxQueues: 1})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { p.Close() })
		progs[i] = p
	}
	xsk := newBoundXSK(f, v.Host.Index, 0)
	for _, p := range progs {
		if err := p.Register(0, xsk); err != nil {
			f.Fatal(err)
		}
	}

	for _, seed := range [][]byte{
		pad(eth(0x0800, ipv4(17, udp(4000), ipv4Opts{}))),
		pad(eth(0x0800, ipv4(6, tcp(22), ipv4Opts{ihl: 7}))),
		pad(eth(0x86DD, ipv6(17, udp(4000)), 0x8100)),
		pad(eth(0x0800, ipv4(1, nil, ipv4Opts{fragOff: 3}), 0x88A8)),
		pad(eth(0x88B5, nil)),
		eth(0x0800, ipv4(17, udp(4000), ipv4Opts{})[:23]),
		pad(eth(0x0800, ipv4(17, udp(4000), ipv4Opts{dst: [4]byte{10, 0, 0, 1}}))),
		pad(eth(0x0800, ipv4(17, udp(4000), ipv4Opts{dst: [4]byte{10, 0, 0, 1}, mf: true}))),
		pad(eth(0x86DD, ipv6To(17, netip.MustParseAddr("fd00::1").As16(), udp(4000)), 0x8100)),
		pad(eth(0x0800, ipv4(6, tcp(22), ipv4Opts{dst: [4]byte{192, 0, 2, 200}}))),
		pad(eth(0x86DD, ipv6To(6, netip.MustParseAddr("fd00:80:0:ff:0:90:0:c8").As16(), tcp(22)))),
	} {
		for i := range progs {
			f.Add(uint8(i), seed)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, frame []byte) {
		if len(frame) < ethHeaderLen || len(frame) > 1500 {
			t.Skip("BPF_PROG_RUN takes 14 to ~3.5k bytes")
		}
		i := int(which) % len(progs)
		want := uint32(xdpPass)
		if wantMatch(fuzzFilters[i], frame) {
			want = xdpRedirect
		}
		if got := run(t, progs[i], frame, nil); got != want {
			t.Errorf("filter %q on % x: verdict %d, want %d", fuzzFilters[i], frame, got, want)
		}
	})
}

// wantMatch is the reference for the generated program.
func wantMatch(f Filter, b []byte) bool {
	if !f.any() {
		return true
	}
	be16 := func(off int) uint16 { return uint16(b[off])<<8 | uint16(b[off+1]) }
	if len(b) < 14 {
		return false
	}
	et, l3 := be16(12), 14
	if et == 0x8100 || et == 0x88A8 {
		if len(b) < 18 {
			return false
		}
		et, l3 = be16(16), 18
	}
	if f.EtherType != 0 && et != f.EtherType {
		return false
	}
	if f.IPProto == 0 && !f.DstAddr.IsValid() {
		return true
	}
	var l4 int
	switch et {
	case 0x0800:
		if len(b) < l3+20 || f.IPProto != 0 && b[l3+9] != f.IPProto {
			return false
		}
		if f.DstAddr.IsValid() && netip.AddrFrom4([4]byte(b[l3+16:l3+20])) != f.DstAddr {
			return false
		}
		if f.DstPort == 0 {
			return true
		}
		// Fragments, the first (more fragments set) included, do not
		// match a port.
		ihl := int(b[l3]&0x0f) * 4
		if be16(l3+6)&0x3fff != 0 || ihl < 20 {
			return false
		}
		// The port must be inside the packet's total length.
		if int(be16(l3+2)) < ihl+4 {
			return false
		}
		l4 = l3 + ihl
	case 0x86DD:
		if len(b) < l3+40 || f.IPProto != 0 && b[l3+6] != f.IPProto {
			return false
		}
		if f.DstAddr.IsValid() && netip.AddrFrom16([16]byte(b[l3+24:l3+40])) != f.DstAddr {
			return false
		}
		if f.DstPort == 0 {
			return true
		}
		// The port must be inside the payload length.
		if be16(l3+4) < 4 {
			return false
		}
		l4 = l3 + 40
	default:
		return false
	}
	return len(b) >= l4+4 && be16(l4+2) == f.DstPort
}
