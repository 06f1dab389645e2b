package testenv

import (
	"errors"
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
