package xsk_test

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/umem"
	"github.com/afxdp/afxdp/xsk"
	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// socketCalls are every method of s that returns an error, with descs as
// their argument.
func socketCalls(s *xsk.Socket, descs []xsk.Desc) map[string]func() error {
	return map[string]func() error{
		"Receive":  func() error { _, err := s.Receive(descs); return err },
		"Transmit": func() error { _, err := s.Transmit(descs); return err },
		"Alloc":    func() error { _, err := s.Alloc(descs); return err },
		"Release":  func() error { return s.Release(descs) },
		"Refill":   func() error { _, err := s.Refill(); return err },
		"Complete": func() error { _, err := s.Complete(); return err },
		"Kick":     s.Kick,
		"Wait":     func() error { _, err := s.Wait(xsk.Readable|xsk.Writable, 10*time.Millisecond); return err },
		"Stats":    func() error { _, err := s.Stats(); return err },
		"NAPIID":   func() error { _, err := s.NAPIID(); return err },
	}
}

// TestZeroSocket calls every method of a Socket that Open did not make. Its
// zero fd and evfd are 0, standard input: nothing may read, write, poll or
// close that, and nothing may panic.
func TestZeroSocket(t *testing.T) {
	stdin, err := os.Readlink("/proc/self/fd/0")
	if err != nil {
		t.Skipf("no standard input to watch: %v", err)
	}
	var s xsk.Socket
	descs := []xsk.Desc{{Addr: 0, Len: 60}}
	for name, call := range socketCalls(&s, descs) {
		testenv.NoPanic(t, name, func() {
			err := call()
			if !errors.Is(err, unix.EINVAL) || !strings.Contains(fmt.Sprint(err), "not a socket that Open returned") {
				t.Errorf("%s on a zero Socket: %v, want an error saying it is not a socket that Open returned", name, err)
			}
		})
	}
	testenv.NoPanic(t, "Frame", func() {
		if b := s.Frame(descs[0]); b != nil {
			t.Errorf("Frame on a zero Socket: %d bytes", len(b))
		}
	})
	testenv.NoPanic(t, "Frames", func() {
		if c := s.Frames(); c != (umem.Counts{}) {
			t.Errorf("Frames on a zero Socket: %+v", c)
		}
	})
	testenv.NoPanic(t, "FD", func() {
		if fd := s.FD(); fd != -1 {
			t.Errorf("FD of a zero Socket: %d, want -1", fd)
		}
	})
	testenv.NoPanic(t, "accessors", func() {
		_ = s.UMEM()
		_ = s.Program()
		_ = s.Mode()
		_ = s.ZeroCopy()
		_ = s.ZeroCopyErr()
		_ = s.XDPMode()
		_, _, _ = s.Interface(), s.Ifindex(), s.Queue()
	})
	testenv.NoPanic(t, "Close", func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close of a zero Socket: %v", err)
		}
	})
	if after, err := os.Readlink("/proc/self/fd/0"); err != nil || after != stdin {
		t.Fatalf("standard input was %q, is %q (%v): the zero Socket touched fd 0", stdin, after, err)
	}
}

// hostileOpts make a small socket: frames 0-31 receive (all in the fill
// ring after Open), 32-63 transmit, and a headroom so that packet
// addresses are not frame-aligned.
var hostileOpts = xsk.Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 32,
	RxRingSize: 32, TxRingSize: 32, Headroom: 64, NoXDP: true}

// drain waits until the kernel has completed every transmitted frame, then
// checks that all frames are home.
func drain(t *testing.T, s *xsk.Socket) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Frames().Tx > 0 && time.Now().Before(deadline) {
		s.Kick()
		s.Complete()
		time.Sleep(time.Millisecond)
	}
	c := s.Frames()
	if c.Total() != s.UMEM().Options().NumFrames || c.User() != 0 || c.Tx != 0 {
		t.Errorf("frames not all home: %+v (total %d)", c, c.Total())
	}
}

