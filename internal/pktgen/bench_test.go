package pktgen_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/pktgen"
)

// BenchmarkPktgen measures the generator's capacity on a veth pair: frames
// counted at the peer. With sink=drop an XDP_DROP program takes them there
// (the generator's own ceiling); with sink=pass they go up the peer's kernel
// stack to a closed UDP port, all on the sending CPU inside BPF_PROG_RUN.
func BenchmarkPktgen(b *testing.B) {
	for _, sink := range []pktgen.Verdict{pktgen.Drop, pktgen.Pass} {
		for _, size := range []int{60, 1024} {
			for _, batch := range []int{16, 64, 256} {
				name := fmt.Sprintf("sink=%s/frame=%d/batch=%d", map[pktgen.Verdict]string{pktgen.Drop: "drop", pktgen.Pass: "pass"}[sink], size, batch)
				b.Run(name, func(b *testing.B) { benchPktgen(b, sink, size, batch) })
			}
		}
	}
}

func benchPktgen(b *testing.B, sink pktgen.Verdict, size, batch int) {
	v := newVeth(b)
	attachSink(b, v.Peer, sink)
	frame := udpFrame(b, v.Host, v.Peer, size-42)
	g := newGen(b, v.Host, &pktgen.Options{Frame: frame, BatchSize: batch})
	const chunk = 1 << 16
	before := readCounters(b, v.Peer)
	b.ReportAllocs()
	start := time.Now()
	var sent uint64
	for b.Loop() {
		n, err := g.Send(chunk)
		if err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	elapsed := time.Since(start)
	got := readCounters(b, v.Peer).Sub(before)
	b.ReportMetric(float64(got.RxPackets)/elapsed.Seconds(), "pps")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(max(got.RxPackets, 1)), "ns/pkt")
	if lost := int64(sent) - int64(got.RxPackets); lost != 0 {
		b.ReportMetric(float64(lost), "lost")
	}
}
