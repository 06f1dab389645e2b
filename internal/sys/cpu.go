package sys

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// CPUList is a set of CPU numbers in increasing order. It prints in the
// kernel's cpulist format ("0-3,6").
type CPUList []int

// AllowedCPUs returns the CPUs this process may run on (see
// [AllowedCPUSet]) as a list.
func AllowedCPUs() (CPUList, error) {
	all, err := AllowedCPUSet()
	if err != nil {
		return nil, err
	}
	l := make(CPUList, 0, all.Count())
	for cpu := 0; len(l) < cap(l); cpu++ {
		if all.IsSet(cpu) {
			l = append(l, cpu)
		}
	}
	return l, nil
}

// AllowedCPUSet returns the CPUs this process may run on: the union of its
// threads' affinity masks, which taskset(1) and cgroup cpusets narrow. The
// union, because a thread pinned for the moment has a narrower mask than
// the process was given. The CPUs need not start at 0 nor be contiguous,
// so check CPU numbers against this, not against runtime.NumCPU (their
// count).
func AllowedCPUSet() (unix.CPUSet, error) {
	var all unix.CPUSet
	tids, err := ThreadIDs()
	if err != nil {
		return all, fmt.Errorf("list allowed cpus: %w", err)
	}
	for _, tid := range tids {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			if err == unix.ESRCH { // the thread has exited
				continue
			}
			return all, fmt.Errorf("list allowed cpus: %w", os.NewSyscallError("sched_getaffinity", err))
		}
		for i := range all {
			all[i] |= set[i]
		}
	}
	return all, nil
}

// ThreadIDs lists this process's threads.
func ThreadIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			return nil, fmt.Errorf("/proc/self/task/%s: not a thread ID", e.Name())
		}
		tids = append(tids, tid)
	}
	return tids, nil
}

// Contains reports whether cpu is in l.
func (l CPUList) Contains(cpu int) bool {
	_, ok := slices.BinarySearch(l, cpu)
	return ok
}

// String formats l as the kernel does /sys/devices/system/cpu/online:
// runs of consecutive CPUs as ranges, separated by commas.
func (l CPUList) String() string {
	var b strings.Builder
	for i := 0; i < len(l); {
		j := i
		for j+1 < len(l) && l[j+1] == l[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(l[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(l[j]))
		}
		i = j + 1
	}
	return b.String()
}
