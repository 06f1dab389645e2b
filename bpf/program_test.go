package bpf

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestNewProgramBadOptions needs no privilege: options are checked before
// anything is asked of the kernel.
func TestNewProgramBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts ProgramOptions
		want string // in the error
	}{
		{"port-without-proto", ProgramOptions{Filter: Filter{DstPort: 53}}, "Filter.DstPort 53"},
		{"port-with-icmp", ProgramOptions{Filter: Filter{IPProto: 1, DstPort: 53}}, "Filter.DstPort 53"},
		{"port-with-arp", ProgramOptions{Filter: Filter{EtherType: 0x0806, DstPort: 53}}, "Filter.DstPort 53"},
		{"proto-with-arp", ProgramOptions{Filter: Filter{EtherType: 0x0806, IPProto: 17}}, "Filter.IPProto 17"},
		{"ethertype-vlan", ProgramOptions{Filter: Filter{EtherType: 0x8100}}, "Filter.EtherType 0x8100"},
		{"ethertype-qinq", ProgramOptions{Filter: Filter{EtherType: 0x88A8}}, "Filter.EtherType 0x88a8"},
		{"ethertype-length", ProgramOptions{Filter: Filter{EtherType: 100}}, "Filter.EtherType 0x0064"},
		{"addr4-with-ipv6", ProgramOptions{Filter: Filter{EtherType: 0x86DD, DstAddr: netip.MustParseAddr("10.0.0.1")}}, "Filter.DstAddr 10.0.0.1: an IPv4 address needs EtherType 0x0800"},
		{"addr6-with-ipv4", ProgramOptions{Filter: Filter{EtherType: 0x0800, DstAddr: netip.MustParseAddr("fd00::1")}}, "Filter.DstAddr fd00::1: an IPv6 address needs EtherType 0x86dd"},
		{"addr-with-arp", ProgramOptions{Filter: Filter{EtherType: 0x0806, DstAddr: netip.MustParseAddr("10.0.0.1")}}, "Filter.DstAddr 10.0.0.1"},
		{"addr-4in6", ProgramOptions{Filter: Filter{DstAddr: netip.MustParseAddr("::ffff:10.0.0.1")}}, "write the IPv4 address 10.0.0.1"},
		{"addr-zone", ProgramOptions{Filter: Filter{DstAddr: netip.MustParseAddr("fe80::1%eth0")}}, "Filter.DstAddr fe80::1%eth0: a zone"},
		{"addr-unspecified4", ProgramOptions{Filter: Filter{IPProto: 17, DstAddr: netip.MustParseAddr("0.0.0.0")}}, "Filter.DstAddr 0.0.0.0: the unspecified address"},
		{"addr-unspecified6", ProgramOptions{Filter: Filter{DstAddr: netip.IPv6Unspecified()}}, "Filter.DstAddr ::: the unspecified address"},
		{"max-queues-negative", ProgramOptions{MaxQueues: -1}, "MaxQueues -1"},
		{"max-queues-huge", ProgramOptions{MaxQueues: 1 << 40}, "MaxQueues 1099511627776"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewProgram(&tt.opts)
			if err == nil {
				p.Close()
				t.Fatal("NewProgram succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "new xdp program: ") {
				t.Errorf("error %q: want it to start with %q and name %q", err, "new xdp program: ", tt.want)
			}
		})
	}
}

func TestFilterValid(t *testing.T) {
	for _, f := range []Filter{
		{},
		{EtherType: 0x0800},
		{EtherType: 0x88B5},
		{IPProto: 17},
		{IPProto: 132},
		{EtherType: 0x86DD, IPProto: 58},
		{IPProto: 6, DstPort: 22},
		{EtherType: 0x0800, IPProto: 17, DstPort: 4789},
		{DstAddr: netip.MustParseAddr("10.0.0.1")},
		{EtherType: 0x86DD, IPProto: 17, DstPort: 53, DstAddr: netip.MustParseAddr("fd00::1")},
		{IPProto: 17, DstAddr: netip.MustParseAddr("255.255.255.255")},
		{DstAddr: netip.MustParseAddr("ff02::1")},
	} {
		if err := f.validate(); err != nil {
			t.Errorf("%+v: %v", f, err)
		}
	}
}

func TestNewProgramDefaults(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, opts := range []*ProgramOptions{nil, {}, {MaxQueues: 1}} {
		p := newTestProgram(t, opts)
		want := DefaultMaxQueues
		if opts != nil && opts.MaxQueues != 0 {
			want = opts.MaxQueues
		}
		if got := p.MaxQueues(); got != want {
			t.Errorf("MaxQueues() = %d, want %d", got, want)
		}
		if got := p.XSKMap().MaxEntries(); got != uint32(want) {
			t.Errorf("XSKMap().MaxEntries() = %d, want %d", got, want)
		}
		if got := p.XSKMap().Type(); got != ebpf.XSKMap {
			t.Errorf("XSKMap().Type() = %v, want XSKMap", got)
		}
		if got := p.Prog().Type(); got != ebpf.XDP {
			t.Errorf("Prog().Type() = %v, want XDP", got)
		}
		info, err := p.Prog().Info()
		mustOK(t, err)
		if id, _ := info.ID(); uint32(id) != p.ID() || p.ID() == 0 {
			t.Errorf("ID() = %d, kernel says %d", p.ID(), id)
		}
	}
}

