package bpf

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
)

// foreignProgram loads a one-instruction XDP program (XDP_PASS) that stands
// for someone else's, and returns it with its ID.
func foreignProgram(t *testing.T) (*ebpf.Program, uint32) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "foreign",
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
		License:      "MIT",
	})
	mustOK(t, err)
	t.Cleanup(func() { prog.Close() })
	info, err := prog.Info()
	mustOK(t, err)
	id, _ := info.ID()
	return prog, uint32(id)
}

// attachForeignNetlink attaches prog to ifindex through netlink, as
// `ip link set dev X xdpdrv/xdpgeneric` does, and detaches it at cleanup
// if it is still there.
func attachForeignNetlink(t *testing.T, ifindex int, prog *ebpf.Program, mode AttachMode) {
	t.Helper()
	l, err := netlink.LinkByIndex(ifindex)
	mustOK(t, err)
	mustOK(t, netlink.LinkSetXdpFdWithFlags(l, prog.FD(), int(modeFlags(mode))))
	t.Cleanup(func() { netlink.LinkSetXdpFdWithFlags(l, -1, int(modeFlags(mode))) })
}

func mustQuery(t *testing.T, ifindex int) XDPInfo {
	t.Helper()
	info, err := QueryXDP(ifindex)
	mustOK(t, err)
	return info
}

func TestAttach(t *testing.T) {
	for _, tt := range []struct {
		mode, want AttachMode
	}{
		{AttachAuto, AttachDriver}, // veth supports native XDP
		{AttachDriver, AttachDriver},
		{AttachGeneric, AttachGeneric},
	} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			v := testenv.NewVeth(t, nil)
			p := newTestProgram(t, nil)
			if info := mustQuery(t, v.Host.Index); info.Attached() {
				t.Fatalf("fresh veth has XDP: %+v", info)
			}

			a, err := p.Attach(v.Host.Index, &AttachOptions{Mode: tt.mode})
			mustOK(t, err)
			if a.Mode() != tt.want || a.Ifindex() != v.Host.Index {
				t.Errorf("attachment: mode %s ifindex %d, want %s %d", a.Mode(), a.Ifindex(), tt.want, v.Host.Index)
			}

			info := mustQuery(t, v.Host.Index)
			got, other := info.Driver, info.Generic
			if tt.want == AttachGeneric {
				got, other = other, got
			}
			if got.ID != p.ID() || got.LinkID == 0 || other.Attached() || info.Offload.Attached() {
				t.Errorf("QueryXDP = %+v, want program %d through a bpf_link in %s mode only", info, p.ID(), tt.want)
			}

			mustOK(t, a.Close())
			mustOK(t, a.Close()) // second Close is nil
			if info := mustQuery(t, v.Host.Index); info.Attached() {
				t.Errorf("after Attachment.Close: %+v", info)
			}
		})
	}
}

// TestAttachAutoFallsBackWhenDriverRefuses makes veth pairs whose driver
// refuses native XDP for their configuration: an MTU too large for a frame
// in one page (ERANGE) and a peer with more TX queues than this end has RX
// queues (ENOSPC). AttachDriver must fail with the driver's errno, and
// AttachAuto must fall back to generic mode, as it promises, rather than
// fail.
func TestAttachAutoFallsBackWhenDriverRefuses(t *testing.T) {
	for _, tt := range []struct {
		name  string
		make  func(t *testing.T) int // returns the ifindex to attach to
		errno unix.Errno
	}{
		{"jumbo mtu", func(t *testing.T) int {
			return testenv.NewVeth(t, &netenv.VethOptions{MTU: 9000}).Host.Index
		}, unix.ERANGE},
		{"peer has more tx queues", func(t *testing.T) int {
			ns := testenv.NewNetns(t)
			la := netlink.NewLinkAttrs()
			la.Name = netenv.RandomName("afxh")
			la.NumTxQueues, la.NumRxQueues = 1, 1
			veth := &netlink.Veth{
				LinkAttrs: la, PeerName: netenv.RandomName("afxp"),
				PeerNumTxQueues: 4, PeerNumRxQueues: 4,
				PeerNamespace: netlink.NsFd(ns.NsHandle()),
			}
			mustOK(t, netlink.LinkAdd(veth))
			t.Cleanup(func() {
				if err := netlink.LinkDel(veth); err != nil {
					t.Error(err)
				}
			})
			l, err := netlink.LinkByName(la.Name)
			mustOK(t, err)
			mustOK(t, netlink.LinkSetUp(l))
			return l.Attrs().Index
		}, unix.ENOSPC},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ifindex := tt.make(t)
			p := newTestProgram(t, nil)
			if _, err := p.Attach(ifindex, &AttachOptions{Mode: AttachDriver}); !errors.Is(err, tt.errno) {
				t.Fatalf("Attach in driver mode: %v, want %v", err, tt.errno)
			}
			a, err := p.Attach(ifindex, nil)
			if err != nil {
				t.Fatalf("Attach in auto mode: %v, want a fall back to generic mode", err)
			}
			if a.Mode() != AttachGeneric {
				t.Errorf("Attach in auto mode: %s mode, want generic", a.Mode())
			}
			if info := mustQuery(t, ifindex); info.Generic.ID != p.ID() || info.Driver.Attached() {
				t.Errorf("QueryXDP = %+v, want program %d in generic mode only", info, p.ID())
			}
			mustOK(t, a.Close())
		})
	}
}

