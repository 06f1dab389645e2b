package umem

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/ring"
)

// fakeKernel stands in for the kernel: it consumes the fill ring and
// produces the completion ring, over plain Go memory.
type fakeKernel struct {
	fill *ring.Consumer[uint64]
	comp *ring.Producer[uint64]
}

var testLayout = ring.Offsets{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

func newFake(t testing.TB, o *Options) (*UMEM, *fakeKernel) {
	t.Helper()
	u, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	k := &fakeKernel{}
	fillMem := make([]byte, 192+8*u.opts.FillRingSize)
	compMem := make([]byte, 192+8*u.opts.CompletionRingSize)
	u.own = &Rings{u: u, fillSize: u.opts.FillRingSize, noFill: u.opts.NoFill}
	u.fillFrames += u.own.fillShare() // as Register counts it
	u.own.fill, _ = ring.NewProducer[uint64](fillMem, testLayout, uint32(u.opts.FillRingSize))
	k.fill, _ = ring.NewConsumer[uint64](fillMem, testLayout, uint32(u.opts.FillRingSize))
	u.own.comp, _ = ring.NewConsumer[uint64](compMem, testLayout, uint32(u.opts.CompletionRingSize))
	k.comp, _ = ring.NewProducer[uint64](compMem, testLayout, uint32(u.opts.CompletionRingSize))
	return u, k
}

// receive takes up to n frames from the fill ring as the kernel would
// deliver packets of length 60 into them.
func (k *fakeKernel) receive(n int) []ring.Desc {
	idx, got := k.fill.Peek(uint32(n))
	out := make([]ring.Desc, got)
	for i := range got {
		out[i] = ring.Desc{Addr: k.fill.At(idx + i), Len: 60}
	}
	k.fill.Release(got)
	return out
}

func (k *fakeKernel) complete(descs []ring.Desc) {
	for _, d := range descs {
		if k.comp.Produce([]uint64{d.Addr}) != 1 {
			panic("completion ring full")
		}
	}
}

func checkTotal(t *testing.T, u *UMEM) Counts {
	t.Helper()
	c := u.Counts()
	if c.Total() != u.opts.NumFrames {
		t.Fatalf("counts %+v add up to %d, want %d", c, c.Total(), u.opts.NumFrames)
	}
	return c
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		o    Options
		want string
	}{
		{Options{FrameSize: 1500}, "FrameSize 1500: must be 2048 or 4096"},
		{Options{FrameSize: 8192}, "FrameSize 8192"},
		{Options{NumFrames: -1}, "NumFrames -1"},
		{Options{NumFrames: 1 << 25}, "NumFrames 33554432"},
		{Options{FillRingSize: 1000}, "FillRingSize 1000: must be a power of two"},
		{Options{CompletionRingSize: 3}, "CompletionRingSize 3: must be a power of two"},
		{Options{Headroom: -1}, "Headroom -1"},
		{Options{Headroom: 400}, "Headroom 400: must be between 0 and 278"},
		{Options{TxFrames: 5000}, "TxFrames 5000"},
		{Options{NumFrames: 1024, FillRingSize: 2048}, "UMEM too small for the rings: 512 receive frames cannot fill a FillRingSize of 2048"},
	}
	for _, tt := range tests {
		o := tt.o
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: got %v, want %q", tt.o, err, tt.want)
		}
		if _, err := New(&tt.o); err == nil || !strings.HasPrefix(err.Error(), "create umem: ") {
			t.Errorf("New(%+v): %v", tt.o, err)
		}
	}
	var o Options
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.NumFrames != 4096 || o.FrameSize != 2048 || o.TxFrames != 2048 || o.FillRingSize != 2048 {
		t.Fatalf("defaults %+v", o)
	}
	o = Options{NumFrames: 64, FillRingSize: 64, RxOnly: true, TxFrames: 10}
	if err := o.Validate(); err != nil || o.TxFrames != 0 {
		t.Fatalf("RxOnly: %v, TxFrames %d", err, o.TxFrames)
	}
}

