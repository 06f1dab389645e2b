package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// XDPInfo describes the XDP programs attached to one interface, one per
// attach mode; a mode with no program has a zero [AttachedProgram].
type XDPInfo struct {
	Driver  AttachedProgram // native mode, in the driver
	Generic AttachedProgram // generic (skb) mode
	Offload AttachedProgram // offloaded to the NIC (hw mode)
}

// AttachedProgram is one XDP program attached to an interface.
type AttachedProgram struct {
	// ID is the kernel's program ID; zero means no program.
	ID uint32
	// LinkID is the ID of the bpf_link that holds the program, or zero when
	// it was attached through netlink (as `ip link set dev X xdp` does).
	// A program held by a link goes away when the link's last file
	// descriptor is closed; one attached through netlink stays until
	// someone detaches it.
	LinkID uint32
}

// Attached reports whether a program is attached in this mode.
func (a AttachedProgram) Attached() bool { return a.ID != 0 }

// Attached reports whether any XDP program is attached to the interface.
func (i XDPInfo) Attached() bool {
	return i.Driver.Attached() || i.Generic.Attached() || i.Offload.Attached()
}

// QueryXDP reports which XDP programs are attached to the interface with
// index ifindex, in the calling goroutine's network namespace. It asks
// rtnetlink (RTM_GETLINK, the IFLA_XDP attributes) for the programs, and,
// when one is attached, walks the kernel's bpf_links to find whether a link
// holds it; that walk needs CAP_SYS_ADMIN.
//
// Links are matched on interface index and program ID; a link's interface
// index does not name its network namespace, so the same program attached
// through a link to an interface with the same index in another namespace
// could be reported as holding this one.
//
// An unknown ifindex gives an error that wraps unix.ENODEV.
func QueryXDP(ifindex int) (XDPInfo, error) {
	st, err := sys.QueryLinkXDP(ifindex)
	if err != nil {
		return XDPInfo{}, fmt.Errorf("query xdp on ifindex %d: %w", ifindex, err)
	}
	info := XDPInfo{
		Driver:  AttachedProgram{ID: st.DrvProgID},
		Generic: AttachedProgram{ID: st.SKBProgID},
		Offload: AttachedProgram{ID: st.HWProgID},
	}
	if !info.Attached() && st.ProgID != 0 {
		// Kernels before 4.19 report only the single program's ID.
		switch st.Attached {
		case sys.XDPAttachedDrv:
			info.Driver.ID = st.ProgID
		case sys.XDPAttachedSKB:
			info.Generic.ID = st.ProgID
		case sys.XDPAttachedHW:
			info.Offload.ID = st.ProgID
		}
	}
	if !info.Attached() {
		return info, nil
	}
	if err := findXDPLinks(ifindex, &info); err != nil {
		return XDPInfo{}, fmt.Errorf("query xdp on ifindex %d: %w", ifindex, err)
	}
	return info, nil
}

// linkWalkTries bounds how many times findXDPLinks walks the links when
// it keeps meeting one that is being created.
const linkWalkTries = 50

// findXDPLinks fills in LinkID for the programs in info that a bpf_link to
// ifindex holds.
func findXDPLinks(ifindex int, info *XDPInfo) error {
	links, err := xdpLinks(ifindex)
	if err != nil {
		return err
	}
	for _, l := range links {
		for _, ap := range []*AttachedProgram{&info.Driver, &info.Generic, &info.Offload} {
			if ap.ID != 0 && ap.ID == l.prog && ap.LinkID == 0 {
				ap.LinkID = l.id
				break
			}
		}
	}
	return nil
}

// xdpLink is a bpf_link of XDP type: its ID and its program's.
type xdpLink struct{ id, prog uint32 }

// xdpLinks lists the kernel's XDP bpf_links to an interface with index
// ifindex, in any network namespace.
//
// A link that another process is creating at that moment is already listed
// but answers EAGAIN when opened by ID, until the kernel has finished
// attaching it; the walk then starts over, after a millisecond, since that
// link may be one to ifindex.
func xdpLinks(ifindex int) ([]xdpLink, error) {
	for try := 1; ; try++ {
		links, err := walkXDPLinks(ifindex)
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, unix.EAGAIN) || try == linkWalkTries {
			return nil, err
		}
		time.Sleep(time.Millisecond)
	}
}

// walkXDPLinks is one walk over the kernel's bpf_links for xdpLinks.
func walkXDPLinks(ifindex int) ([]xdpLink, error) {
	var links []xdpLink
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		li, err := it.Link.Info()
		if err != nil {
			return nil, fmt.Errorf("read info of bpf link %d: %w", it.ID, err)
		}
		if li.Type != link.XDPType {
			continue
		}
		if x := li.XDP(); x != nil && int(x.Ifindex) == ifindex {
			links = append(links, xdpLink{id: uint32(li.ID), prog: uint32(li.Program)})
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list bpf links: %w", err)
	}
	return links, nil
}

// modeFlags returns the netlink XDP_FLAGS_* bit for an attach mode.
func modeFlags(m AttachMode) uint32 {
	switch m {
	case AttachDriver:
		return unix.XDP_FLAGS_DRV_MODE
	case AttachGeneric:
		return unix.XDP_FLAGS_SKB_MODE
	}
	return 0
}