// TestAttachPeerNamespace attaches to the veth end in the other namespace:
// Attach and QueryXDP work in the calling goroutine's namespace.
func TestAttachPeerNamespace(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	p := newTestProgram(t, nil)
	mustOK(t, v.Peer.Do(func() error {
		a, err := p.Attach(v.Peer.Index, nil)
		if err != nil {
			return err
		}
		info, err := QueryXDP(v.Peer.Index)
		if err != nil {
			return err
		}
		if info.Driver.ID != p.ID() {
			t.Errorf("QueryXDP in peer namespace = %+v, want driver program %d", info, p.ID())
		}
		return a.Close()
	}))
}

// TestProgramCloseDetaches checks that Program.Close detaches what Attach
// attached, and leaks no file descriptors.
func TestProgramCloseDetaches(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	before := testenv.Snapshot(t)

	p, err := NewProgram(nil)
	mustOK(t, err)
	_, err = p.Attach(v.Host.Index, &AttachOptions{Mode: AttachDriver})
	mustOK(t, err)
	mustOK(t, v.Peer.Do(func() error {
		_, err := p.Attach(v.Peer.Index, &AttachOptions{Mode: AttachGeneric})
		return err
	}))
	mustOK(t, p.Close())

	if info := mustQuery(t, v.Host.Index); info.Attached() {
		t.Errorf("host after Program.Close: %+v", info)
	}
	mustOK(t, v.Peer.Do(func() error {
		if info, err := QueryXDP(v.Peer.Index); err != nil || info.Attached() {
			t.Errorf("peer after Program.Close: %+v, %v", info, err)
		}
		return nil
	}))
	if after := testenv.Snapshot(t); after.FDs != before.FDs {
		t.Errorf("file descriptors: %d before, %d after", before.FDs, after.FDs)
	}
}

func TestAttachBusyNetlink(t *testing.T) {
	for _, mode := range []AttachMode{AttachDriver, AttachGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			v := testenv.NewVeth(t, nil)
			p := newTestProgram(t, nil)
			foreign, foreignID := foreignProgram(t)
			attachForeignNetlink(t, v.Host.Index, foreign, mode)

			info := mustQuery(t, v.Host.Index)
			if got := pick(info, mode); got.ID != foreignID || got.LinkID != 0 {
				t.Fatalf("QueryXDP = %+v, want program %d through netlink in %s mode", info, foreignID, mode)
			}

			// Every mode we might ask for meets the other program.
			for _, want := range []AttachMode{AttachAuto, AttachDriver, AttachGeneric} {
				a, err := p.Attach(v.Host.Index, &AttachOptions{Mode: want})
				if err == nil {
					a.Close()
					t.Fatalf("Attach(%s) succeeded over program %d", want, foreignID)
				}
				checkBusy(t, err, v.Host.Index, foreignID, mode)
			}
			if got := mustQuery(t, v.Host.Index); got != info {
				t.Fatalf("foreign program disturbed: %+v, was %+v", got, info)
			}

			a, err := p.Attach(v.Host.Index, &AttachOptions{Replace: true})
			mustOK(t, err)
			info = mustQuery(t, v.Host.Index)
			if info.Driver.ID != p.ID() || info.Generic.Attached() {
				t.Errorf("after Replace: %+v, want only program %d in driver mode", info, p.ID())
			}
			mustOK(t, a.Close())
			if info := mustQuery(t, v.Host.Index); info.Attached() {
				t.Errorf("after Close: %+v", info)
			}
		})
	}
}

