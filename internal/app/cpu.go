package app

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// clockCPU reads one of the kernel's CPU-time clocks.
func clockCPU(clock int32) (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	return time.Duration(ts.Nano()), nil
}

// ProcessCPU is the CPU time (user and system) this process has used, in
// nanoseconds, from the scheduler's own accounting
// (CLOCK_PROCESS_CPUTIME_ID): the same clock as [ThreadCPU] and
// [ThreadCPUOf], so that one thread's share can be taken out of it.
func ProcessCPU() time.Duration {
	d, _ := clockCPU(unix.CLOCK_PROCESS_CPUTIME_ID)
	return d
}

// ThreadCPU is the CPU time the calling thread has used
// (CLOCK_THREAD_CPUTIME_ID); lock the goroutine to its thread
// (runtime.LockOSThread) for it to mean anything.
func ThreadCPU() time.Duration {
	d, _ := clockCPU(unix.CLOCK_THREAD_CPUTIME_ID)
	return d
}

// ThreadCPUOf is the CPU time thread tid of this process has used, read
// from another thread: its CPU-time clock, which pthread_getcpuclockid
// would give (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED) in the kernel).
// It is exact to the nanosecond and on the same clock as [ProcessCPU],
// unlike [TaskCPU], which counts in clock ticks.
func ThreadCPUOf(tid int) (time.Duration, error) {
	const perThread, sched = 4, 2
	if tid <= 0 || tid >= 1<<28 { // the clock ID holds 28 bits of it
		return 0, fmt.Errorf("cpu time of thread %d: %w", tid, unix.ESRCH)
	}
	d, err := clockCPU(int32(^tid<<3 | perThread | sched))
	if err != nil {
		return 0, fmt.Errorf("cpu time of thread %d: %w", tid, err)
	}
	return d, nil
}

// ProcCPU is the CPU time of process pid, from /proc/PID/stat (clock
// ticks, usually 10 ms).
func ProcCPU(pid int) (time.Duration, error) {
	return statCPU(fmt.Sprintf("/proc/%d/stat", pid))
}

// TaskCPU is the CPU time of thread tid of this process, from
// /proc/self/task/TID/stat.
func TaskCPU(tid int) (time.Duration, error) {
	return statCPU(fmt.Sprintf("/proc/self/task/%d/stat", tid))
}

func statCPU(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after its ")".
	i := len(b) - 1
	for i >= 0 && b[i] != ')' {
		i--
	}
	var state string
	var ppid, pgrp, session, tty, tpgid int
	var flags, minflt, cminflt, majflt, cmajflt, utime, stime uint64
	_, err = fmt.Sscan(string(b[i+1:]), &state, &ppid, &pgrp, &session, &tty, &tpgid,
		&flags, &minflt, &cminflt, &majflt, &cmajflt, &utime, &stime)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / hz, nil
}

// PinThread locks the calling goroutine to its thread and, for cpu >= 0,
// the thread to that CPU. The returned function undoes both.
func PinThread(cpu int) (func(), error) {
	runtime.LockOSThread()
	if cpu < 0 {
		return runtime.UnlockOSThread, nil
	}
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin to cpu %d: %w", cpu, os.NewSyscallError("sched_getaffinity", err))
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin to cpu %d: %w", cpu, os.NewSyscallError("sched_setaffinity", err))
	}
	return func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	}, nil
}