func TestReceiveCycle(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 32})
	if n := u.Refill(); n != 32 {
		t.Fatalf("refill put %d frames in the fill ring, want 32", n)
	}
	c := checkTotal(t, u)
	if c.Fill != 32 || c.Free != 32 {
		t.Fatalf("after refill %+v", c)
	}
	got := k.receive(10)
	u.Received(got)
	if c := checkTotal(t, u); c.RxUser != 10 || c.Fill != 22 {
		t.Fatalf("after receive %+v", c)
	}
	for _, d := range got {
		if f := u.Frame(d); len(f) != 60 {
			t.Fatalf("frame of %d bytes", len(f))
		}
		if err := u.Release(d.Addr + 7); err != nil { // any address inside the frame
			t.Fatal(err)
		}
	}
	if err := u.Release(got[0].Addr); !errors.Is(err, ErrInvalidDesc) || !strings.Contains(err.Error(), "frame is free") {
		t.Fatalf("double release: %v", err)
	}
	if c := checkTotal(t, u); c.RxUser != 0 {
		t.Fatalf("after release %+v", c)
	}
	if n := u.Refill(); n != 10 {
		t.Fatalf("refill put back %d, want 10", n)
	}
}

func TestTransmitCycle(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 64})
	descs := make([]ring.Desc, 40)
	n := u.Alloc(descs)
	if n != 32 {
		t.Fatalf("allocated %d of 32 transmit frames", n)
	}
	if u.Alloc(make([]ring.Desc, 1)) != 0 {
		t.Fatal("allocated beyond the transmit pool")
	}
	for _, d := range descs[:n] {
		if d.Addr < 32*2048 || d.Len != 2048 {
			t.Fatalf("transmit frame %+v outside the transmit half", d)
		}
	}
	descs[0].Len = 100
	descs[1].Len = 0
	if k, err := u.Send(descs[:2]); k != 1 || !errors.Is(err, ErrInvalidDesc) {
		t.Fatalf("zero-length descriptor: accepted %d, %v", k, err)
	}
	descs[1].Len = 2049
	if k, err := u.Send(descs[1:2]); k != 0 || err == nil {
		t.Fatalf("oversized descriptor accepted: %d %v", k, err)
	}
	descs[1].Len = 64
	if _, err := u.Send(descs[0:1]); err == nil || !strings.Contains(err.Error(), "in the transmit path") {
		t.Fatalf("sending a frame twice: %v", err)
	}
	if k, err := u.Send(descs[1:30]); k != 29 || err != nil {
		t.Fatalf("send: %d %v", k, err)
	}
	// Two frames are given back unsent.
	for _, d := range descs[30:32] {
		if err := u.Release(d.Addr); err != nil {
			t.Fatal(err)
		}
	}
	if c := checkTotal(t, u); c.Tx != 30 || c.TxUser != 0 {
		t.Fatalf("after send %+v", c)
	}
	k.complete(descs[:30])
	if got := u.Complete(); got != 30 {
		t.Fatalf("completed %d, want 30", got)
	}
	if c := checkTotal(t, u); c.Tx != 0 || c.Free != 64 {
		t.Fatalf("after completion %+v", c)
	}
}

// TestForwardRecycles sends received frames out (l2fwd) and checks that
// their completions come back to the receive side.
func TestForwardRecycles(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 64})
	u.Refill()
	rx := k.receive(32)
	u.Received(rx)
	if n, err := u.Send(rx); n != 32 || err != nil {
		t.Fatalf("forward: %d %v", n, err)
	}
	if c := checkTotal(t, u); c.Tx != 32 || c.Fill != 0 {
		t.Fatalf("after forward %+v", c)
	}
	if u.Refill() != 0 {
		t.Fatal("refill found frames while all were in flight")
	}
	k.complete(rx)
	u.Complete()
	if c := checkTotal(t, u); c.Recycling != 32 {
		t.Fatalf("after completion %+v", c)
	}
	if n := u.Refill(); n != 32 {
		t.Fatalf("refill after recycle: %d", n)
	}
	if c := checkTotal(t, u); c.Recycling != 0 || c.Fill != 32 {
		t.Fatalf("after recycle %+v", c)
	}
	// The transmit pool was untouched.
	if u.Alloc(make([]ring.Desc, 64)) != 32 {
		t.Fatal("transmit pool changed")
	}
}