func TestAttachBusyLink(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	p := newTestProgram(t, nil)
	foreign, foreignID := foreignProgram(t)
	fl, err := link.AttachXDP(link.XDPOptions{Program: foreign, Interface: v.Host.Index, Flags: link.XDPGenericMode})
	mustOK(t, err)
	defer fl.Close()

	info := mustQuery(t, v.Host.Index)
	if info.Generic.ID != foreignID || info.Generic.LinkID == 0 {
		t.Fatalf("QueryXDP = %+v, want program %d through a bpf_link in generic mode", info, foreignID)
	}
	_, err = p.Attach(v.Host.Index, &AttachOptions{Mode: AttachDriver})
	checkBusy(t, err, v.Host.Index, foreignID, AttachGeneric)

	a, err := p.Attach(v.Host.Index, &AttachOptions{Mode: AttachDriver, Replace: true})
	mustOK(t, err)
	defer a.Close()
	info = mustQuery(t, v.Host.Index)
	if info.Driver.ID != p.ID() || info.Generic.Attached() {
		t.Errorf("after Replace: %+v, want only program %d in driver mode", info, p.ID())
	}
	fi, err := fl.Info()
	mustOK(t, err)
	if x := fi.XDP(); x == nil || x.Ifindex != 0 {
		t.Errorf("foreign link still attached: %+v", x)
	}
}

// TestAttachTwice checks the kernel's own refusal: the program is ours, so
// Attach goes ahead, and the kernel refuses a second link on the hook. The
// EBUSY becomes a BusyError naming the program that holds the hook.
func TestAttachTwice(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	p := newTestProgram(t, nil)
	a, err := p.Attach(v.Host.Index, &AttachOptions{Mode: AttachDriver})
	mustOK(t, err)
	defer a.Close()

	_, err = p.Attach(v.Host.Index, &AttachOptions{Mode: AttachDriver})
	checkBusy(t, err, v.Host.Index, p.ID(), AttachDriver)
	if !errors.Is(err, unix.EBUSY) {
		t.Errorf("%v: want the kernel's EBUSY kept", err)
	}
	t.Logf("second attach: %v", err)

	// Generic mode while driver mode is taken: the kernel says EEXIST.
	_, err = p.Attach(v.Host.Index, &AttachOptions{Mode: AttachGeneric})
	checkBusy(t, err, v.Host.Index, p.ID(), AttachDriver)
	t.Logf("generic over driver: %v", err)
}

func pick(info XDPInfo, mode AttachMode) AttachedProgram {
	if mode == AttachGeneric {
		return info.Generic
	}
	return info.Driver
}

func checkBusy(t *testing.T, err error, ifindex int, id uint32, mode AttachMode) {
	t.Helper()
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("%v: want ErrBusy", err)
	}
	var be *BusyError
	if !errors.As(err, &be) {
		t.Fatalf("%v: not a *BusyError", err)
	}
	if be.Ifindex != ifindex || be.ProgramID != id || be.Mode != mode {
		t.Errorf("BusyError %+v, want ifindex %d program %d mode %s", be, ifindex, id, mode)
	}
	if !strings.HasPrefix(err.Error(), "attach xdp to ifindex ") {
		t.Errorf("error %q does not say what failed", err)
	}
}

// TestQueryXDPWhileLinksComeAndGo queries an interface while another
// goroutine makes and closes bpf_links on a second one. A link the kernel
// is still creating answers EAGAIN when opened by ID; the walk over links
// must ride that out rather than fail the query (seen under a parallel
// go test ./...).
func TestQueryXDPWhileLinksComeAndGo(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	other := testenv.NewVeth(t, nil)
	p := newTestProgram(t, nil)
	a, err := p.Attach(v.Host.Index, &AttachOptions{Mode: AttachGeneric})
	mustOK(t, err)
	defer a.Close()
	want := mustQuery(t, v.Host.Index)
	if want.Generic.ID != p.ID() || want.Generic.LinkID == 0 {
		t.Fatalf("QueryXDP = %+v, want program %d through a bpf_link", want, p.ID())
	}

	foreign, _ := foreignProgram(t)
	stop := make(chan struct{})
	churned := make(chan int)
	go func() {
		n := 0
		defer func() { churned <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			l, err := link.AttachXDP(link.XDPOptions{Program: foreign, Interface: other.Host.Index, Flags: link.XDPGenericMode})
			if errors.Is(err, unix.EBUSY) {
				// The last link is held open for a moment by a query
				// that was reading it, so it is still attached.
				continue
			}
			if err != nil {
				t.Errorf("attach churn link: %v", err)
				return
			}
			l.Close()
			n++
		}
	}()
	const queries = 1500
	var bad error
	for i := 0; i < queries && bad == nil; i++ {
		got, err := QueryXDP(v.Host.Index)
		switch {
		case err != nil:
			bad = err
		case got != want:
			bad = fmt.Errorf("QueryXDP = %+v, want %+v", got, want)
		}
	}
	close(stop)
	n := <-churned
	if bad != nil {
		t.Fatalf("while %d links came and went: %v", n, bad)
	}
	if n == 0 {
		t.Fatal("no link came and went during the queries")
	}
	t.Logf("%d queries while %d links came and went", queries, n)
}