func TestRegisterBadInput(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	p := newTestProgram(t, &ProgramOptions{MaxQueues: 2})

	for _, q := range []int{-1, 2, 1 << 33} {
		err := p.Register(q, 0)
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Register(%d): %v, want an out-of-range error", q, err)
		}
		err = p.Unregister(q)
		if err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Unregister(%d): %v, want an out-of-range error", q, err)
		}
	}
	if err := p.Register(0, -1); err == nil {
		t.Error("Register(0, -1) succeeded")
	}

	// The kernel takes only sockets (and, of those, only AF_XDP ones); the
	// errno survives the wrapping.
	r, w, err := os.Pipe()
	mustOK(t, err)
	defer r.Close()
	defer w.Close()
	err = p.Register(1, int(r.Fd()))
	if err == nil || !strings.HasPrefix(err.Error(), "register queue 1 (socket fd ") || !errors.Is(err, unix.ENOTSOCK) {
		t.Errorf("Register(1, pipe): %v, want ENOTSOCK in an error naming queue 1", err)
	}
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	mustOK(t, err)
	defer unix.Close(udp)
	if err := p.Register(1, udp); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("Register(1, UDP socket): %v, want EOPNOTSUPP", err)
	}

	// A bound socket works, twice, and Unregister is idempotent.
	xsk := newBoundXSK(t, v.Host.Index, 0)
	mustOK(t, p.Register(1, xsk))
	mustOK(t, p.Register(1, xsk))
	mustOK(t, p.Unregister(1))
	mustOK(t, p.Unregister(1))
	mustOK(t, p.Unregister(0))
}

func TestClosed(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	p, err := NewProgram(nil)
	mustOK(t, err)
	mustOK(t, p.Close())
	mustOK(t, p.Close()) // second Close is nil

	checks := map[string]error{
		"Register":   p.Register(0, 0),
		"Unregister": p.Unregister(0),
	}
	_, checks["Attach"] = p.Attach(v.Host.Index, nil)
	for name, err := range checks {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
}

func TestUnknownIfindex(t *testing.T) {
	testenv.RequirePrivileged(t)
	const bogus = 1<<31 - 1
	if _, err := QueryXDP(bogus); !errors.Is(err, unix.ENODEV) {
		t.Errorf("QueryXDP(%d): %v, want ENODEV", bogus, err)
	}
	for _, idx := range []int{0, -3, 1 << 40} {
		if _, err := QueryXDP(idx); !errors.Is(err, unix.ENODEV) {
			t.Errorf("QueryXDP(%d): %v, want ENODEV", idx, err)
		}
	}

	p := newTestProgram(t, nil)
	for _, idx := range []int{bogus, 0, -1} {
		a, err := p.Attach(idx, nil)
		if err == nil {
			a.Close()
			t.Fatalf("Attach(%d) succeeded", idx)
		}
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("Attach(%d): %v, want ENODEV", idx, err)
		}
	}
	if _, err := p.Attach(1, &AttachOptions{Mode: 7}); err == nil || !strings.Contains(err.Error(), "Mode") {
		t.Errorf("Attach with Mode 7: %v, want an error naming the field", err)
	}
}

func TestAttachModeString(t *testing.T) {
	for m, want := range map[AttachMode]string{
		AttachAuto: "auto", AttachDriver: "driver", AttachGeneric: "generic", 9: "AttachMode(9)",
	} {
		if got := m.String(); got != want {
			t.Errorf("AttachMode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}

func TestBusyError(t *testing.T) {
	var err error = &BusyError{Ifindex: 7, ProgramID: 42, Mode: AttachGeneric}
	if !errors.Is(err, ErrBusy) {
		t.Error("BusyError is not ErrBusy")
	}
	for _, want := range []string{"ifindex 7", "42", "generic"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %q", err, want)
		}
	}
	err = &BusyError{Ifindex: 7, err: unix.EBUSY}
	if !errors.Is(err, ErrBusy) || !errors.Is(err, unix.EBUSY) {
		t.Errorf("%v: want both ErrBusy and EBUSY", err)
	}
}

// TestConcurrentRegisterClose runs Register, Unregister and Attach against
// Close; under -race it checks the locking, and every call must either work
// or report net.ErrClosed.
func TestConcurrentRegisterClose(t *testing.T) {
	v := testenv.NewVeth(t, &netenv.VethOptions{Queues: 4})
	p, err := NewProgram(&ProgramOptions{MaxQueues: 4})
	mustOK(t, err)
	xsks := make([]int, 4)
	for q := range xsks {
		xsks[q] = newBoundXSK(t, v.Host.Index, q)
	}

	var wg sync.WaitGroup
	for q := range xsks {
		wg.Go(func() {
			for range 200 {
				for _, err := range []error{p.Register(q, xsks[q]), p.Unregister(q)} {
					if err != nil && !errors.Is(err, net.ErrClosed) {
						t.Errorf("queue %d: %v", q, err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		a, err := p.Attach(v.Host.Index, nil)
		if err == nil {
			defer a.Close()
		} else if !errors.Is(err, net.ErrClosed) {
			t.Errorf("attach: %v", err)
		}
	})
	wg.Go(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	mustOK(t, p.Close())
	if info := mustQuery(t, v.Host.Index); info.Attached() {
		t.Errorf("after Close: %+v", info)
	}
}