// TestAllocFreeReapsNothing: with completions waiting, AllocFree takes
// only the frames already free, where Alloc reaps the completion ring to
// find more.
func TestAllocFreeReapsNothing(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 64})
	descs := make([]ring.Desc, 32)
	if n := u.AllocFree(descs); n != 32 {
		t.Fatalf("AllocFree got %d of 32 free transmit frames", n)
	}
	for i := range descs {
		descs[i].Len = 60
	}
	if n, err := u.Send(descs); n != 32 || err != nil {
		t.Fatalf("send: %d %v", n, err)
	}
	k.complete(descs)
	if n := u.AllocFree(descs[:1]); n != 0 {
		t.Fatalf("AllocFree got %d frames with all in flight, want 0", n)
	}
	if c := checkTotal(t, u); c.Tx != 32 || u.own.Completed() != 0 {
		t.Fatalf("AllocFree reaped the completion ring: %+v, %d completed", c, u.own.Completed())
	}
	if n := u.Alloc(descs[:1]); n != 1 || u.own.Completed() != 32 {
		t.Fatalf("Alloc got %d frames and reaped %d completions, want 1 and 32", n, u.own.Completed())
	}
}

func TestReleaseOutside(t *testing.T) {
	u, _ := newFake(t, &Options{NumFrames: 64, FillRingSize: 32})
	if err := u.Release(64 * 2048); !errors.Is(err, ErrInvalidDesc) || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("got %v", err)
	}
	if u.Frame(ring.Desc{Addr: 64 * 2048, Len: 1}) != nil || u.Frame(ring.Desc{Addr: 2047, Len: 2}) != nil {
		t.Fatal("Frame returned memory outside a frame")
	}
}

// FuzzFrames performs random operations, as the kernel and both sides would,
// and checks that no frame is lost or handed out twice.
func FuzzFrames(f *testing.F) {
	f.Add(uint64(1), 200)
	f.Add(uint64(99), 1000)
	f.Fuzz(func(t *testing.T, seed uint64, steps int) {
		steps = min(max(steps, 0), 3000)
		u, k := newFake(t, &Options{NumFrames: 128, FillRingSize: 64, CompletionRingSize: 128})
		rng := rand.New(rand.NewPCG(seed, 0))
		var held []ring.Desc // user holds
		var sent []ring.Desc // kernel transmits
		var inRX []ring.Desc // delivered to the RX ring, not yet read
		for range steps {
			switch rng.IntN(6) {
			case 0:
				u.Refill()
			case 1:
				inRX = append(inRX, k.receive(rng.IntN(8))...)
			case 2:
				n := min(len(inRX), rng.IntN(8))
				u.Received(inRX[:n])
				held = append(held, inRX[:n]...)
				inRX = inRX[n:]
			case 3:
				d := make([]ring.Desc, rng.IntN(8))
				d = d[:u.Alloc(d)]
				held = append(held, d...)
			case 4:
				if len(held) > 0 {
					i := rng.IntN(len(held))
					d := held[i]
					held = append(held[:i], held[i+1:]...)
					if rng.IntN(2) == 0 {
						if err := u.Release(d.Addr); err != nil {
							t.Fatal(err)
						}
					} else {
						d.Len = 60
						if n, err := u.Send([]ring.Desc{d}); n != 1 {
							t.Fatal(err)
						}
						sent = append(sent, d)
					}
				}
			case 5:
				n := rng.IntN(len(sent) + 1)
				k.complete(sent[:n])
				sent = sent[n:]
				u.Complete()
			}
			c := checkTotal(t, u)
			if c.User() != len(held) {
				t.Fatalf("counts %+v, test holds %d", c, len(held))
			}
		}
		seen := map[uint64]bool{}
		for _, d := range held {
			b := d.Addr &^ 2047
			if seen[b] {
				t.Fatalf("frame %#x held twice", b)
			}
			seen[b] = true
		}
	})
}