// TestHostileDescriptors hands Transmit, Release and Frame descriptors that
// name no frame the caller holds, or that do not fit one.
func TestHostileDescriptors(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s := openOn(t, v.Host, 0, &hostileOpts)
	const fs = 2048
	size := uint64(64 * fs)
	room := uint32(fs - hostileOpts.Headroom)
	tests := []struct {
		name  string
		build func(h []xsk.Desc) []xsk.Desc // h: 4 frames just allocated, Len 60
		op    string                        // "transmit" or "release"
		n     int                           // transmit: how many queued
		want  []string                      // in the error; nil: no error
	}{
		{"end of the area", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: size, Len: 60}} }, "transmit", 0, []string{"descriptor 0", "outside the 131072-byte UMEM"}},
		{"last byte of the area", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{h[0], {Addr: size - 1, Len: 1}} }, "transmit", 1, []string{"descriptor 1", "free, not held"}},
		{"max address", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: math.MaxUint64, Len: 60}} }, "transmit", 0, []string{"outside the"}},
		{"high bit", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: 1 << 63, Len: 1}} }, "transmit", 0, []string{"outside the"}},
		{"len 0", func(h []xsk.Desc) []xsk.Desc { h[1].Len = 0; return h[:2] }, "transmit", 1, []string{"descriptor 1", "len 0: an empty packet"}},
		{"len max", func(h []xsk.Desc) []xsk.Desc { h[0].Len = math.MaxUint32; return h[:1] }, "transmit", 0, []string{"len 4294967295", "past the end of its 2048-byte frame"}},
		{"len one past the frame", func(h []xsk.Desc) []xsk.Desc { h[0].Len = room + 1; return h[:1] }, "transmit", 0, []string{"past the end of its 2048-byte frame"}},
		{"len the whole room", func(h []xsk.Desc) []xsk.Desc { h[0].Len = room; return h[:1] }, "transmit", 1, nil},
		{"unaligned inside a held frame", func(h []xsk.Desc) []xsk.Desc { h[0].Addr += 7; return h[:1] }, "transmit", 1, nil},
		{"frame start before the headroom", func(h []xsk.Desc) []xsk.Desc { h[0].Addr &^= fs - 1; return h[:1] }, "transmit", 1, nil},
		{"a free frame", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: 60 * fs, Len: 60}} }, "transmit", 0, []string{"free, not held"}},
		{"a fill frame", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{h[0], {Addr: 0, Len: 60}} }, "transmit", 1, []string{"descriptor 1", "in the fill ring"}},
		{"one frame twice in a batch", func(h []xsk.Desc) []xsk.Desc {
			d := h[0]
			d.Addr += 100
			return []xsk.Desc{h[0], d}
		}, "transmit", 1, []string{"descriptor 1", "in the transmit path"}},
		{"empty batch", func(h []xsk.Desc) []xsk.Desc { return nil }, "transmit", 0, nil},
		{"release outside", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: size}} }, "release", 0, []string{"outside the 131072-byte UMEM"}},
		{"release max", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: math.MaxUint64}} }, "release", 0, []string{"outside the"}},
		{"release a fill frame", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: 5*fs + 3}} }, "release", 0, []string{"in the fill ring"}},
		{"release a free frame", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{{Addr: 60 * fs}} }, "release", 0, []string{"free"}},
		{"release twice in a batch", func(h []xsk.Desc) []xsk.Desc { return []xsk.Desc{h[0], h[1], h[0]} }, "release", 0, []string{"free"}},
		{"release inside a held frame", func(h []xsk.Desc) []xsk.Desc { h[0].Addr += 1000; return h[:1] }, "release", 0, nil},
		{"release nothing", func(h []xsk.Desc) []xsk.Desc { return nil }, "release", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := make([]xsk.Desc, 4)
			if n, err := s.Alloc(h); n != 4 || err != nil {
				t.Fatalf("alloc: %d, %v", n, err)
			}
			held := append([]xsk.Desc(nil), h...)
			for i := range h {
				h[i].Len = 60
			}
			descs := tt.build(h)
			var n int
			var err error
			testenv.NoPanic(t, tt.op, func() {
				if tt.op == "transmit" {
					n, err = s.Transmit(descs)
				} else {
					err = s.Release(descs)
				}
			})
			if n != tt.n {
				t.Errorf("%s queued %d, want %d", tt.op, n, tt.n)
			}
			switch {
			case tt.want == nil && err != nil:
				t.Errorf("%s: %v", tt.op, err)
			case tt.want != nil:
				var oe *xsk.OpError
				if !errors.Is(err, xsk.ErrInvalidDesc) || !errors.As(err, &oe) || oe.Op != tt.op {
					t.Errorf("%s: %v, want an OpError matching ErrInvalidDesc", tt.op, err)
				}
				for _, w := range tt.want {
					if !strings.Contains(fmt.Sprint(err), w) {
						t.Errorf("%s: error %q does not say %q", tt.op, err, w)
					}
				}
			}
			if c := s.Frames(); c.Total() != 64 {
				t.Errorf("frames %+v add up to %d", c, c.Total())
			}
			for _, d := range held {
				s.Release([]xsk.Desc{d}) // those still held
			}
			drain(t, s)
		})
	}
	// Frame never hands out memory outside the frame a descriptor names.
	for _, d := range []xsk.Desc{{Addr: size}, {Addr: size - 1, Len: 2}, {Addr: math.MaxUint64, Len: 1},
		{Addr: fs - 1, Len: 2}, {Addr: 0, Len: math.MaxUint32}, {Addr: 1 << 63}} {
		testenv.NoPanic(t, "Frame", func() {
			if b := s.Frame(d); b != nil {
				t.Errorf("Frame(%+v): %d bytes, cap %d", d, len(b), cap(b))
			}
		})
	}
	if b := s.Frame(xsk.Desc{Addr: fs + 10, Len: 0}); b == nil || len(b) != 0 || cap(b) != fs-10 {
		t.Errorf("Frame of an empty packet: len %d cap %d", len(b), cap(b))
	}
}

