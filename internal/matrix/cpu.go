package matrix

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// CPU accounting comes from the kernel, not from guesses: getrusage
// (RUSAGE_THREAD) for the thread that does the measured work, and the
// "cpu" line of /proc/stat for the whole machine, whose softirq column is
// where the kernel's packet processing (NAPI, the IP stack, veth, bridge,
// VXLAN) is charged. /proc/stat counts in USER_HZ ticks (10 ms); without
// CONFIG_IRQ_TIME_ACCOUNTING its softirq time is sampled at the tick.

// threadCPU is the CPU time of the calling thread (user + system); the
// caller must be locked to its thread.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sysCPU are the machine-wide CPU times from /proc/stat.
type sysCPU struct {
	User, System, Softirq, Irq, Busy time.Duration
}

func (a sysCPU) sub(b sysCPU) sysCPU {
	return sysCPU{a.User - b.User, a.System - b.System, a.Softirq - b.Softirq, a.Irq - b.Irq, a.Busy - b.Busy}
}

const userHZ = 100 // sysconf(_SC_CLK_TCK) on Linux

func readSysCPU() (sysCPU, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return sysCPU{}, fmt.Errorf("read cpu times: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return sysCPU{}, fmt.Errorf("read cpu times: /proc/stat is empty")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 8 || fields[0] != "cpu" {
		return sysCPU{}, fmt.Errorf("read cpu times: unexpected first line %q", sc.Text())
	}
	var v [10]time.Duration
	for i := 1; i < len(fields) && i <= 10; i++ {
		n, err := strconv.ParseUint(fields[i], 10, 64)
		if err != nil {
			return sysCPU{}, fmt.Errorf("read cpu times: %w", err)
		}
		v[i-1] = time.Duration(n) * time.Second / userHZ
	}
	// user nice system idle iowait irq softirq steal guest guest_nice
	c := sysCPU{User: v[0] + v[1], System: v[2], Irq: v[5], Softirq: v[6]}
	c.Busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return c, nil
}

// pinThread locks the calling goroutine to its thread and moves the
// thread to the cpu'th CPU this process may run on (0 the first, modulo
// their number; under `taskset -c 2,3`, 0 is CPU 2), when it may run on
// more than one; the returned function undoes both.
func pinThread(cpu int) func() {
	runtime.LockOSThread()
	cpus, err := sys.AllowedCPUs()
	if err != nil || len(cpus) < 2 {
		return runtime.UnlockOSThread
	}
	var old, set unix.CPUSet
	if unix.SchedGetaffinity(0, &old) != nil {
		return runtime.UnlockOSThread
	}
	set.Set(cpus[cpu%len(cpus)])
	if unix.SchedSetaffinity(0, &set) != nil {
		return runtime.UnlockOSThread
	}
	return func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}
}

// allowedCPUs are the CPUs this process may run on, nil if unknown.
func allowedCPUs() []int {
	cpus, err := sys.AllowedCPUs()
	if err != nil {
		return nil
	}
	return []int(cpus)
}
