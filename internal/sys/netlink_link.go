package sys

import (
	"encoding/binary"
	"fmt"
	"math"

	"golang.org/x/sys/unix"
)

// LinkQueues is an interface's queue counts as rtnetlink reports them
// (IFLA_NUM_RX_QUEUES, IFLA_NUM_TX_QUEUES).
type LinkQueues struct {
	RX, TX int
}

// QueryLinkQueues asks rtnetlink how many queues the interface ifindex in
// the calling thread's namespace has. An unknown ifindex gives an error
// that wraps unix.ENODEV.
func QueryLinkQueues(ifindex int) (LinkQueues, error) {
	if ifindex <= 0 || ifindex > math.MaxInt32 {
		return LinkQueues{}, fmt.Errorf("netlink RTM_GETLINK: ifindex %d: %w", ifindex, unix.ENODEV)
	}
	var q LinkQueues
	found := false
	err := rtnlRequest(unix.RTM_GETLINK, 0, ifindex, nil, func(m nlMsg) error {
		if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
			return nil
		}
		if idx := int32(binary.NativeEndian.Uint32(m.Data[4:8])); int(idx) != ifindex {
			return nil
		}
		found = true
		attrs, err := parseAttrs(m.Data[unix.SizeofIfInfomsg:])
		if err != nil {
			return err
		}
		for _, a := range attrs {
			switch a.typ {
			case unix.IFLA_NUM_RX_QUEUES:
				q.RX = int(attrU32(a.val))
			case unix.IFLA_NUM_TX_QUEUES:
				q.TX = int(attrU32(a.val))
			}
		}
		return nil
	})
	if err != nil {
		return LinkQueues{}, err
	}
	if !found {
		return LinkQueues{}, fmt.Errorf("netlink RTM_GETLINK: ifindex %d: no reply for this interface: %w", ifindex, unix.ENODEV)
	}
	return q, nil
}