// linkIn makes a link in ns with the given interface index (a veth whose
// peer takes the next free one, or a bridge) and returns its index.
func linkIn(t *testing.T, ns *netenv.Netns, index int, bridge bool) int {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = netenv.RandomName("afxr")
	la.Index = index
	var l netlink.Link = &netlink.Veth{LinkAttrs: la, PeerName: netenv.RandomName("afxr")}
	if bridge {
		l = &netlink.Bridge{LinkAttrs: la}
	}
	mustOK(t, ns.Do(func() error {
		if err := netlink.LinkAdd(l); err != nil {
			return fmt.Errorf("add %s with index %d: %w", la.Name, index, err)
		}
		got, err := netlink.LinkByName(la.Name)
		if err != nil {
			return err
		}
		index = got.Attrs().Index
		return netlink.LinkSetUp(got)
	}))
	return index
}

// queryIn is QueryXDP inside ns.
func queryIn(t *testing.T, ns *netenv.Netns, ifindex int) XDPInfo {
	t.Helper()
	var info XDPInfo
	mustOK(t, ns.Do(func() (err error) {
		info, err = QueryXDP(ifindex)
		return err
	}))
	return info
}

// TestReplaceLeavesOtherNamespaces puts the same foreign program on
// interfaces with the same index in two namespaces, which is what
// containers with an eth0 each look like to the kernel's bpf_link list,
// and checks that Replace in one never detaches the other's.
func TestReplaceLeavesOtherNamespaces(t *testing.T) {
	const index = 4711
	nsA, nsB := testenv.NewNetns(t), testenv.NewNetns(t)
	ia, ib := linkIn(t, nsA, index, false), linkIn(t, nsB, index, false)
	if ia != index || ib != index {
		t.Fatalf("interfaces got indexes %d and %d, want %d", ia, ib, index)
	}
	foreign, foreignID := foreignProgram(t)
	var lb link.Link
	mustOK(t, nsB.Do(func() (err error) {
		lb, err = link.AttachXDP(link.XDPOptions{Program: foreign, Interface: index, Flags: link.XDPGenericMode})
		return err
	}))
	defer lb.Close()
	p := newTestProgram(t, nil)

	t.Run("netlink here, link there", func(t *testing.T) {
		mustOK(t, nsA.Do(func() error {
			l, err := netlink.LinkByIndex(index)
			if err != nil {
				return err
			}
			return netlink.LinkSetXdpFdWithFlags(l, foreign.FD(), unix.XDP_FLAGS_SKB_MODE)
		}))
		var a *Attachment
		mustOK(t, nsA.Do(func() (err error) {
			a, err = p.Attach(index, &AttachOptions{Mode: AttachGeneric, Replace: true})
			return err
		}))
		if info := queryIn(t, nsA, index); info.Generic.ID != p.ID() {
			t.Errorf("namespace A after Replace: %+v, want program %d", info, p.ID())
		}
		mustOK(t, a.Close())
		if info := queryIn(t, nsB, index); info.Generic.ID != foreignID {
			t.Errorf("namespace B after Replace in A: %+v, want program %d still there", info, foreignID)
		}
	})

	t.Run("link here, link there", func(t *testing.T) {
		var la link.Link
		mustOK(t, nsA.Do(func() (err error) {
			la, err = link.AttachXDP(link.XDPOptions{Program: foreign, Interface: index, Flags: link.XDPGenericMode})
			return err
		}))
		defer la.Close()
		var err error
		mustOK(t, nsA.Do(func() error {
			_, err = p.Attach(index, &AttachOptions{Mode: AttachGeneric, Replace: true})
			return nil
		}))
		if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "cannot be told apart") {
			t.Errorf("Replace with two candidate links: %v, want EBUSY saying the links cannot be told apart", err)
		}
		for name, ns := range map[string]*netenv.Netns{"A": nsA, "B": nsB} {
			if info := queryIn(t, ns, index); info.Generic.ID != foreignID || info.Generic.LinkID == 0 {
				t.Errorf("namespace %s after the refused Replace: %+v, want program %d held by a link", name, info, foreignID)
			}
		}
	})
}