// TestExtremeOptions opens sockets with options at and beyond their
// limits: each refused one names its field and leaves nothing behind.
func TestExtremeOptions(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	hash, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer hash.Close()
	tests := []struct {
		name  string
		queue int
		o     xsk.Options
		want  string
	}{
		{"rx ring -1", 0, xsk.Options{RxRingSize: -1}, "RxRingSize -1: must be a power of two"},
		{"rx ring 3", 0, xsk.Options{RxRingSize: 3}, "RxRingSize 3"},
		{"rx ring 1<<31", 0, xsk.Options{RxRingSize: 1 << 31}, "RxRingSize 2147483648"},
		{"tx ring min int", 0, xsk.Options{TxRingSize: math.MinInt}, "TxRingSize -9223372036854775808"},
		{"tx ring 1<<40", 0, xsk.Options{TxRingSize: 1 << 40}, "TxRingSize 1099511627776"},
		{"fill ring -1", 0, xsk.Options{FillRingSize: -1}, "FillRingSize -1"},
		{"fill ring 1<<31", 0, xsk.Options{FillRingSize: 1 << 31}, "FillRingSize 2147483648"},
		{"completion ring 3", 0, xsk.Options{CompletionRingSize: 3}, "CompletionRingSize 3"},
		{"completion ring -2048", 0, xsk.Options{CompletionRingSize: -2048}, "CompletionRingSize -2048"},
		{"frames -1", 0, xsk.Options{NumFrames: -1}, "NumFrames -1"},
		{"frames min int", 0, xsk.Options{NumFrames: math.MinInt}, "NumFrames -9223372036854775808"},
		{"frames 1<<31", 0, xsk.Options{NumFrames: 1 << 31}, "NumFrames 2147483648"},
		{"frames 1", 0, xsk.Options{NumFrames: 1, FillRingSize: 2}, "UMEM too small for the rings"},
		{"frame size -2048", 0, xsk.Options{FrameSize: -2048}, "FrameSize -2048"},
		{"frame size 1", 0, xsk.Options{FrameSize: 1}, "FrameSize 1"},
		{"frame size 1<<31", 0, xsk.Options{FrameSize: 1 << 31}, "FrameSize 2147483648"},
		{"headroom -1", 0, xsk.Options{Headroom: -1}, "Headroom -1"},
		{"headroom 1<<31", 0, xsk.Options{Headroom: 1 << 31}, "Headroom 2147483648"},
		{"tx frames -1", 0, xsk.Options{TxFrames: -1}, "TxFrames -1"},
		{"tx frames beyond", 0, xsk.Options{TxFrames: 4097}, "TxFrames 4097"},
		{"max queues -1", 0, xsk.Options{MaxQueues: -1}, "MaxQueues -1"},
		{"max queues 1<<40", 0, xsk.Options{MaxQueues: 1 << 40}, "MaxQueues 1099511627776"},
		{"busy poll -1", 0, xsk.Options{BusyPoll: -1}, "BusyPoll -1ns"},
		{"busy poll huge", 0, xsk.Options{BusyPoll: math.MaxInt64}, "BusyPoll 2562047h"},
		{"busy poll budget -1", 0, xsk.Options{BusyPoll: time.Microsecond, BusyPollBudget: -1}, "BusyPollBudget -1"},
		{"busy poll budget 1<<20", 0, xsk.Options{BusyPoll: time.Microsecond, BusyPollBudget: 1 << 20}, "BusyPollBudget 1048576"},
		{"tx budget -1", 0, xsk.Options{TxBudget: -1}, "TxBudget -1"},
		{"tx budget 1<<31", 0, xsk.Options{TxBudget: 1 << 31}, "TxBudget 2147483648"},
		{"tx budget above the ring", 0, xsk.Options{TxBudget: 64, TxRingSize: 32}, "TxBudget 64"},
		{"bind -1", 0, xsk.Options{Bind: -1}, "Bind -1"},
		{"xdp mode -1", 0, xsk.Options{XDPMode: -1}, "XDPMode -1"},
		{"queue min int", math.MinInt, xsk.Options{}, "must not be negative"},
		{"queue 1<<32", 1 << 32, xsk.Options{}, "queue 4294967296"},
		{"xskmap and noxdp", 0, xsk.Options{XSKMap: m, NoXDP: true}, "XSKMap and NoXDP"},
		{"txonly and noxdp", 0, xsk.Options{TxOnly: true, NoXDP: true}, "TxOnly with XSKMap or NoXDP"},
		{"txonly and xskmap", 0, xsk.Options{TxOnly: true, XSKMap: m}, "TxOnly with XSKMap or NoXDP"},
		{"xskmap of another type", 0, xsk.Options{XSKMap: hash}, "XSKMap: map type Hash"},
		{"queue beyond the xskmap", 1 << 32, xsk.Options{XSKMap: m}, "queue 4294967296"},
		{"zero-copy tx only on veth", 0, xsk.Options{TxOnly: true, Bind: xsk.BindZeroCopy}, "zero-copy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testenv.Snapshot(t)
			var s *xsk.Socket
			var err error
			testenv.NoPanic(t, "Open", func() { s, err = xsk.Open(v.Host.Name, tt.queue, &tt.o) })
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			var oe *xsk.OpError
			if !errors.As(err, &oe) || oe.Op != "open" || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want an OpError for open saying %q", err, tt.want)
			}
			failedOpenLeftNothing(t, v.Host.Index, before)
		})
	}
}

