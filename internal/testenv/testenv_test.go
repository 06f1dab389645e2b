package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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

// TestRenameLink renames the peer of a veth in its namespace: the link
// answers to the new name there, up, and the endpoint carries the name.
func TestRenameLink(t *testing.T) {
	v := NewVeth(t, nil)
	index := v.Peer.Index
	name := netenv.RandomName("afxren")
	RenameLink(t, &v.Peer, name)
	if v.Peer.Name != name {
		t.Errorf("endpoint named %q after the rename, want %q", v.Peer.Name, name)
	}
	l, err := v.Peer.NS.Handle().LinkByName(name)
	if err != nil {
		t.Fatalf("no link %s in the peer's namespace: %v", name, err)
	}
	if l.Attrs().Index != index || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("renamed link: index %d (want %d), flags %v (want up)", l.Attrs().Index, index, l.Attrs().Flags)
	}
}

// TestLinksAdded: a veth made after LinkNames is listed by its prefix,
// the links that were there before are not.
func TestLinksAdded(t *testing.T) {
	RequirePrivileged(t)
	before := LinkNames(t)
	if len(before) == 0 || !before["lo"] {
		t.Fatalf("links of the test's namespace: %v, want lo among them", before)
	}
	v := NewVeth(t, nil)
	if got := LinksAdded(t, before, "afxh"); !slices.Contains(got, v.Host.Name) {
		t.Errorf("LinksAdded = %v, want %s among them", got, v.Host.Name)
	}
	if got := LinksAdded(t, before, "lo"); len(got) != 0 {
		t.Errorf("LinksAdded(lo) = %v, want none: lo was there before", got)
	}
}

// TestMountBPFFS: the directory is a bpffs while the test runs, and is
// unmounted and removed at its cleanup.
func TestMountBPFFS(t *testing.T) {
	RequirePrivileged(t)
	var dir string
	t.Run("mounted", func(t *testing.T) {
		dir = MountBPFFS(t)
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Type != unix.BPF_FS_MAGIC {
			t.Errorf("%s: file system type %#x, want bpffs (%#x)", dir, st.Type, unix.BPF_FS_MAGIC)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the cleanup: %v, want it gone", dir, err)
	}
}

// TestFailsOnce returns the one failure of concurrent calls.
func TestFailsOnce(t *testing.T) {
	var once sync.Once
	want := errors.New("injected")
	got := FailsOnce(t, "Close", 8, func() error {
		err := error(nil)
		once.Do(func() { err = want })
		return err
	})
	if got != want {
		t.Errorf("FailsOnce = %v, want %v", got, want)
	}
}

// TestSettle returns once check finds nothing, without reporting what it
// found before.
func TestSettle(t *testing.T) {
	calls := 0
	Settle(t, 10*time.Second, func() []string {
		if calls++; calls < 3 {
			return []string{"not yet"}
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("check called %d times, want 3", calls)
	}
}

// TestWaitFor returns once cond holds, having called it until then.
func TestWaitFor(t *testing.T) {
	calls := 0
	WaitFor(t, "the third call", func() bool {
		calls++
		return calls == 3
	})
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
}