// TestReplaceRestores makes the attach after the detach fail (a bridge
// has no native XDP) and checks what Replace leaves: the netlink-attached
// program it removed is back, and the error says when a link's program
// could not be put back.
func TestReplaceRestores(t *testing.T) {
	ns := testenv.NewNetns(t)
	idx := linkIn(t, ns, 0, true)
	foreign, foreignID := foreignProgram(t)
	p := newTestProgram(t, nil)

	t.Run("netlink", func(t *testing.T) {
		var err error
		mustOK(t, ns.Do(func() error {
			l, err := netlink.LinkByIndex(idx)
			if err != nil {
				return err
			}
			return netlink.LinkSetXdpFdWithFlags(l, foreign.FD(), unix.XDP_FLAGS_SKB_MODE)
		}))
		mustOK(t, ns.Do(func() error {
			_, err = p.Attach(idx, &AttachOptions{Mode: AttachDriver, Replace: true})
			return nil
		}))
		if !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("Attach(driver) on a bridge: %v, want EOPNOTSUPP", err)
		}
		info := queryIn(t, ns, idx)
		if info.Generic.ID != foreignID || info.Generic.LinkID != 0 || info.Driver.Attached() {
			t.Errorf("after the failed Replace: %+v, want program %d back in generic mode through netlink", info, foreignID)
		}
		mustOK(t, ns.Do(func() error { return sys.DetachLinkXDP(idx, unix.XDP_FLAGS_SKB_MODE, foreign.FD()) }))
	})

	t.Run("link", func(t *testing.T) {
		var fl link.Link
		mustOK(t, ns.Do(func() (err error) {
			fl, err = link.AttachXDP(link.XDPOptions{Program: foreign, Interface: idx, Flags: link.XDPGenericMode})
			return err
		}))
		defer fl.Close()
		var err error
		mustOK(t, ns.Do(func() error {
			_, err = p.Attach(idx, &AttachOptions{Mode: AttachDriver, Replace: true})
			return nil
		}))
		if !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), fmt.Sprintf("xdp program %d (generic mode), which a bpf link held, stays detached", foreignID)) {
			t.Errorf("Attach(driver) on a bridge over a link: %v, want EOPNOTSUPP and the link's program named as not put back", err)
		}
		if info := queryIn(t, ns, idx); info.Attached() {
			t.Errorf("after the failed Replace: %+v, want nothing attached", info)
		}
	})
}

// slowDetachLink is a bpf_link whose Detach waits for release, to hold an
// Attachment.Close in the middle of its detach.
type slowDetachLink struct {
	link.Link
	started, release chan struct{}
}

func (l *slowDetachLink) Detach() error {
	close(l.started)
	<-l.release
	return l.Link.Detach()
}

// TestCloseWaitsForDetachInProgress checks that Program.Close, and a
// second Attachment.Close, return only once an Attachment.Close already
// under way has detached the program: both promise that the program is
// off the interface when they return.
func TestCloseWaitsForDetachInProgress(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	p, err := NewProgram(nil)
	mustOK(t, err)
	defer p.Close()
	a, err := p.Attach(v.Host.Index, &AttachOptions{Mode: AttachDriver})
	mustOK(t, err)
	slow := &slowDetachLink{Link: a.l, started: make(chan struct{}), release: make(chan struct{})}
	a.l = slow

	first := make(chan error, 1)
	go func() { first <- a.Close() }()
	<-slow.started
	closes := map[string]func() error{"Program.Close": p.Close, "second Attachment.Close": a.Close}
	returned := make(chan string, len(closes))
	for name, c := range closes {
		go func() {
			if err := c(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			returned <- name
		}()
	}
	pending := len(closes)
	select {
	case name := <-returned:
		pending--
		t.Errorf("%s returned while the program was still attached (%+v)", name, mustQuery(t, v.Host.Index))
	case <-time.After(200 * time.Millisecond):
	}
	close(slow.release)
	mustOK(t, <-first)
	for range pending {
		<-returned
	}
	if info := mustQuery(t, v.Host.Index); info.Attached() {
		t.Errorf("after Close: %+v", info)
	}
}
