package app

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func rusage(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcessCPU is the CPU time (user and system) this process has used.
func ProcessCPU() time.Duration { return rusage(unix.RUSAGE_SELF) }

// ThreadCPU is the CPU time the calling thread has used; lock the
// goroutine to its thread (runtime.LockOSThread) for it to mean anything.
func ThreadCPU() time.Duration { return rusage(unix.RUSAGE_THREAD) }

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
// The CPUs the threads move to are those the process may use, taken as
// the union of its threads' affinities less cpu; the calling thread's own
// would not do, as it is usually pinned to cpu already. On a machine with
// no other CPU it does nothing. restore gives every thread but the
// calling one that union back.
func KeepOffCPU(cpu int) (restore func() error, err error) {
	tids, err := threadIDs()
	if err != nil {
		return nil, fmt.Errorf("keep threads off cpu %d: %w", cpu, err)
	}
	var allowed unix.CPUSet
	for _, tid := range tids {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			if err == unix.ESRCH { // the thread has exited
				continue
			}
			return nil, fmt.Errorf("keep threads off cpu %d: %w", cpu, os.NewSyscallError("sched_getaffinity", err))
		}
		for i := range allowed {
			allowed[i] |= set[i]
		}
	}
	if cpu < 0 || !allowed.IsSet(cpu) {
		return nil, fmt.Errorf("keep threads off cpu %d: not one of this process's CPUs", cpu)
	}
	off := allowed
	off.Clear(cpu)
	if off.Count() == 0 {
		return func() error { return nil }, nil
	}
	self := unix.Gettid()
	setAll := func(set *unix.CPUSet) error {
		tids, err := threadIDs()
		if err != nil {
			return err
		}
		for _, tid := range tids {
			if tid == self {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
				return os.NewSyscallError("sched_setaffinity", err)
			}
		}
		return nil
	}
	if err := setAll(&off); err != nil {
		setAll(&allowed)
		return nil, fmt.Errorf("keep threads off cpu %d: %w", cpu, err)
	}
	return func() error {
		if err := setAll(&allowed); err != nil {
			return fmt.Errorf("give threads back cpu %d: %w", cpu, err)
		}
		return nil
	}, nil
}

// threadIDs lists this process's threads.
func threadIDs() ([]int, error) {
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
