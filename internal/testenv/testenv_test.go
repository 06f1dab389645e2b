package testenv

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/vishvananda/netlink"
)

func TestVethLifecycle(t *testing.T) {
	RequirePrivileged(t)
	before := Snapshot(t)
	v, err := netenv.NewVeth(&netenv.VethOptions{Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName(v.Host.Name)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().NumRxQueues != 2 || l.Attrs().OperState == netlink.OperDown {
		t.Errorf("host end: %d rx queues, state %v", l.Attrs().NumRxQueues, l.Attrs().OperState)
	}
	p, err := v.Peer.NS.Handle().LinkByName(v.Peer.Name)
	if err != nil {
		t.Fatalf("peer not in its namespace: %v", err)
	}
	if p.Attrs().Index != v.Peer.Index || p.Attrs().HardwareAddr.String() != v.Peer.MAC.String() {
		t.Errorf("peer attrs %+v", p.Attrs())
	}
	// The peer's address is configured inside its namespace.
	err = v.Peer.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: v.Peer.IP().AsSlice(), Port: 9})
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatalf("bind to peer address inside its namespace: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := netlink.LinkByName(v.Host.Name); err == nil {
		t.Error("host end still exists after Close")
	}
	if after := Snapshot(t); after.FDs != before.FDs {
		t.Errorf("fds: %d before, %d after", before.FDs, after.FDs)
	}
}

func TestIPVlanReportsKernelSupport(t *testing.T) {
	v := NewVeth(t, nil)
	l, err := netenv.NewIPVlan(v.Host, nil)
	if err == nil {
		// A kernel with CONFIG_IPVLAN: the link must be real.
		defer l.Close()
		if _, err := netlink.LinkByIndex(l.Index); err != nil {
			t.Fatalf("ipvlan created but not found: %v", err)
		}
		return
	}
	if !errors.Is(err, netenv.ErrNotSupported) {
		t.Fatalf("want ErrNotSupported, got %v", err)
	}
	t.Log(err)
}

func TestMacvlan(t *testing.T) {
	v := NewVeth(t, nil)
	m := NewMacvlan(t, v.Host, nil)
	if m.Index == 0 || len(m.MAC) != 6 {
		t.Fatalf("macvlan %+v", m.Endpoint)
	}
	if _, err := netlink.LinkByIndex(m.Index); err != nil {
		t.Fatal(err)
	}
}

// TestDumpWhileLinksChange lists the links of a namespace while another
// goroutine adds and removes veth pairs there: a plain dump is at times
// interrupted (and netlink then returns a partial list with an error),
// while Dump retries until it gets a consistent list.
func TestDumpWhileLinksChange(t *testing.T) {
	RequirePrivileged(t)
	ns := NewNetns(t)
	h := ns.Handle()
	// The churn needs a netlink socket of its own: a Handle's requests
	// take turns on one.
	ch, err := netlink.NewHandleAt(ns.NsHandle())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	// Enough links that a dump takes more than one message: the kernel
	// can only notice a change between two of them.
	for i := range 20 {
		la := netlink.NewLinkAttrs()
		la.Name = fmt.Sprintf("many%d", i)
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: fmt.Sprintf("many%dp", i)}); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				churned <- nil
				return
			default:
			}
			la := netlink.NewLinkAttrs()
			la.Name = "churn0"
			if err := ch.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "churn1"}); err != nil {
				churned <- err
				return
			}
			if err := ch.LinkDel(&netlink.Veth{LinkAttrs: la}); err != nil {
				churned <- err
				return
			}
		}
	}()
	interrupted := 0
	for range 500 {
		if _, err := h.LinkList(); errors.Is(err, netlink.ErrDumpInterrupted) {
			interrupted++
		}
		for _, l := range Dump(t, "links", h.LinkList) {
			if l.Attrs().Name == "" {
				t.Fatalf("a link without a name: %+v", l.Attrs())
			}
		}
	}
	close(stop)
	if err := <-churned; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of 500 plain dumps were interrupted", interrupted)
}