// TestTinyOptions opens sockets at the smallest sizes the options allow,
// and checks that they move frames and keep count.
func TestTinyOptions(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	tests := []struct {
		name string
		o    xsk.Options
	}{
		{"rings of 1", xsk.Options{NumFrames: 2, RxRingSize: 1, TxRingSize: 1, FillRingSize: 1, CompletionRingSize: 1}},
		{"one frame", xsk.Options{NumFrames: 1, FillRingSize: 1}},
		{"transmit only UMEM", xsk.Options{NumFrames: 8, TxFrames: 8, TxRingSize: 4, CompletionRingSize: 2}},
		{"receive only UMEM", xsk.Options{NumFrames: 8, TxFrames: 0, FillRingSize: 4}},
		{"most headroom", xsk.Options{NumFrames: 16, FillRingSize: 8, Headroom: 2048 - 256 - 1514}},
		{"tx budget the ring", xsk.Options{NumFrames: 128, FillRingSize: 64, TxRingSize: 32, TxBudget: 32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testenv.Snapshot(t)
			var s *xsk.Socket
			var err error
			testenv.NoPanic(t, "Open", func() { s, err = xsk.Open(v.Host.Name, 0, &tt.o) })
			if err != nil {
				t.Fatal(err)
			}
			num := s.UMEM().Options().NumFrames
			descs := make([]xsk.Desc, 8)
			for range 20 {
				n, err := s.Alloc(descs)
				if err != nil {
					t.Fatal(err)
				}
				for i := range descs[:n] {
					descs[i].Len = 60
				}
				k, err := s.Transmit(descs[:n])
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Release(descs[k:n]); err != nil {
					t.Fatal(err)
				}
				if c := s.Frames(); c.Total() != num {
					t.Fatalf("frames %+v add up to %d, not %d", c, c.Total(), num)
				}
				if _, err := s.Receive(descs); err != nil {
					t.Fatal(err)
				}
			}
			drain(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if after := testenv.Snapshot(t); after != before {
				t.Errorf("leak: before %+v, after %+v", before, after)
			}
		})
	}
}

// TestCloseRacesEveryCall closes sockets while other goroutines call
// every method that may run at the same time as Close (under -race): each
// call returns, with nil or an error matching net.ErrClosed, and nothing
// is left behind.
func TestCloseRacesEveryCall(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 2})
	before := testenv.Snapshot(t)
	opts := xsk.Options{NumFrames: 256, FillRingSize: 64, CompletionRingSize: 64, RxRingSize: 64, TxRingSize: 64}
	for iter := range 30 {
		s, err := xsk.Open(v.Host.Name, 0, &opts)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		loop := func(name string, call func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if r := recover(); r != nil {
						errs <- fmt.Errorf("%s panicked: %v", name, r)
					}
				}()
				for {
					err := call()
					if err == nil {
						continue
					}
					if !errors.Is(err, net.ErrClosed) {
						errs <- fmt.Errorf("%s: %w", name, err)
					}
					return
				}
			}()
		}
		rx := make([]xsk.Desc, 16)
		if iter%2 == 1 {
			loop("receive side", func() error {
				if _, err := s.Receive(rx); err != nil {
					return err
				}
				_, err := s.Refill()
				return err
			})
		}
		tx := make([]xsk.Desc, 16)
		loop("transmit side", func() error {
			n, err := s.Alloc(tx)
			if err != nil {
				return err
			}
			for i := range tx[:n] {
				tx[i].Len = 60
			}
			if _, err := s.Transmit(tx[:n]); err != nil {
				return err
			}
			if _, err := s.Complete(); err != nil {
				return err
			}
			return s.Kick()
		})
		loop("Wait", func() error { _, err := s.Wait(xsk.Readable, -1); return err })
		loop("Wait writable", func() error { _, err := s.Wait(xsk.Writable, time.Millisecond); return err })
		loop("Stats", func() error { _, err := s.Stats(); return err })
		loop("NAPIID", func() error { _, err := s.NAPIID(); return err })
		if iter%2 == 0 {
			// Open sharing s counts as a receive-side call: it takes
			// the receive goroutine's place.
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := opts
				o.NumFrames, o.ShareUMEM, o.Filter = 0, s, bpf.Filter{}
				b, err := xsk.Open(v.Host.Name, 1, &o)
				if err == nil {
					b.Close()
				}
			}()
		}
		time.Sleep(time.Duration(iter%5) * time.Millisecond)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Close(); err != nil {
					errs <- fmt.Errorf("close: %w", err)
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: calls or Close did not return", iter)
		}
		close(errs)
		for err := range errs {
			t.Errorf("iteration %d: %v", iter, err)
		}
		if c := s.Frames(); c.Total() != 256 {
			t.Errorf("iteration %d: frames %+v add up to %d", iter, c, c.Total())
		}
	}
	if after := testenv.Snapshot(t); after != before {
		t.Errorf("leak: before %+v, after %+v", before, after)
	}
	if q, _ := bpf.QueryXDP(v.Host.Index); q.Attached() {
		t.Errorf("XDP program left: %+v", q)
	}
}