func TestHotPathAllocatesNothing(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 256, FillRingSize: 128, CompletionRingSize: 128})
	descs := make([]ring.Desc, 32)
	rx := make([]ring.Desc, 32)
	compAddrs := make([]uint64, 32)
	allocs := testing.AllocsPerRun(200, func() {
		u.Refill()
		idx, got := k.fill.Peek(32)
		for i := range got {
			rx[i] = ring.Desc{Addr: k.fill.At(idx + i), Len: 60}
		}
		k.fill.Release(got)
		u.Received(rx[:got])
		for _, d := range rx[:got] {
			u.Release(d.Addr)
		}
		n := u.Alloc(descs)
		u.Send(descs[:n])
		for i := range n {
			compAddrs[i] = descs[i].Addr
		}
		k.comp.Produce(compAddrs[:n])
		u.Complete()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
	checkTotal(t, u)
}

// TestUnfill takes back the frames the fake kernel left in the fill ring:
// they are free again and the next Refill hands them out anew.
func TestUnfill(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 32})
	u.Refill()
	got := k.receive(12)
	u.Received(got)
	if h := u.own.Held(); h != 20 {
		t.Fatalf("the kernel holds %d frames through the rings, want 20", h)
	}
	if n := u.own.Unfill(); n != 20 {
		t.Fatalf("unfill took back %d frames, want 20", n)
	}
	if h := u.own.Held(); h != 0 {
		t.Fatalf("after unfill the kernel holds %d frames through the rings, want 0", h)
	}
	if c := checkTotal(t, u); c.Fill != 0 || c.RxUser != 12 || c.Free != 52 {
		t.Fatalf("after unfill %+v", c)
	}
	if n := u.own.Unfill(); n != 0 {
		t.Fatalf("second unfill: %d", n)
	}
	for _, d := range got {
		if err := u.Release(d.Addr); err != nil {
			t.Fatal(err)
		}
	}
	if n := u.Refill(); n != 32 {
		t.Fatalf("refill after unfill put %d frames in the fill ring, want 32", n)
	}
	if c := checkTotal(t, u); c.Fill != 32 || c.Free != 32 {
		t.Fatalf("after refill %+v", c)
	}
}

func TestRefillUpTo(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 128, FillRingSize: 32, CompletionRingSize: 32})
	for _, limit := range []int{-1, 0} {
		if n := u.own.RefillUpTo(limit); n != 0 {
			t.Fatalf("RefillUpTo(%d) added %d frames", limit, n)
		}
	}
	if n := u.own.RefillUpTo(10); n != 10 {
		t.Fatalf("RefillUpTo(10) added %d frames", n)
	}
	if c := checkTotal(t, u); c.Fill != 10 || c.Free != 118 {
		t.Fatalf("after RefillUpTo(10) %+v", c)
	}
	if got := k.receive(32); len(got) != 10 {
		t.Fatalf("the kernel found %d frames in the fill ring, want 10", len(got))
	}
	// The fill ring bounds it as it bounds Refill.
	if n := u.own.RefillUpTo(100); n != 32 {
		t.Fatalf("RefillUpTo(100) into a fill ring of 32 added %d frames", n)
	}
	checkTotal(t, u)
}

// TestCompleteTakesOnlyFramesInFlight feeds Complete what Linux 6.18 puts
// on the completion ring in copy mode for a descriptor it refuses with
// EINVAL and leaves at the head of the TX ring (XDP_TX_METADATA without tx
// metadata): the same address on every retry. A frame completed twice, or
// one that was never sent, must not become free a second time, or Alloc
// would hand it out twice.
func TestCompleteTakesOnlyFramesInFlight(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 64})
	u.Refill()
	rx := k.receive(1)
	u.Received(rx)
	descs := make([]ring.Desc, 2)
	if n := u.Alloc(descs); n != 2 {
		t.Fatalf("allocated %d", n)
	}
	descs[0].Len, descs[1].Len = 60, 60
	if n, err := u.Send(descs[:1]); n != 1 || err != nil {
		t.Fatalf("send: %d %v", n, err)
	}
	if n, err := u.Send(rx); n != 1 || err != nil {
		t.Fatalf("forward: %d %v", n, err)
	}
	// Each in-flight frame completes three times; a frame the user holds
	// and a free one "complete" too.
	k.complete([]ring.Desc{descs[0], descs[0], rx[0], descs[1], rx[0], descs[0], {Addr: 63 * 2048}, rx[0]})
	if got := u.Complete(); got != 2 {
		t.Fatalf("completed %d, want 2", got)
	}
	if c := checkTotal(t, u); c.Tx != 0 || c.TxUser != 1 || c.Recycling != 1 || c.Free != 31 || c.Fill != 31 {
		t.Fatalf("after completion %+v", c)
	}
	if got := u.own.Completed(); got != 2 {
		t.Fatalf("Completed() = %d, want 2", got)
	}
	if err := u.Release(descs[1].Addr); err != nil {
		t.Fatalf("release of the allocated frame: %v", err)
	}
	// Every transmit frame is handed out once.
	all := make([]ring.Desc, 64)
	n := u.Alloc(all)
	if n != 32 {
		t.Fatalf("allocated %d transmit frames, want 32", n)
	}
	seen := map[uint64]bool{}
	for _, d := range all[:n] {
		if seen[d.Addr] {
			t.Fatalf("frame %#x allocated twice", d.Addr)
		}
		seen[d.Addr] = true
	}
	if n := u.Refill(); n != 1 {
		t.Fatalf("refill after recycle: %d, want 1", n)
	}
	checkTotal(t, u)
}

