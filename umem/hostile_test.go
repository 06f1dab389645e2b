package umem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/ring"
	"golang.org/x/sys/unix"
)

// TestZeroUMEM calls every method of a UMEM that New did not make, and of
// zero Rings: nothing panics, and frames are neither made up nor lost.
func TestZeroUMEM(t *testing.T) {
	var u UMEM
	descs := []ring.Desc{{Addr: 0, Len: 60}, {Addr: 4096, Len: 1}}
	testenv.NoPanic(t, "Frame", func() {
		if b := u.Frame(descs[0]); b != nil {
			t.Errorf("Frame: %d bytes", len(b))
		}
	})
	testenv.NoPanic(t, "Release", func() {
		if err := u.Release(0); !errors.Is(err, ErrInvalidDesc) {
			t.Errorf("Release: %v", err)
		}
	})
	testenv.NoPanic(t, "Send", func() {
		if n, err := u.Send(descs); n != 0 || !errors.Is(err, ErrInvalidDesc) {
			t.Errorf("Send: %d, %v", n, err)
		}
	})
	testenv.NoPanic(t, "Alloc", func() {
		if n := u.Alloc(descs); n != 0 {
			t.Errorf("Alloc: %d", n)
		}
		if n := u.AllocFree(descs); n != 0 {
			t.Errorf("AllocFree: %d", n)
		}
	})
	testenv.NoPanic(t, "Refill", func() { u.Refill() })
	testenv.NoPanic(t, "Complete", func() { u.Complete() })
	testenv.NoPanic(t, "accessors", func() {
		_, _, _, _ = u.Options(), u.HugePages(), u.HugePagesErr(), u.FrameSize()
		if u.Area() != nil || u.Rings() != nil || u.FillRing() != nil || u.CompletionRing() != nil {
			t.Error("a zero UMEM has memory")
		}
	})
	testenv.NoPanic(t, "Register", func() {
		if err := u.Register(-1); err == nil {
			t.Error("Register of a zero UMEM succeeded")
		}
	})
	testenv.NoPanic(t, "AddRings", func() {
		if _, err := u.AddRings(-1, 64, 64); err == nil {
			t.Error("AddRings on a zero UMEM succeeded")
		}
	})
	testenv.NoPanic(t, "UnmapRings", func() {
		if err := u.UnmapRings(); err != nil {
			t.Errorf("UnmapRings: %v", err)
		}
	})
	testenv.NoPanic(t, "Close", func() {
		if err := u.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if c := u.Counts(); c != (Counts{}) {
		t.Errorf("counts of a zero UMEM: %+v", c)
	}

	var r Rings
	testenv.NoPanic(t, "zero Rings", func() {
		_ = r.Held()
		_ = r.Completed()
		_, _ = r.FillRing(), r.CompletionRing()
		if n := r.Refill(); n != 0 {
			t.Errorf("Refill: %d", n)
		}
		if n := r.RefillUpTo(10); n != 0 {
			t.Errorf("RefillUpTo: %d", n)
		}
		if n := r.Alloc(descs); n != 0 {
			t.Errorf("Alloc: %d", n)
		}
		if n := r.Complete(); n != 0 {
			t.Errorf("Complete: %d", n)
		}
		if n, err := r.Send(descs); n != 0 || !errors.Is(err, ErrInvalidDesc) {
			t.Errorf("Send: %d, %v", n, err)
		}
		if n := r.Received(descs); n != 0 {
			t.Errorf("Received: %d bytes", n)
		}
		if n := r.Unfill(); n != 0 {
			t.Errorf("Unfill: %d", n)
		}
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// TestSendNamesTheFault checks that each way a transmit descriptor can be
// wrong gets an error saying which.
func TestSendNamesTheFault(t *testing.T) {
	u, _ := newFake(t, &Options{NumFrames: 64, FillRingSize: 32, Headroom: 64})
	held := make([]ring.Desc, 4)
	if n := u.Alloc(held); n != 4 {
		t.Fatal("alloc")
	}
	tests := []struct {
		d    ring.Desc
		want string
	}{
		{ring.Desc{Addr: 64 * 2048, Len: 60}, "outside the 131072-byte UMEM"},
		{ring.Desc{Addr: math.MaxUint64, Len: 60}, "outside the 131072-byte UMEM"},
		{ring.Desc{Addr: held[0].Addr}, "len 0: an empty packet"},
		{ring.Desc{Addr: held[0].Addr, Len: math.MaxUint32}, "runs past the end of its 2048-byte frame"},
		{ring.Desc{Addr: held[0].Addr, Len: 2048 - 64 + 1}, "runs past the end of its 2048-byte frame"},
		{ring.Desc{Addr: 0, Len: 60}, "frame is in the fill ring"},
		{ring.Desc{Addr: 60 * 2048, Len: 60}, "frame is free"},
	}
	u.Refill()
	for _, tt := range tests {
		n, err := u.Send([]ring.Desc{tt.d})
		if n != 0 || !errors.Is(err, ErrInvalidDesc) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Send(%+v) = %d, %v; want an error saying %q", tt.d, n, err, tt.want)
		}
		checkTotal(t, u)
	}
}

// FuzzHostileDescs mixes the frame cycle with descriptors made up by the
// fuzzer, handed to Release, Send and Frame, and with made-up addresses in
// the completion ring: nothing panics, Frame stays inside one frame, and
// the counts always add up.
func FuzzHostileDescs(f *testing.F) {
	le := func(op byte, addr uint64, n uint32) []byte {
		b := []byte{op}
		b = binary.LittleEndian.AppendUint64(b, addr)
		return binary.LittleEndian.AppendUint32(b, n)
	}
	f.Add(slices.Concat(le(0, 0, 0), le(1, 0, 8), le(3, 0, 4), le(4, 32*2048+64, 60), le(5, 0, 0)))
	f.Add(slices.Concat(le(3, 0, 2), le(4, 32*2048+64, 0), le(4, math.MaxUint64, 60), le(2, 1<<63, 1)))
	f.Add(slices.Concat(le(1, 0, 4), le(2, 2047, 2), le(6, 33*2048, 0), le(5, 0, 0), le(7, 64*2048-1, 1)))
	f.Add(slices.Concat(le(0, 0, 0), le(1, 0, 3), le(8, 0, 3), le(4, 64, math.MaxUint32)))
	f.Fuzz(func(t *testing.T, in []byte) {
		const num, fs = 64, 2048
		u, k := newFake(t, &Options{NumFrames: num, FillRingSize: 32, CompletionRingSize: 64, Headroom: 64})
		var inRX, held []ring.Desc
		for len(in) >= 13 {
			op, addr, n := in[0]%9, binary.LittleEndian.Uint64(in[1:]), binary.LittleEndian.Uint32(in[9:])
			in = in[13:]
			switch op {
			case 0:
				u.Refill()
			case 1:
				inRX = append(inRX, k.receive(int(n%8))...)
			case 2:
				b := u.Frame(ring.Desc{Addr: addr, Len: n})
				if b != nil && (addr >= num*fs || addr%fs+uint64(cap(b)) != fs || uint64(len(b)) != uint64(n)) {
					t.Fatalf("Frame(%#x, %d): len %d cap %d", addr, n, len(b), cap(b))
				}
			case 3:
				d := make([]ring.Desc, n%8)
				held = append(held, d[:u.Alloc(d)]...)
			case 4:
				if _, err := u.Send([]ring.Desc{{Addr: addr, Len: n}}); err == nil {
					k.complete([]ring.Desc{{Addr: addr}})
				} else if !errors.Is(err, ErrInvalidDesc) {
					t.Fatal(err)
				}
			case 5:
				u.Complete()
			case 6:
				if err := u.Release(addr); err != nil && !errors.Is(err, ErrInvalidDesc) {
					t.Fatal(err)
				}
			case 7:
				// A made-up completion.
				if k.comp.Produce([]uint64{addr}) == 1 {
					u.Complete()
				}
			case 8:
				m := min(len(inRX), int(n%8))
				u.Received(inRX[:m])
				held = append(held, inRX[:m]...)
				inRX = inRX[m:]
			}
			if i := int(n) % (len(held) + 1); i < len(held) && op%2 == 0 {
				// Use a frame the test holds, rightly or not.
				d := held[i]
				if n%3 == 0 {
					u.Release(d.Addr)
				} else if _, err := u.Send([]ring.Desc{{Addr: d.Addr, Len: 60}}); err == nil {
					k.complete([]ring.Desc{{Addr: d.Addr}})
				}
			}
			c := u.Counts()
			if c.Total() != num || c.Free < 0 || c.Fill < 0 || c.Tx < 0 || c.RxUser < 0 || c.TxUser < 0 || c.Recycling < 0 {
				t.Fatalf("counts %+v add up to %d", c, c.Total())
			}
		}
	})
}

// TestRegisterHostileFDs registers UMEMs with descriptors that cannot take
// them: each is refused with the cause, and the UMEM stays usable.
func TestRegisterHostileFDs(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	u, err := New(&Options{NumFrames: 64, FillRingSize: 32, CompletionRingSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	xsk, err := sys.XSKSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(xsk)
	for _, tt := range []struct {
		name string
		fd   int
		is   error
	}{
		{"-1", -1, unix.EBADF},
		{"min int", math.MinInt, unix.EBADF},
		{"max int", math.MaxInt, unix.EBADF},
		{"max int32", math.MaxInt32, unix.EBADF},
		{"a file", int(file.Fd()), unix.ENOTSOCK},
		{"an AF_XDP socket plus 1<<32", xsk + 1<<32, unix.EBADF},
	} {
		var err error
		testenv.NoPanic(t, tt.name, func() { err = u.Register(tt.fd) })
		if !errors.Is(err, tt.is) || !strings.HasPrefix(fmt.Sprint(err), "register umem: ") {
			t.Errorf("Register(%s): %v, want an error matching %v", tt.name, err, tt.is)
		}
		testenv.NoPanic(t, tt.name, func() { _, err = u.AddRings(tt.fd, 32, 32) })
		if err == nil {
			t.Errorf("AddRings(%s) succeeded", tt.name)
		}
	}
	fd, err := sys.XSKSocket()
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Register(fd); err != nil {
		t.Fatal(err)
	}
	if err := u.Register(fd); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Errorf("second Register: %v", err)
	}
	// Another UMEM on the same socket.
	u2, err := New(&Options{NumFrames: 64, FillRingSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	if err := u2.Register(fd); err == nil {
		t.Error("a second UMEM registered on one socket")
	}
	// AddRings on the socket the UMEM was registered with: it has rings.
	if _, err := u.AddRings(fd, 16, 16); err == nil {
		t.Error("AddRings on the UMEM's own socket succeeded")
	}
	if c := checkTotal(t, u); c.Free != 64 {
		t.Errorf("counts %+v", c)
	}
	if err := errors.Join(u2.Close(), u.UnmapRings(), sys.Close(fd), u.Close(), sys.Close(xsk), file.Close()); err != nil {
		t.Fatal(err)
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
}
