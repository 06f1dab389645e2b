package baseline_test

import (
	"net/netip"
	"testing"

	"github.com/afxdp/afxdp/internal/baseline"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
)

// genSetup makes a veth pair whose peer end has an XDP program of verdict
// sink (something there must enable veth's XDP receive path) and a
// generator that sends 60-byte UDP frames to the peer's testPort.
func genSetup(tb testing.TB, sink pktgen.Verdict) (*netenv.Veth, *pktgen.Generator) {
	tb.Helper()
	v := newVeth(tb)
	s, err := pktgen.AttachSink(v.Peer, sink)
	if err != nil {
		tb.Fatal(err)
	}
	closeLater(tb, s)
	buf := make([]byte, 64)
	l := udpFrame(tb, v.Host, v.Peer, 18, 0, buf)
	g, err := pktgen.NewFor(v.Host, &pktgen.Options{Frame: buf[:l]})
	if err != nil {
		tb.Fatal(err)
	}
	closeLater(tb, g)
	return v, g
}

func BenchmarkUDPRecv(b *testing.B) {
	v, g := genSetup(b, pktgen.Pass)
	var r *baseline.UDPReceiver
	in(b, v.Peer, func() (err error) {
		r, err = baseline.NewUDPReceiver(netip.AddrPortFrom(v.Peer.IP(), testPort), nil)
		return err
	})
	closeLater(b, r)
	baseline.BenchRecv(b, v, g, r)
}

func BenchmarkAFPacketRecv(b *testing.B) {
	v, g := genSetup(b, pktgen.Pass)
	var r *baseline.AFPacketReceiver
	in(b, v.Peer, func() (err error) {
		r, err = baseline.NewAFPacketReceiver(v.Peer.Index, nil)
		return err
	})
	closeLater(b, r)
	baseline.BenchRecv(b, v, g, r)
}