// TestHostileReceivedFrames misuses received frames: released twice,
// transmitted then released, transmitted twice, transmitted too long,
// released while the kernel holds them.
func TestHostileReceivedFrames(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	o := hostileOpts
	o.NoXDP, o.Filter = false, udpFilter
	s := openOn(t, v.Host, 0, &o)
	peer := newPacketSocket(t, v.Peer)
	fl := newFlow(v.Peer, v.Host, 30)
	buf := make([]byte, 2048)
	for seq := range 8 {
		n, err := fl.write(buf, uint64(seq))
		if err != nil {
			t.Fatal(err)
		}
		peer.send(t, buf[:n])
	}
	got := make([]xsk.Desc, 0, 8)
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 8 && time.Now().Before(deadline) {
		n, err := s.Receive(got[len(got):cap(got)])
		if err != nil {
			t.Fatal(err)
		}
		got = got[:len(got)+n]
		if n == 0 {
			s.Wait(xsk.Readable, 10*time.Millisecond)
		}
	}
	if len(got) != 8 {
		t.Fatalf("received %d of 8", len(got))
	}
	check := func(what string, err error, want string) {
		t.Helper()
		if !errors.Is(err, xsk.ErrInvalidDesc) || !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("%s: %v, want an error saying %q", what, err, want)
		}
		if c := s.Frames(); c.Total() != 64 {
			t.Errorf("%s: frames %+v add up to %d", what, c, c.Total())
		}
	}
	// Release twice.
	if err := s.Release(got[:1]); err != nil {
		t.Fatal(err)
	}
	check("second release", s.Release(got[:1]), "free")
	// Transmit after release.
	_, err := s.Transmit(got[:1])
	check("transmit of a released frame", err, "free")
	// Transmit too long: received frames have Headroom before the packet.
	long := got[1]
	long.Len = 2048
	_, err = s.Transmit([]xsk.Desc{long})
	check("transmit past the frame", err, "past the end")
	// Forward, then release and transmit again.
	if n, err := s.Transmit(got[1:3]); n != 2 || err != nil {
		t.Fatalf("forward: %d, %v", n, err)
	}
	check("release of a forwarded frame", s.Release(got[1:2]), "not held by the user")
	_, err = s.Transmit(got[2:3])
	check("second transmit", err, "not held by the user")
	// Release of a frame in the fill ring, by an address inside it.
	c := s.Frames()
	if c.Fill == 0 {
		t.Fatalf("no frame in the fill ring: %+v", c)
	}
	for i := range 32 {
		addr := uint64(i)*2048 + 100
		if slices.ContainsFunc(got, func(d xsk.Desc) bool { return d.Addr>>11 == addr>>11 }) {
			continue
		}
		check("release of a fill frame", s.Release([]xsk.Desc{{Addr: addr}}), "")
	}
	if err := s.Release(got[3:]); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	// The forwarded frames come back to receive into.
	for range 3 {
		s.Refill()
	}
	if c := s.Frames(); c.Recycling != 0 || c.Free+c.Fill != 64 {
		t.Errorf("frames after forwarding %+v", c)
	}
}

