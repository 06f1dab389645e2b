package cni_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/afxdp/afxdp/internal/cni"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
)

// forwardHost makes a namespace for the plugins to run in (the "host" side
// of the attachments) with ip_forward=0, so that the test never touches the
// ip_forward of the namespace it runs in.
func forwardHost(t *testing.T) *netenv.Netns {
	t.Helper()
	host := testenv.NewNetns(t)
	setForwardIn(t, host, "0")
	return host
}

func setForwardIn(t *testing.T, ns *netenv.Netns, v string) {
	t.Helper()
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0)
	}); err != nil {
		t.Fatal(err)
	}
}

func forwardIn(t *testing.T, ns *netenv.Netns) string {
	t.Helper()
	var b []byte
	if err := ns.Do(func() (err error) {
		b, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// attachIn runs Attach from inside host, so that the plugin runs there, and
// closes the attachment there at cleanup if the test has not.
func attachIn(t *testing.T, host *netenv.Netns, cfg cni.Config) *cni.Attachment {
	t.Helper()
	cfg.NetnsPath = testenv.NewNamedNetns(t, netenv.RandomName("afxc")).Path()
	var a *cni.Attachment
	if err := host.Do(func() (err error) {
		a, err = cni.Attach(context.Background(), cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Do(a.Close) })
	return a
}

func closeIn(t *testing.T, host *netenv.Netns, a *cni.Attachment) {
	t.Helper()
	if err := host.Do(a.Close); err != nil {
		t.Fatal(err)
	}
}

// Overlapping attachments share the namespace's ip_forward: closing the
// first must leave forwarding on for the second, and closing the second
// must turn it off again, as it was before either.
func TestAttachForwardRefcount(t *testing.T) {
	requireCNI(t)
	outer := readForward(t)
	host := forwardHost(t)

	a := attachIn(t, host, cni.Config{Plugin: "ptp"})
	if got := forwardIn(t, host); got != "1" {
		t.Fatalf("ip_forward %s after ptp ADD, want 1: the test proves nothing", got)
	}
	b := attachIn(t, host, cni.Config{Plugin: "bridge"})
	closeIn(t, host, a)
	if got := forwardIn(t, host); got != "1" {
		t.Errorf("ip_forward %s after closing the first attachment, want 1: the second still routes", got)
	}
	closeIn(t, host, b)
	if got := forwardIn(t, host); got != "0" {
		t.Errorf("ip_forward %s after closing both attachments, want 0 as before", got)
	}

	// A new first attachment saves the value afresh.
	setForwardIn(t, host, "1")
	c := attachIn(t, host, cni.Config{Plugin: "ptp"})
	closeIn(t, host, c)
	if got := forwardIn(t, host); got != "1" {
		t.Errorf("ip_forward %s after an attachment that found it 1, want 1", got)
	}
	if got := readForward(t); got != outer {
		t.Errorf("ip_forward of the test's own namespace changed from %s to %s", outer, got)
	}
}

// The count is per namespace: an attachment open in one namespace does not
// keep ip_forward on in another, nor does its Close touch the other's.
func TestAttachForwardPerNamespace(t *testing.T) {
	requireCNI(t)
	outer := readForward(t)
	h1, h2 := forwardHost(t), forwardHost(t)
	// other is where the second attachment is closed from: a namespace of
	// the test's own, so that a Close restoring ip_forward in the
	// caller's namespace would not change the one the test runs in.
	other := testenv.NewNetns(t)
	setForwardIn(t, other, "1")

	a1 := attachIn(t, h1, cni.Config{Plugin: "ptp"})
	a2 := attachIn(t, h2, cni.Config{Plugin: "ptp"})
	closeIn(t, h1, a1)
	if got := forwardIn(t, h1); got != "0" {
		t.Errorf("ip_forward %s in the first namespace after its only attachment closed, want 0", got)
	}
	if got := forwardIn(t, h2); got != "1" {
		t.Errorf("ip_forward %s in the second namespace, whose attachment is open, want 1", got)
	}
	// Close from outside h2: ip_forward is restored in h2, where Attach
	// found it, not in the caller's namespace. (DEL, which the ptp
	// plugin runs inside the container's namespace, does not mind.)
	closeIn(t, other, a2)
	if got := forwardIn(t, h2); got != "0" {
		t.Errorf("ip_forward %s in the second namespace after Close from another, want 0", got)
	}
	if got := forwardIn(t, other); got != "1" {
		t.Errorf("ip_forward %s in the namespace Close was called from, want 1 as it was", got)
	}
	if got := readForward(t); got != outer {
		t.Errorf("ip_forward of the test's own namespace changed from %s to %s", outer, got)
	}
}

// Two attachments on one bridge, with one subnet as the bridge's one
// gateway address requires, get different addresses and reach each other
// across the bridge; the IPAM directory that records them stays until the
// last of them closes.
func TestAttachSharedSubnetAddresses(t *testing.T) {
	requireCNI(t)
	host := forwardHost(t)
	br := netenv.RandomName("afxb")
	subnet := netenv.RandomSubnet()
	nsA := testenv.NewNamedNetns(t, netenv.RandomName("afxc"))
	nsB := testenv.NewNamedNetns(t, netenv.RandomName("afxc"))
	attach := func(ns *netenv.Netns) *cni.Attachment {
		var a *cni.Attachment
		if err := host.Do(func() (err error) {
			a, err = cni.Attach(context.Background(), cni.Config{Plugin: "bridge", Bridge: br, Subnet: subnet, NetnsPath: ns.Path()})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { host.Do(a.Close) })
		return a
	}
	a, b := attach(nsA), attach(nsB)
	if a.Addr == b.Addr {
		t.Fatalf("both attachments on bridge %s got %s", br, a.Addr)
	}
	checkInside(t, nsA, a)
	checkInside(t, nsB, b)
	checkIPAM(t, a)
	checkIPAM(t, b)
	exchange(t, nsA.Do, nsB.Do, b.Addr.Addr())

	closeIn(t, host, a)
	if _, err := os.Stat(b.IPAMDir); err != nil {
		t.Errorf("IPAM dir %s of the open attachment removed by the other's Close: %v", b.IPAMDir, err)
	}
	closeIn(t, host, b)
	for _, x := range []*cni.Attachment{a, b} {
		if _, err := os.Stat(x.IPAMDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("IPAM dir %s left after both Closes (%v)", x.IPAMDir, err)
		}
	}
}
