package app

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestPinNAPIThreads switches the receiving veth end to threaded NAPI,
// pins its threads to one CPU and checks that the receive work of
// generated traffic then runs in those threads, on that CPU.
func TestPinNAPIThreads(t *testing.T) {
	testenv.RequirePrivileged(t)
	topo, err := NewTopology(&TopologyOptions{Generator: true, FrameLen: 64, PeerSink: pktgen.Drop})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	})
	peer := topo.Veth.Peer
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}

	if n, err := PinNAPIThreads(peer, cpus[0]); err != nil || n != 0 {
		t.Fatalf("before threaded NAPI: pinned %d threads, err %v; want 0, nil", n, err)
	}
	if err := SetThreadedNAPI(peer, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := SetThreadedNAPI(peer, false); err != nil {
			t.Error(err)
		}
	})
	cpu := cpus[len(cpus)-1]
	n, err := PinNAPIThreads(peer, cpu)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := napiThreads(peer)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n != len(ts) {
		t.Fatalf("pinned %d threads of %d: want all, and at least one", n, len(ts))
	}
	before := make([]uint64, len(ts))
	for i, th := range ts {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(th.pid, &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(cpu) {
			t.Errorf("%s (pid %d): affinity has %d CPUs; want only cpu %d", th.name, th.pid, set.Count(), cpu)
		}
		before[i], _ = threadStat(t, th.pid)
	}

	c0, err := pktgen.ReadCounters(peer)
	if err != nil {
		t.Fatal(err)
	}
	const frames = 1 << 21
	if _, err := topo.Gen.Send(frames); err != nil {
		t.Fatal(err)
	}
	c1, err := pktgen.ReadCounters(peer)
	if err != nil {
		t.Fatal(err)
	}
	if got := c1.Sub(c0).RxPackets; got == 0 {
		t.Fatalf("peer received nothing of %d frames", frames)
	}
	// The frames were dropped by the peer's program in its NAPI poll: if
	// that ran in the threads, they used CPU time, on the pinned CPU.
	var worked bool
	for i, th := range ts {
		ticks, last := threadStat(t, th.pid)
		if ticks > before[i] {
			worked = true
			if last != cpu {
				t.Errorf("%s last ran on cpu %d; pinned to %d", th.name, last, cpu)
			}
		}
	}
	if !worked {
		t.Errorf("no NAPI thread of %s used CPU time while %d frames were received", peer.Name, frames)
	}

	for _, bad := range []int{-1, cpus[len(cpus)-1] + 1} {
		_, err := PinNAPIThreads(peer, bad)
		if err == nil || !strings.Contains(err.Error(), "cpu "+strconv.Itoa(bad)) {
			t.Errorf("PinNAPIThreads(cpu %d) = %v; want an error naming the cpu", bad, err)
		}
	}
}

// threadStat returns a thread's user+system clock ticks and the CPU it
// last ran on, from /proc/PID/stat.
func threadStat(t *testing.T, pid int) (ticks uint64, cpu int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after "(comm)": state is field 3, utime 14, stime 15,
	// processor 39.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	field := func(n int) uint64 {
		v, err := strconv.ParseUint(f[n-3], 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/stat field %d: %v", pid, n, err)
		}
		return v
	}
	return field(14) + field(15), int(field(39))
}

// TestSetThreadedNAPIErrorsSayWhat asks for threaded NAPI on a veth end
// that was deleted and on one whose namespace was closed: each error names
// the interface, its namespace and what failed (the sysfs file as the
// namespace sees it, not the throwaway mount's path; a closed namespace,
// not a bare "bad file descriptor"), and matches what callers test for.
func TestSetThreadedNAPIErrorsSayWhat(t *testing.T) {
	testenv.RequirePrivileged(t)

	ns := testenv.NewNetns(t)
	v, err := netenv.NewVeth(&netenv.VethOptions{PeerNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil { // deletes the pair; ns stays
		t.Fatal(err)
	}
	err = SetThreadedNAPI(v.Peer, true)
	want := "set threaded napi on " + v.Peer.Name + " in netns " + ns.String() +
		": no such interface: open /sys/class/net/" + v.Peer.Name + "/threaded: "
	if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("deleted interface: %v; want an error containing %q that matches fs.ErrNotExist", err, want)
	}

	closed, err := netenv.NewNetns("")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := netenv.NewVeth(&netenv.VethOptions{PeerNS: closed})
	if err != nil {
		closed.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v2.Close(); err != nil {
			t.Error(err)
		}
	})
	name := closed.String()
	if err := closed.Close(); err != nil { // the peer end goes with it
		t.Fatal(err)
	}
	want = "set threaded napi on " + v2.Peer.Name + " in netns " + name + ": the namespace is closed"
	for _, set := range []struct {
		name string
		fn   func(netenv.Endpoint, bool) error
	}{{"SetThreadedNAPI", SetThreadedNAPI}, {"SetVethThreadedNAPI", SetVethThreadedNAPI}} {
		err := set.fn(v2.Peer, true)
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s in a closed namespace: %v; want an error containing %q that matches net.ErrClosed", set.name, err, want)
		}
	}
}

// TestSetThreadedNAPILeavesNoThreadElsewhere: SetThreadedNAPI works on a
// thread it moves into another mount and network namespace. The runtime
// discards such a thread, but never the main thread, which it parks, and
// /proc/self shows the main thread: every thread of the process must be
// in the process's namespaces afterwards, whichever ran the work.
func TestSetThreadedNAPILeavesNoThreadElsewhere(t *testing.T) {
	testenv.RequirePrivileged(t)
	topo, err := NewTopology(&TopologyOptions{PeerSink: pktgen.Drop})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
	})
	want := map[string]string{}
	for _, ns := range []string{"net", "mnt"} {
		if want[ns], err = os.Readlink("/proc/self/ns/" + ns); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		if err := SetThreadedNAPI(topo.Veth.Peer, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		for ns, w := range want {
			got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns", ns))
			if errors.Is(err, fs.ErrNotExist) {
				continue // the thread has gone meanwhile
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != w {
				t.Errorf("thread %s is in %s, want %s (the process's)", task.Name(), got, w)
			}
		}
	}
}
