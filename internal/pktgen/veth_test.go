package pktgen_test

import (
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/testenv"
)

// TestCountersAndNeighboursFailAfterNamespaceClose uses an endpoint whose
// namespace is closed and whose index is that of a link in the caller's
// namespace: a closed netlink handle would act on that link instead.
func TestCountersAndNeighboursFailAfterNamespaceClose(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	ns, err := netenv.NewNetns("")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	stale := v.Host
	stale.NS = ns

	if c, err := pktgen.ReadCounters(stale); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadCounters in a closed namespace = %+v, %v; want net.ErrClosed", c, err)
	}

	// The peer is the stale endpoint: its neighbour entry for the host
	// would land on the host's own link.
	err = pktgen.AddNeighbors(&netenv.Veth{Host: v.Peer, Peer: stale})
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("AddNeighbors with an end in a closed namespace: %v; want net.ErrClosed", err)
	}
	ns4 := testenv.Dump(t, "neighbours", func() ([]netlink.Neigh, error) {
		return netlink.NeighList(v.Host.Index, netlink.FAMILY_V4)
	})
	for _, n := range ns4 {
		if n.IP.Equal(v.Peer.IP().AsSlice()) {
			t.Errorf("neighbour entry %s on %s in the caller's namespace", n.IP, v.Host.Name)
		}
	}
}
