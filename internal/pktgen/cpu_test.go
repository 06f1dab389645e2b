package pktgen_test

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
)

// affinityEnv tells the test binary, run again by
// TestPinAcceptsAnyCPUOfTheAffinityMask, that it runs under a narrowed
// affinity mask, and which CPU the mask holds.
const affinityEnv = "AFXDP_TEST_PKTGEN_ONLY_CPU"

// TestPinAcceptsAnyCPUOfTheAffinityMask runs the test binary again as if
// under `taskset -c N` with N the last CPU, where runtime.NumCPU is 1: Pin
// to N must work, and Pin to a CPU outside the mask must be refused with
// an error that names the mask.
func TestPinAcceptsAnyCPUOfTheAffinityMask(t *testing.T) {
	if s := os.Getenv(affinityEnv); s != "" {
		only, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		pinUnderNarrowMask(t, only)
		return
	}
	testenv.RequirePrivileged(t)
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) < 2 {
		t.Skipf("needs two CPUs, to leave this process only one that is not the first; it may use %s", cpus)
	}
	only := cpus[len(cpus)-1]

	// The child inherits the affinity of the thread that starts it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	set.Set(only)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &old)
	cmd := exec.Command(os.Args[0], "-test.run=^TestPinAcceptsAnyCPUOfTheAffinityMask$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), affinityEnv+"="+strconv.Itoa(only))
	out, err := cmd.CombinedOutput()
	t.Logf("test binary under affinity %d:\n%s", only, out)
	if err != nil {
		t.Fatalf("test binary under affinity %d: %v", only, err)
	}
}

func pinUnderNarrowMask(t *testing.T, only int) {
	testenv.RequirePrivileged(t)
	if cpus, err := sys.AllowedCPUs(); err != nil || len(cpus) != 1 || cpus[0] != only {
		t.Fatalf("AllowedCPUs = %s, %v; want %d alone", cpus, err, only)
	}
	t.Logf("runtime.NumCPU = %d, allowed CPU %d", runtime.NumCPU(), only)
	v := newVeth(t)
	attachSink(t, v.Peer, pktgen.Drop)
	frame := udpFrame(t, v.Host, v.Peer, 18)
	g := newGen(t, v.Host, &pktgen.Options{Frame: frame, Pin: true, CPU: only})
	if n, err := g.Send(10); err != nil || n != 10 {
		t.Fatalf("Send(10) pinned to cpu %d = %d, %v", only, n, err)
	}
	other := 0
	if only == 0 {
		other = 1
	}
	g2, err := pktgen.NewFor(v.Host, &pktgen.Options{Frame: frame, Pin: true, CPU: other})
	if err == nil {
		g2.Close()
		t.Fatalf("Pin to cpu %d outside the mask accepted", other)
	}
	if want := fmt.Sprintf("CPU %d", other); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("(%d)", only)) {
		t.Errorf("New: %v; want an error naming %s and the allowed set (%d)", err, want, only)
	}
	t.Log(err)
}
