package agent

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// TestDeviceGone: a pod's namespace is deleted while the agent serves the
// interface in it; the kernel detaches the program with the interface. The
// agent must not then hand the map of a program attached nowhere to the
// next pod, which would register into it and receive nothing: it answers
// /fd_nak and /xsk_register_nak, also once a new namespace stands at the
// same path with an interface of the same name (what an orchestrator that
// reuses a pod's name does).
func TestDeviceGone(t *testing.T) {
	testenv.RequirePrivileged(t)
	name := netenv.RandomName("afxpod")
	pod1 := testenv.NewNamedNetns(t, name)
	v1 := testenv.NewVeth(t, &netenv.VethOptions{PeerNS: pod1})
	dev := v1.Peer.Name
	srv, err := NewServer(&ServerOptions{
		Devices: []Device{{
			Name:   dev,
			Netns:  pod1.Path(),
			Filter: bpf.Filter{EtherType: 0x0800, IPProto: unix.IPPROTO_UDP, DstPort: testPort},
		}},
		SocketDir: socketDir(t),
		Logger:    testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	path := srv.SocketPath(dev)

	// While the interface is there, the map comes.
	c := connect(t, path, "pod-1")
	m, err := c.XSKMap(dev)
	if err != nil {
		t.Fatalf("XSKMap of a served interface: %v", err)
	}
	m.Close()
	c.Close()

	// The pod goes: its link and its namespace are deleted.
	if err := v1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pod1.Close(); err != nil {
		t.Fatal(err)
	}
	c = connect(t, path, "pod-1-late")
	if m, err := c.XSKMap(dev); !errors.Is(err, ErrRejected) {
		if m != nil {
			m.Close()
		}
		t.Errorf("XSKMap with the namespace gone = %v, want ErrRejected", err)
	}
	c.Close()

	// The next pod: a new namespace at the same path, an interface of
	// the same name in it, and no program on it.
	pod2 := testenv.NewNamedNetns(t, name)
	v2 := testenv.NewVeth(t, &netenv.VethOptions{PeerNS: pod2})
	h := pod2.Handle()
	l, err := h.LinkByName(v2.Peer.Name)
	if err == nil {
		err = h.LinkSetDown(l)
	}
	if err == nil {
		err = h.LinkSetName(l, dev)
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		t.Fatalf("rename the new pod's interface to %s: %v", dev, err)
	}
	var sock *xsk.Socket
	err = pod2.Do(func() error {
		o := *smallXSK
		o.NoXDP = true
		var err error
		sock, err = xsk.Open(dev, 0, &o)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()

	c = connect(t, path, "pod-2")
	if m, err := c.XSKMap(dev); !errors.Is(err, ErrRejected) {
		if m != nil {
			m.Close()
		}
		t.Errorf("XSKMap for the next pod = %v, want ErrRejected: the map is a detached program's", err)
	}
	if err := c.Register(dev, 0, sock.FD()); !errors.Is(err, ErrRejected) {
		t.Errorf("Register for the next pod = %v, want ErrRejected: the map is a detached program's", err)
	}
	// The session goes on.
	if v, err := c.Version(); err != nil || v != ProtocolVersion {
		t.Errorf("Version after the refusals = %q, %v", v, err)
	}
}
