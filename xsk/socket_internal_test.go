package xsk

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/umem"
	"golang.org/x/sys/unix"
)

// TestCloseReportsFailureOnce makes a socket's teardown fail (its TX ring
// memory is Go memory, which munmap refuses with EINVAL without a system
// call): the first Close reports it, to one caller only however many call
// at once, later ones return nil, and the socket is closed either way.
func TestCloseReportsFailureOnce(t *testing.T) {
	s := &Socket{fd: -1, evfd: -1, ifname: "afxtest0", queue: 3, txMem: make([]byte, 4096), umem: new(umem.UMEM)}
	err := testenv.FailsOnce(t, "Close", 8, s.Close)
	var oe *OpError
	if !errors.As(err, &oe) || oe.Op != "close" || oe.Interface != "afxtest0" || oe.Queue != 3 || !errors.Is(err, unix.EINVAL) {
		t.Errorf("Close: %v, want an OpError for close wrapping EINVAL", err)
	}
	if _, err := s.Receive(make([]Desc, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Receive after a failed Close: %v, want net.ErrClosed", err)
	}
}

// TestLookupError sorts the failures of net.InterfaceByName: a name no
// interface has is an unknown interface (ENODEV); anything else, here a
// netlink failure, keeps its errno and is not called unknown.
func TestLookupError(t *testing.T) {
	_, err := net.InterfaceByName("afxnosuchif0")
	if err == nil {
		t.Fatal("found an interface named afxnosuchif0")
	}
	if got := lookupError(err); !errors.Is(got, unix.ENODEV) || got.Error() != "unknown interface: no such device" {
		t.Errorf("lookupError(%q) = %q, want unknown interface: ENODEV", err, got)
	}
	// What net.InterfaceByName returns when it cannot read the
	// interface table (TestOpenReportsInterfaceTableFailure gets it for
	// real).
	netlinkErr := &net.OpError{Op: "route", Net: "ip+net", Err: os.NewSyscallError("netlinkrib", unix.EMFILE)}
	got := lookupError(netlinkErr)
	if errors.Is(got, unix.ENODEV) || !errors.Is(got, unix.EMFILE) || got.Error() != "look up interface: route ip+net: netlinkrib: too many open files" {
		t.Errorf("lookupError(%q) = %q, want look up interface wrapping EMFILE", netlinkErr, got)
	}
}

// TestCopyOnly: a TxOnly socket gives every frame to transmit only where
// it will bind in copy mode; in zero-copy mode the queue's receive
// buffers, for the kernel's stack too, come from its fill ring.
func TestCopyOnly(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	for _, tt := range []struct {
		bind BindMode
		want bool
	}{
		{BindCopy, true},
		{BindAuto, true}, // veth advertises no AF_XDP zero-copy
		{BindZeroCopy, false},
	} {
		if got := copyOnly(&Options{Bind: tt.bind}, v.Host.Index); got != tt.want {
			t.Errorf("copyOnly(%s) on veth = %t, want %t", tt.bind, got, tt.want)
		}
	}
}

// TestProbesCountAsWakeups spins on Receive on an idle socket, and waits
// on it, long enough for both to ask the kernel with recvfrom(2) whether
// the socket is still bound: Stats.RxWakeups counts those system calls.
func TestProbesCountAsWakeups(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	s, err := Open(v.Host.Name, 0, &Options{NoXDP: true, Bind: BindCopy, NoNeedWakeup: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	descs := make([]Desc, 16)
	const probes = 3
	for i := range probes * unboundProbe {
		if n, err := s.Receive(descs); n != 0 || err != nil {
			t.Fatalf("Receive %d on an idle socket: %d, %v", i, n, err)
		}
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RxWakeups != probes {
		t.Fatalf("RxWakeups %d after %d empty Receives, which ask the kernel %d times", st.RxWakeups, probes*unboundProbe, probes)
	}
	if ev, err := s.Wait(Readable, time.Millisecond); ev != 0 || err != nil {
		t.Fatalf("Wait on an idle socket: %v, %v", ev, err)
	}
	if st, _ = s.Stats(); st.RxWakeups != probes+1 {
		t.Fatalf("RxWakeups %d after a Wait that timed out and asked the kernel, want %d", st.RxWakeups, probes+1)
	}
}
