package cni

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// bridges records the bridges that this process's bridge attachments made,
// per namespace and name, with how many attachments on each are open.
// Attachments that name the same bridge share it: the bridge goes when the
// last of them closes, not with the one whose ADD happened to make it.
var bridges = struct {
	sync.Mutex
	byKey map[bridgeKey]*bridgeHold // guarded by the mutex
}{byKey: make(map[bridgeKey]*bridgeHold)}

type bridgeKey struct {
	ns   netnsID
	name string
}

// bridgeHold is the record of one bridge; users is guarded by bridges'
// mutex.
type bridgeHold struct {
	key bridgeKey
	// netns is the namespace the bridge is in, held open so that release
	// deletes it there, whichever namespace Close is called from.
	netns *os.File
	users int
}

// holdBridge counts one more attachment on the bridge name in the calling
// thread's namespace, where the plugin is about to run. It returns nil,
// and counts nothing, for a bridge that exists and that no attachment of
// this process made: that one is the caller's and is kept.
func holdBridge(name string) (*bridgeHold, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, id, err := openThreadNetns()
	if err != nil {
		return nil, err
	}
	key := bridgeKey{id, name}

	bridges.Lock()
	defer bridges.Unlock()
	if h := bridges.byKey[key]; h != nil {
		f.Close()
		h.users++
		return h, nil
	}
	if _, err := netlink.LinkByName(name); err == nil {
		f.Close()
		return nil, nil
	}
	h := &bridgeHold{key: key, netns: f, users: 1}
	bridges.byKey[key] = h
	return h, nil
}

// release gives back one hold; the last deletes the bridge, under the
// mutex, so that no Attach starting meanwhile finds it about to go.
func (h *bridgeHold) release() error {
	bridges.Lock()
	defer bridges.Unlock()
	h.users--
	if h.users > 0 {
		return nil
	}
	delete(bridges.byKey, h.key)
	nl, err := netlink.NewHandleAt(netns.NsHandle(int(h.netns.Fd())))
	if err == nil {
		if l, lerr := nl.LinkByName(h.key.name); lerr == nil {
			if derr := nl.LinkDel(l); derr != nil && !errors.Is(derr, unix.ENODEV) {
				err = derr
			}
		}
		nl.Close()
	}
	runtime.KeepAlive(h.netns)
	if err != nil {
		err = fmt.Errorf("delete bridge %s: %w", h.key.name, err)
	}
	return errors.Join(err, h.netns.Close())
}
