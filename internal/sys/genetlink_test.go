package sys_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestQueryXDPFeatures asks the kernel about a veth end, which has native
// XDP but no AF_XDP zero-copy, and about an interface that does not exist.
func TestQueryXDPFeatures(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	var feats uint64
	err := v.Host.Do(func() (err error) {
		feats, err = sys.QueryXDPFeatures(v.Host.Index)
		return err
	})
	if errors.Is(err, sys.ErrNoNetdevFamily) {
		t.Skipf("kernel too old: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	const basic, redirect = 1 << 0, 1 << 1 // NETDEV_XDP_ACT_BASIC, _REDIRECT
	if feats&basic == 0 || feats&redirect == 0 {
		t.Errorf("veth features %#x: want BASIC and REDIRECT (it runs XDP natively)", feats)
	}
	if feats&sys.XDPActXSKZeroCopy != 0 {
		t.Errorf("veth features %#x: XSK_ZEROCOPY set, but veth binds AF_XDP in copy mode only", feats)
	}

	// 1<<32 plus the veth's index must not be taken for the veth (the
	// attribute is 32 bits), nor 0 give the kernel's ERANGE.
	for _, ifindex := range []int{1 << 30, 0, -1, 1<<32 + v.Host.Index} {
		err = v.Host.Do(func() error {
			feats, err := sys.QueryXDPFeatures(ifindex)
			if err == nil {
				t.Errorf("ifindex %d: features %#x, want an error", ifindex, feats)
			}
			return err
		})
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("ifindex %d: %v, want ENODEV", ifindex, err)
		}
	}
}
