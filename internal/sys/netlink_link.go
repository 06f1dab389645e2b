package sys

import "golang.org/x/sys/unix"

// LinkQueues is an interface's queue counts as rtnetlink reports them
// (IFLA_NUM_RX_QUEUES, IFLA_NUM_TX_QUEUES).
type LinkQueues struct {
	RX, TX int
}

// QueryLinkQueues asks rtnetlink how many queues the interface ifindex in
// the calling thread's namespace has. An unknown ifindex gives an error
// that wraps unix.ENODEV.
func QueryLinkQueues(ifindex int) (LinkQueues, error) {
	var q LinkQueues
	err := queryLink(ifindex, func(attrs []attr) error {
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
	return q, err
}