// TestWaitExtremes waits for nothing, for everything, not at all and for
// ever.
func TestWaitExtremes(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s, err := xsk.Open(v.Host.Name, 0, &hostileOpts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ev      xsk.Events
		timeout time.Duration
		want    xsk.Events
	}{
		{0, 0, 0},
		{0, time.Millisecond, 0},
		{xsk.Readable, 0, 0},
		{0xff, 0, xsk.Writable},
		{xsk.Writable, math.MaxInt64, xsk.Writable},
		{xsk.Writable, -1, xsk.Writable},
	} {
		var got xsk.Events
		var err error
		testenv.NoPanic(t, "Wait", func() { got, err = s.Wait(tt.ev, tt.timeout) })
		if got != tt.want || err != nil {
			t.Errorf("Wait(%#x, %v) = %#x, %v; want %#x", tt.ev, tt.timeout, got, err, tt.want)
		}
	}
	timeouts := []time.Duration{math.MaxInt64, math.MinInt64, math.MaxInt64 - time.Millisecond, 1 << 62}
	res := make(chan error, len(timeouts))
	for _, timeout := range timeouts {
		go func() { _, err := s.Wait(xsk.Readable, timeout); res <- err }()
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-res:
		t.Fatalf("Wait(Readable) with a long timeout on an idle socket returned early: %v", err)
	default:
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range timeouts {
		select {
		case err := <-res:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Wait interrupted by Close: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not interrupt Wait")
		}
	}
}

// TestAccessorsAfterClose calls the methods that do not fail after Close:
// they hand out no memory or descriptor of the closed socket.
func TestAccessorsAfterClose(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	o := hostileOpts
	o.NoXDP = false
	s, err := xsk.Open(v.Host.Name, 0, &o)
	if err != nil {
		t.Fatal(err)
	}
	descs := make([]xsk.Desc, 4)
	n, _ := s.Alloc(descs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.NoPanic(t, "accessors", func() {
		for _, d := range descs[:n] {
			if b := s.Frame(d); b != nil {
				t.Errorf("Frame(%+v) after Close: %d bytes", d, len(b))
			}
		}
		if c := s.Frames(); c.Total() != 64 || c.TxUser != n {
			t.Errorf("Frames after Close: %+v", c)
		}
		if fd := s.FD(); fd != -1 {
			t.Errorf("FD after Close: %d", fd)
		}
		if s.Program() != nil {
			t.Error("Program after Close")
		}
		if s.UMEM().Area() != nil {
			t.Error("UMEM area after Close")
		}
		if err := s.UMEM().Register(0); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Register of the closed UMEM: %v", err)
		}
		if _, err := s.UMEM().AddRings(0, 64, 64); !errors.Is(err, net.ErrClosed) {
			t.Errorf("AddRings on the closed UMEM: %v", err)
		}
	})
	o.ShareUMEM, o.NumFrames, o.Headroom = s, 0, 0
	if _, err := xsk.Open(v.Host.Name, 0, &o); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Open sharing a closed socket: %v", err)
	}
}
