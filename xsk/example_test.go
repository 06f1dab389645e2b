package xsk_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/xsk"
)

// Receive UDP datagrams for port 9000 on queue 0 of eth0; everything else
// still reaches the kernel.
func ExampleSocket_Receive() {
	s, err := xsk.Open("eth0", 0, &xsk.Options{
		Filter: bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: 9000},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	descs := make([]xsk.Desc, 64)
	for {
		n, err := s.Receive(descs)
		if err != nil {
			log.Fatal(err)
		}
		if n == 0 {
			s.Wait(xsk.Readable, 100*time.Millisecond)
			continue
		}
		for _, d := range descs[:n] {
			frame := s.Frame(d) // valid until Release
			fmt.Printf("%d bytes from %x\n", len(frame), frame[6:12])
		}
		s.Release(descs[:n])
	}
}

// Transmit frames built in place in the UMEM.
func ExampleSocket_Transmit() {
	s, err := xsk.Open("eth0", 0, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	descs := make([]xsk.Desc, 64)
	n, _ := s.Alloc(descs)
	for i := range descs[:n] {
		buf := s.Frame(descs[i]) // room for a whole frame
		descs[i].Len = uint32(buildFrame(buf))
	}
	sent, err := s.Transmit(descs[:n])
	if err != nil {
		log.Fatal(err)
	}
	s.Release(descs[sent:n]) // what did not fit in the TX ring
}

func buildFrame(b []byte) int { return copy(b, make([]byte, 60)) }

// Forward every frame back out of the queue it came in on (l2fwd), from one
// goroutine that both receives and transmits.
func ExampleSocket_forward() {
	s, err := xsk.Open("eth0", 0, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	descs := make([]xsk.Desc, 64)
	for {
		n, _ := s.Receive(descs)
		for _, d := range descs[:n] {
			f := s.Frame(d)
			var mac [6]byte
			copy(mac[:], f[0:6])
			copy(f[0:6], f[6:12])
			copy(f[6:12], mac[:])
		}
		sent, _ := s.Transmit(descs[:n])
		s.Release(descs[sent:n])
	}
}

// An interface that already runs someone else's XDP program is left alone.
func ExampleOpen_busy() {
	_, err := xsk.Open("eth0", 0, nil)
	var busy *bpf.BusyError
	if errors.As(err, &busy) {
		fmt.Printf("eth0 runs XDP program %d; pass ReplaceXDP to take over\n", busy.ProgramID)
	}
}

// Cross-connect eth0 and eth1 through two sockets on one UMEM: a frame
// received on one is sent out of the other from the same frame, with no
// copy. The UMEM's receive frames (half of NumFrames) fill both sockets'
// fill rings.
func ExampleOptions_shareUMEM() {
	a, err := xsk.Open("eth0", 0, &xsk.Options{NumFrames: 8192, FillRingSize: 2048})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := xsk.Open("eth1", 0, &xsk.Options{ShareUMEM: a, FillRingSize: 2048})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	descs := make([]xsk.Desc, 64)
	for {
		// One goroutine drives both sockets.
		for _, p := range [][2]*xsk.Socket{{a, b}, {b, a}} {
			n, _ := p[0].Receive(descs)
			sent, _ := p[1].Transmit(descs[:n])
			p[0].Release(descs[sent:n]) // what did not fit in the TX ring
		}
	}
}
