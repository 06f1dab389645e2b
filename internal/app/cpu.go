package app

import (
	"fmt"
	"os"
	"runtime"
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
// the thread that makes them. It does nothing on a one-CPU machine.
func KeepOffCPU(cpu int) error {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return os.NewSyscallError("sched_getaffinity", err)
	}
	all.Clear(cpu)
	if all.Count() == 0 {
		return nil
	}
	self := unix.Gettid()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		var tid int
		if _, err := fmt.Sscan(t.Name(), &tid); err != nil || tid == self {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &all); err != nil && err != unix.ESRCH {
			return os.NewSyscallError("sched_setaffinity", err)
		}
	}
	return nil
}