// KeepOffCPU moves every thread of this process except the calling one
// off cpu, so that the Go runtime's other threads (sysmon, the
// scheduler's spare threads, goroutines that print reports) do not
// preempt a run loop pinned there. DPDK keeps its control threads off its
// worker cores the same way. Threads made later inherit the affinity of
// the thread that makes them, which is one of the moved ones: the runtime
// has a thread locked with LockOSThread ask another to make new threads.
//
// A thread keeps the rest of its own affinity: one pinned elsewhere (a
// traffic generator's, say) stays where it is, and one that may run on
// cpu and others loses only cpu. A thread that may run on cpu alone moves
// to the process's other CPUs: the union of its threads' affinities less
// cpu. On a machine with no other CPU it does nothing.
//
// restore gives the moved threads that still have the affinity KeepOffCPU
// left them with their own back, and cpu to the threads made since, which
// inherited such an affinity; a thread pinned somewhere in between keeps
// its pin.
func KeepOffCPU(cpu int) (restore func() error, err error) {
	const (
		maxPasses = 16
		settle    = 200 * time.Microsecond
	)
	allowed, err := sys.AllowedCPUSet()
	if err != nil {
		return nil, fmt.Errorf("keep threads off cpu %d: %w", cpu, err)
	}
	if cpu < 0 || cpu >= len(allowed)*64 || !allowed.IsSet(cpu) {
		return nil, fmt.Errorf("keep threads off cpu %d: not one of this process's CPUs", cpu)
	}
	off := allowed
	off.Clear(cpu)
	if off.Count() == 0 {
		return func() error { return nil }, nil
	}
	self := unix.Gettid()
	// left holds each moved thread's affinity before and after; seen
	// every thread there was, and given the affinities handed out, to
	// recognise the threads made later (which inherit one of them).
	type move struct{ from, to unix.CPUSet }
	left := map[int]move{}
	seen := map[int]bool{}
	given := map[unix.CPUSet]bool{}
	// each calls fn for every thread but the calling one with its
	// affinity, in passes: a thread that one not yet changed makes
	// inherits the old affinity, and a pass may list the threads before
	// it exists, or before a thread whose clone copied its parent's
	// affinity just ahead of the parent's change shows in /proc. So each
	// passes again until two passes in a row, a moment apart, change
	// nothing (fn reports whether it changed the thread). Threads that
	// have exited are skipped.
	each := func(fn func(tid int, set unix.CPUSet) (bool, error)) error {
		for pass, clean := 0, 0; clean < 2; pass++ {
			if pass == maxPasses {
				return fmt.Errorf("threads still made with the old affinity after %d passes", pass)
			}
			if clean > 0 {
				time.Sleep(settle)
			}
			tids, err := sys.ThreadIDs()
			if err != nil {
				return err
			}
			clean++
			for _, tid := range tids {
				if tid == self {
					continue
				}
				var set unix.CPUSet
				if err := unix.SchedGetaffinity(tid, &set); err != nil {
					if err == unix.ESRCH {
						continue
					}
					return os.NewSyscallError("sched_getaffinity", err)
				}
				changed, err := fn(tid, set)
				if err != nil {
					return err
				}
				if changed {
					clean = 0
				}
			}
		}
		return nil
	}
	setAffinity := func(tid int, set unix.CPUSet) error {
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return os.NewSyscallError("sched_setaffinity", err)
		}
		return nil
	}
	restore = func() error {
		err := each(func(tid int, set unix.CPUSet) (bool, error) {
			m, moved := left[tid]
			switch {
			case set.IsSet(cpu), moved && set != m.to, !moved && (seen[tid] || !given[set]):
				return false, nil // not ours to change, or pinned since
			case moved:
				return true, setAffinity(tid, m.from)
			}
			set.Set(cpu)
			return true, setAffinity(tid, set)
		})
		if err != nil {
			return fmt.Errorf("give threads back cpu %d: %w", cpu, err)
		}
		return nil
	}
	// The threads kept off cpu before any is moved are pinned by their
	// owners: leave them alone, now and in restore. A thread kept off cpu
	// that shows up later was made by a moved one, and restore gives it
	// cpu back.
	tids, err := sys.ThreadIDs()
	if err != nil {
		return nil, fmt.Errorf("keep threads off cpu %d: %w", cpu, err)
	}
	for _, tid := range tids {
		var set unix.CPUSet
		if tid != self && unix.SchedGetaffinity(tid, &set) == nil && !set.IsSet(cpu) {
			seen[tid] = true
		}
	}
	err = each(func(tid int, set unix.CPUSet) (bool, error) {
		if seen[tid] || !set.IsSet(cpu) {
			// Pinned off cpu by its owner, or moved in an earlier
			// pass (if it has cpu again, its owner pinned it there
			// since), or made by a moved thread.
			return false, nil
		}
		seen[tid] = true
		to := set
		to.Clear(cpu)
		if to.Count() == 0 {
			to = off
		}
		left[tid], given[to] = move{set, to}, true
		return true, setAffinity(tid, to)
	})
	if err != nil {
		restore()
		return nil, fmt.Errorf("keep threads off cpu %d: %w", cpu, err)
	}
	return restore, nil
}