// TestClosedRingsGiveBackWhatCompleted unmaps the rings of a socket that
// sent transmit frames and forwarded received ones, some of which its
// completion ring had returned and some not: the returned ones come back
// (transmit frames free, receive frames on their way to the receive side),
// the rest are lost, none stays in flight, and the counts add up.
func TestClosedRingsGiveBackWhatCompleted(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 16, CompletionRingSize: 64})
	tx := make([]ring.Desc, 8)
	if n := u.Alloc(tx); n != 8 {
		t.Fatalf("allocated %d of 8", n)
	}
	for i := range tx {
		tx[i].Len = 60
	}
	if n := u.Refill(); n != 16 {
		t.Fatalf("refill: %d, want 16", n)
	}
	rx := k.receive(4)
	u.Received(rx)
	if n, err := u.Send(tx); n != 8 || err != nil {
		t.Fatalf("send: %d %v", n, err)
	}
	if n, err := u.Send(rx); n != 4 || err != nil {
		t.Fatalf("forward: %d %v", n, err)
	}
	// Of 12 frames in flight the kernel completes 5 transmit frames and
	// 2 received ones before the socket closes.
	k.complete(tx[:5])
	k.complete(rx[:2])
	if err := u.UnmapRings(); err != nil {
		t.Fatal(err)
	}
	// Free: 16 receive frames never used, 24 transmit frames never
	// allocated and the 5 completed. Lost: the 12 left in the fill ring
	// and the 5 never completed.
	want := Counts{Free: 16 + 24 + 5, Recycling: 2, Lost: 12 + 5}
	if c := checkTotal(t, u); c != want {
		t.Fatalf("after the rings closed: %+v, want %+v", c, want)
	}
	if n := u.Alloc(make([]ring.Desc, 64)); n != 29 {
		t.Fatalf("allocated %d transmit frames after the rings closed, want the 29 free", n)
	}
}

// addFake adds rings to u as AddRings would, over plain Go memory, and a
// fake kernel for them.
func addFake(u *UMEM, fillSize, compSize int) (*Rings, *fakeKernel) {
	r := &Rings{u: u, fillSize: fillSize, added: true}
	k := &fakeKernel{}
	fillMem := make([]byte, 192+8*fillSize)
	compMem := make([]byte, 192+8*compSize)
	r.fill, _ = ring.NewProducer[uint64](fillMem, testLayout, uint32(fillSize))
	k.fill, _ = ring.NewConsumer[uint64](fillMem, testLayout, uint32(fillSize))
	r.comp, _ = ring.NewConsumer[uint64](compMem, testLayout, uint32(compSize))
	k.comp, _ = ring.NewProducer[uint64](compMem, testLayout, uint32(compSize))
	u.mu.Lock()
	u.shared++
	u.fillFrames += fillSize
	u.mu.Unlock()
	return r, k
}

// TestClosedSharingRingsHandOverToTheTransmitSide closes the rings of a
// sharing socket on one goroutine while another transmits on the UMEM's
// first socket, as the xsk package allows (under -race): the closed
// socket's completed frames come back through the transmitting goroutine's
// Complete, and the frames it never got back are lost, not in flight.
func TestClosedSharingRingsHandOverToTheTransmitSide(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 128, FillRingSize: 16, CompletionRingSize: 64})
	r2, k2 := addFake(u, 16, 64)
	tx := make([]ring.Desc, 10)
	if n := r2.Alloc(tx); n != 10 {
		t.Fatalf("allocated %d of 10", n)
	}
	for i := range tx {
		tx[i].Len = 60
	}
	if n, err := r2.Send(tx); n != 10 || err != nil {
		t.Fatalf("send on the sharing socket: %d %v", n, err)
	}
	k2.complete(tx[:6])

	// The transmitting goroutine sends and reaps on the first socket
	// while the sharing one closes.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		own := make([]ring.Desc, 4)
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			n := u.Alloc(own)
			for i := range own[:n] {
				own[i].Len = 60
			}
			if m, err := u.Send(own[:n]); m != n || err != nil {
				done <- fmt.Errorf("send: %d of %d: %v", m, n, err)
				return
			}
			k.complete(own[:n])
			u.Complete()
		}
	}()
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	// The transmitting goroutine takes the closed rings' frames back at
	// its next Complete.
	for deadline := time.Now().Add(10 * time.Second); u.orphaned.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("the transmitting goroutine never took back the closed rings' frames")
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	u.Complete()
	// 64 transmit frames: the 4 never completed are lost, the rest
	// free. 64 receive frames, free: nothing refilled a fill ring.
	want := Counts{Free: 64 + 60, Lost: 4}
	if c := checkTotal(t, u); c != want {
		t.Fatalf("after the sharing rings closed: %+v, want %+v", c, want)
	}
}

