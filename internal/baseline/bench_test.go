package baseline_test

import (
	"net/netip"
	"testing"

	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
)

// benchSetup makes a veth pair whose peer end has an XDP_PASS program (for
// veth's XDP receive path) and a generator that sends 60-byte UDP frames to
// the peer's testPort.
func benchSetup(b *testing.B) (*netenv.Veth, *pktgen.Generator) {
	v := newVeth(b)
	sink, err := pktgen.AttachSink(v.Peer, pktgen.Pass)
	if err != nil {
		b.Fatal(err)
	}
	closeLater(b, sink)
	buf := make([]byte, 64)
	l := udpFrame(b, v.Host, v.Peer, 18, 0, buf)
	g, err := pktgen.NewFor(v.Host, &pktgen.Options{Frame: buf[:l]})
	if err != nil {
		b.Fatal(err)
	}
	closeLater(b, g)
	return v, g
}

func BenchmarkUDPRecv(b *testing.B) {
	v, g := benchSetup(b)
	var r *baseline.UDPReceiver
	in(b, v.Peer, func() (err error) {
		r, err = baseline.NewUDPReceiver(netip.AddrPortFrom(v.Peer.IP(), testPort), nil)
		return err
	})
	closeLater(b, r)
	baseline.BenchRecv(b, v, g, r)
}

func BenchmarkAFPacketRecv(b *testing.B) {
	v, g := benchSetup(b)
	var r *baseline.AFPacketReceiver
	in(b, v.Peer, func() (err error) {
		r, err = baseline.NewAFPacketReceiver(v.Peer.Index, nil)
		return err
	})
	closeLater(b, r)
	baseline.BenchRecv(b, v, g, r)
}
