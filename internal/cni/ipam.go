package cni

import (
	"fmt"
	"net/netip"
	"os"
	"sync"
)

// ipamDirs records the host-local data directories of this process's
// attachments, one per subnet, with how many open attachments use each.
// Attachments with the same subnet share one, so that host-local hands
// them different addresses: with a directory each, each would get the
// subnet's .2, and two containers on one bridge would have one address.
var ipamDirs = struct {
	sync.Mutex
	bySubnet map[netip.Prefix]*ipamHold // guarded by the mutex
}{bySubnet: make(map[netip.Prefix]*ipamHold)}

// ipamHold is the record of one directory; users is guarded by ipamDirs'
// mutex.
type ipamHold struct {
	subnet netip.Prefix
	dir    string
	users  int
}

// holdIPAM counts one more attachment on subnet's data directory, making
// the directory if it is the first.
func holdIPAM(subnet netip.Prefix) (*ipamHold, error) {
	ipamDirs.Lock()
	defer ipamDirs.Unlock()
	if h := ipamDirs.bySubnet[subnet]; h != nil {
		h.users++
		return h, nil
	}
	dir, err := os.MkdirTemp("", "afxdp-cni-ipam-")
	if err != nil {
		return nil, fmt.Errorf("make ipam dir: %w", err)
	}
	h := &ipamHold{subnet: subnet, dir: dir, users: 1}
	ipamDirs.bySubnet[subnet] = h
	return h, nil
}

// release gives back one hold; the last removes the directory, under the
// mutex, so that no Attach starting meanwhile uses a directory about to go.
func (h *ipamHold) release() error {
	ipamDirs.Lock()
	defer ipamDirs.Unlock()
	h.users--
	if h.users > 0 {
		return nil
	}
	delete(ipamDirs.bySubnet, h.subnet)
	if err := os.RemoveAll(h.dir); err != nil {
		return fmt.Errorf("remove ipam dir: %w", err)
	}
	return nil
}
