// Package testenv gives privileged tests their network: a namespace and a
// veth pair (or a macvlan on one) per test, removed in t.Cleanup, plus a
// bpffs of the test's own, and counters and a polling check ([Settle]) for
// leak checks.
//
// Privileged tests call [RequirePrivileged] first. It skips with a reason when
// the process lacks the capabilities, except when the environment variable
// AFXDP_REQUIRE_PRIV=1 is set (as CI does): then it fails the test, so that no
// AF_XDP test is silently skipped there.
package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RequireEnv is the environment variable under which a privileged test that
// cannot run fails instead of skipping.
const RequireEnv = "AFXDP_REQUIRE_PRIV"

// Capabilities that AF_XDP tests need: CAP_NET_ADMIN (links, XDP attach),
// CAP_NET_RAW (AF_XDP and packet sockets), CAP_SYS_ADMIN (namespaces), and
// CAP_BPF or CAP_SYS_ADMIN (programs and maps).
var needCaps = []struct {
	bit  uint
	name string
}{
	{12, "CAP_NET_ADMIN"},
	{13, "CAP_NET_RAW"},
	{21, "CAP_SYS_ADMIN"},
}

// RequirePrivileged skips tb unless the process may build namespaces and
// attach XDP programs; with AFXDP_REQUIRE_PRIV=1 it fails tb instead.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	reason := missingPrivilege()
	if reason == "" {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("privileged test cannot run (%s), and %s=1 forbids skipping it", reason, RequireEnv)
	}
	tb.Skipf("skipping privileged test: %s (run as root; set %s=1 to make this a failure)", reason, RequireEnv)
}

func missingPrivilege() string {
	eff, err := effectiveCaps()
	if err != nil {
		return err.Error()
	}
	var missing []string
	for _, c := range needCaps {
		if eff&(1<<c.bit) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return "missing " + strings.Join(missing, ", ")
	}
	return ""
}

func effectiveCaps() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("read capabilities: no CapEff in /proc/self/status")
}

// NewNetns makes an anonymous namespace removed at cleanup.
func NewNetns(tb testing.TB) *netenv.Netns {
	tb.Helper()
	RequirePrivileged(tb)
	ns, err := netenv.NewNetns("")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Error(err)
		}
	})
	return ns
}

// NewNamedNetns makes a namespace at /var/run/netns/name (what a runtime
// or a CNI plugin is handed), removed at cleanup, when its file must be
// gone; a second Close of it is harmless.
func NewNamedNetns(tb testing.TB, name string) *netenv.Netns {
	tb.Helper()
	RequirePrivileged(tb)
	ns, err := netenv.NewNetns(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ns.Close(); err != nil {
			tb.Error(err)
		}
		if _, err := os.Stat(ns.Path()); !errors.Is(err, os.ErrNotExist) {
			tb.Errorf("netns file %s left behind", ns.Path())
		}
	})
	return ns
}

// SetLink sets ep's link up or down, in its namespace.
func SetLink(tb testing.TB, ep netenv.Endpoint, up bool) {
	tb.Helper()
	if err := ep.Do(func() error {
		link, err := netlink.LinkByName(ep.Name)
		if err != nil {
			return err
		}
		if up {
			return netlink.LinkSetUp(link)
		}
		return netlink.LinkSetDown(link)
	}); err != nil {
		tb.Fatal(err)
	}
}

// RenameLink renames ep's link to name, in its namespace, as a runtime
// names a container's interface: down, renamed, up again. ep.Name is set
// to name. Tests use it to make an interface that takes the place of one
// that went.
func RenameLink(tb testing.TB, ep *netenv.Endpoint, name string) {
	tb.Helper()
	if err := ep.Do(func() error {
		link, err := netlink.LinkByName(ep.Name)
		if err == nil {
			err = netlink.LinkSetDown(link)
		}
		if err == nil {
			err = netlink.LinkSetName(link, name)
		}
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		return err
	}); err != nil {
		tb.Fatalf("rename %s to %s: %v", ep.Name, name, err)
	}
	ep.Name = name
}

// LinkNames returns the names of the links in the test's own namespace.
func LinkNames(tb testing.TB) map[string]bool {
	tb.Helper()
	m := map[string]bool{}
	for _, l := range Dump(tb, "links", netlink.LinkList) {
		m[l.Attrs().Name] = true
	}
	return m
}

// LinksAdded returns, sorted, the names of the links in the test's own
// namespace that start with prefix and are not in before (what
// [LinkNames] returned earlier): what a test made there and left.
func LinksAdded(tb testing.TB, before map[string]bool, prefix string) []string {
	tb.Helper()
	var out []string
	for name := range LinkNames(tb) {
		if !before[name] && strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// MountBPFFS mounts a bpffs of the test's own on a temporary directory,
// for pins no other test sees, and returns the directory; it is unmounted
// at cleanup.
func MountBPFFS(tb testing.TB) string {
	tb.Helper()
	RequirePrivileged(tb)
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		tb.Fatalf("mount bpffs: %v", err)
	}
	tb.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// NewVeth makes a veth pair removed at cleanup: the host end in the test's
// own namespace, the peer in a new anonymous one unless opts say otherwise.
func NewVeth(tb testing.TB, opts *netenv.VethOptions) *netenv.Veth {
	tb.Helper()
	RequirePrivileged(tb)
	v, err := netenv.NewVeth(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := v.Close(); err != nil {
			tb.Error(err)
		}
	})
	return v
}

// NewMacvlan makes a macvlan on parent, removed at cleanup.
func NewMacvlan(tb testing.TB, parent netenv.Endpoint, opts *netenv.MacvlanOptions) *netenv.Link {
	tb.Helper()
	RequirePrivileged(tb)
	l, err := netenv.NewMacvlan(parent, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Error(err)
		}
	})
	return l
}

// CPUOutsideAffinity returns the lowest CPU number this process may not
// run on (a CPU that does not exist, when it may use all of them).
func CPUOutsideAffinity(tb testing.TB) int {
	tb.Helper()
	allowed, err := sys.AllowedCPUSet()
	if err != nil {
		tb.Fatal(err)
	}
	cpu := 0
	for allowed.IsSet(cpu) {
		cpu++
	}
	return cpu
}

// NoPanic runs fn and turns a panic in it into a test error naming name.
func NoPanic(tb testing.TB, name string, fn func()) {
	tb.Helper()
	defer func() {
		if r := recover(); r != nil {
			tb.Errorf("%s panicked: %v", name, r)
		}
	}()
	fn()
}

// Dump returns what list returns, retrying while the kernel reports that
// the dump was interrupted (NLM_F_DUMP_INTR: the table changed while it was
// being read, as it does when other tests add or remove links at the same
// time); such a result may miss entries or hold stale ones, and netlink
// returns it with [netlink.ErrDumpInterrupted]. Any other error fails tb.
func Dump[T any](tb testing.TB, what string, list func() ([]T, error)) []T {
	tb.Helper()
	for try := 1; ; try++ {
		out, err := list()
		if err == nil {
			return out
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || try == 100 {
			tb.Fatalf("list %s: %v (after %d tries)", what, err, try)
		}
	}
}