// TestDefaultFillRingFits: a FillRingSize left zero is as large as the
// receive frames can fill, up to the default, so that a small UMEM needs
// no ring sizes of its own.
func TestDefaultFillRingFits(t *testing.T) {
	for _, tt := range []struct {
		o    Options
		want int
	}{
		{Options{}, DefaultRingSize},
		{Options{NumFrames: 2048}, 1024},
		{Options{NumFrames: 100}, 32},
		{Options{NumFrames: 2048, TxFrames: 2000}, 32},
		{Options{NumFrames: 1}, 1},
		{Options{NumFrames: 64, TxFrames: 64}, 1},
		{Options{NumFrames: 8192, RxOnly: true}, DefaultRingSize},
		{Options{NumFrames: 2048, FillRingSize: 64}, 64},
	} {
		o := tt.o
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", tt.o, err)
			continue
		}
		if o.FillRingSize != tt.want {
			t.Errorf("%+v: FillRingSize %d, want %d", tt.o, o.FillRingSize, tt.want)
		}
	}
}

// TestSpareRxFramesLeavesOutFramesLostWithClosedRings forwards received
// frames through a sharing socket that closes before its completion ring
// returns any, one of them after the close: the receive frames it never
// got back are lost, and SpareRxFrames (what the next AddRings may have)
// leaves them out at once, not only after the transmit side has next
// called Complete.
func TestSpareRxFramesLeavesOutFramesLostWithClosedRings(t *testing.T) {
	// 32 receive frames; fill rings of 16 (the first socket's) and 8.
	u, k := newFake(t, &Options{NumFrames: 64, FillRingSize: 16, CompletionRingSize: 64})
	r2, k2 := addFake(u, 8, 64)
	if n := u.Refill(); n != 16 {
		t.Fatalf("refill: %d, want 16", n)
	}
	rx := k.receive(5)
	u.Received(rx)
	if n, err := r2.Send(rx); n != 5 || err != nil {
		t.Fatalf("forward through the sharing socket: %d %v", n, err)
	}
	// One of the five completes before the rings close; four never do.
	k2.complete(rx[:1])
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	// 32 receive frames, less the first socket's fill ring of 16 and the
	// 4 lost.
	if got := u.SpareRxFrames(); got != 12 {
		t.Errorf("SpareRxFrames before the transmit side's Complete: %d, want 12", got)
	}
	u.Complete()
	if got := u.SpareRxFrames(); got != 12 {
		t.Errorf("SpareRxFrames after the transmit side's Complete: %d, want 12", got)
	}
	if c := checkTotal(t, u); c.Lost != 4 {
		t.Errorf("lost %d frames, want 4: %+v", c.Lost, c)
	}
}

// TestNoFill: the fill ring of a UMEM for a socket that never receives
// has one entry, stays empty and takes none of the receive frames, which
// are all left for the fill ring of a socket that shares the UMEM.
func TestNoFill(t *testing.T) {
	u, k := newFake(t, &Options{NumFrames: 64, TxFrames: 32, FillRingSize: 16, NoFill: true})
	if u.opts.FillRingSize != 1 {
		t.Fatalf("FillRingSize %d with NoFill, want 1", u.opts.FillRingSize)
	}
	if n := u.Refill(); n != 0 {
		t.Fatalf("Refill with NoFill put %d frames in the fill ring", n)
	}
	if got := k.receive(1); len(got) != 0 {
		t.Fatalf("the kernel found %v in the fill ring", got)
	}
	if got := u.SpareRxFrames(); got != 32 {
		t.Fatalf("SpareRxFrames: %d, want all 32 receive frames", got)
	}
	r2, _ := addFake(u, 32, 32)
	if n := r2.Refill(); n != 32 {
		t.Fatalf("the sharing socket's Refill: %d, want 32", n)
	}
	if c := checkTotal(t, u); c.Fill != 32 || c.Free != 32 {
		t.Fatalf("frames %+v, want the 32 receive frames in the sharing fill ring", c)
	}
}
