package umem

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/ring"
	"golang.org/x/sys/unix"
)

// hugeLike makes a UMEM of numFrames frames of 2048 bytes on an area of
// Go memory as long as a mapping rounded up to 2 MiB huge pages, the way
// New lays out a UMEM on huge pages. It must not be closed: Close would
// try to unmap Go memory.
func hugeLike(t *testing.T, numFrames int) *UMEM {
	t.Helper()
	o := Options{NumFrames: numFrames, FillRingSize: numFrames / 2}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return newUMEM(o, make([]byte, roundUp(numFrames*o.FrameSize, 2<<20)))
}

// TestFrameStaysInsideTheFrames gives Frame addresses in the part of a
// huge-page mapping past the registered frames: the kernel knows nothing
// there, so Frame returns nil, and Area ends where the frames do.
func TestFrameStaysInsideTheFrames(t *testing.T) {
	const numFrames = 64
	const size = numFrames * 2048
	u := hugeLike(t, numFrames)
	if len(u.area) <= size {
		t.Fatalf("area of %d bytes, want more than the %d registered", len(u.area), size)
	}
	if a := u.Area(); len(a) != size || cap(a) != size {
		t.Fatalf("Area is %d bytes (cap %d), want the %d registered", len(a), cap(a), size)
	}
	tests := []struct {
		d    ring.Desc
		want int // length of the slice; -1 for nil
	}{
		{ring.Desc{Addr: 0, Len: 60}, 60},
		{ring.Desc{Addr: size - 2048, Len: 2048}, 2048},
		{ring.Desc{Addr: size - 1, Len: 1}, 1},
		{ring.Desc{Addr: size, Len: 0}, -1},
		{ring.Desc{Addr: size, Len: 60}, -1},
		{ring.Desc{Addr: size + 2048*5 + 100, Len: 60}, -1},
		{ring.Desc{Addr: uint64(len(u.area)) - 2048, Len: 60}, -1},
		{ring.Desc{Addr: 1<<64 - 1, Len: 1}, -1},
	}
	for _, tt := range tests {
		f := u.Frame(tt.d)
		switch {
		case tt.want < 0 && f != nil:
			t.Errorf("Frame(%+v) = %d bytes past the %d registered, want nil", tt.d, len(f), size)
		case tt.want >= 0 && len(f) != tt.want:
			t.Errorf("Frame(%+v) = %d bytes, want %d", tt.d, len(f), tt.want)
		case tt.want >= 0 && tt.d.Addr+uint64(cap(f)) > size:
			t.Errorf("Frame(%+v) reaches past the frames: cap %d", tt.d, cap(f))
		}
	}
	if err := u.Release(size); !errors.Is(err, ErrInvalidDesc) || !strings.Contains(err.Error(), "outside the 131072-byte UMEM") {
		t.Fatalf("Release past the frames: %v", err)
	}
}

// TestFrameAfterUnmap asks for a frame of a UMEM whose area is gone: nil,
// not a panic.
func TestFrameAfterUnmap(t *testing.T) {
	u := hugeLike(t, 64)
	u.area = nil
	if f := u.Frame(ring.Desc{Addr: 0, Len: 60}); f != nil {
		t.Fatalf("Frame after unmap: %d bytes", len(f))
	}
	if u.Area() != nil {
		t.Fatal("Area after unmap is not nil")
	}
}

// TestCloseReportsOnce makes a Close fail (the area is Go memory, which
// munmap refuses with EINVAL without a system call): the first Close
// reports it, to one caller only, however many call at once, and later
// ones return nil.
func TestCloseReportsOnce(t *testing.T) {
	u := newUMEM(Options{NumFrames: 4, FrameSize: 2048, FillRingSize: 2, TxFrames: 2}, make([]byte, 4*2048))
	err := testenv.FailsOnce(t, "Close", 8, u.Close)
	if !errors.Is(err, unix.EINVAL) || !strings.HasPrefix(err.Error(), "unmap umem: ") {
		t.Errorf("Close: %v, want unmap umem: ... EINVAL", err)
	}
}

// TestRingsCloseReportsOnce is TestCloseReportsOnce for rings from
// AddRings, whose fill ring memory is Go memory here.
func TestRingsCloseReportsOnce(t *testing.T) {
	u, _ := newFake(t, &Options{NumFrames: 64, FillRingSize: 16, CompletionRingSize: 16})
	r, _ := addFake(u, 16, 16)
	r.fillMem = make([]byte, 4096)
	if err := testenv.FailsOnce(t, "Close", 8, r.Close); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Close: %v, want EINVAL", err)
	}
}

// TestClosedMatchesNetErrClosed: a closed UMEM refuses Register and
// AddRings with an error that errors.Is matches to net.ErrClosed.
func TestClosedMatchesNetErrClosed(t *testing.T) {
	u, err := New(&Options{NumFrames: 64, FillRingSize: 32})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	// No system call is made: any fd will do.
	if err := u.Register(-1); !errors.Is(err, net.ErrClosed) || !strings.HasPrefix(err.Error(), "register umem: ") {
		t.Fatalf("Register after Close: %v, want net.ErrClosed", err)
	}
	if _, err := u.AddRings(-1, 32, 32); !errors.Is(err, net.ErrClosed) || !strings.HasPrefix(err.Error(), "share umem: ") {
		t.Fatalf("AddRings after Close: %v, want net.ErrClosed", err)
	}
}
