// Package child starts the processes of bench/cmd's commands so that they
// do not outlive the command, even when it is killed with SIGKILL and so
// has no chance to end them itself.
package child

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Start starts cmd as [exec.Cmd.Start] does, with SysProcAttr.Pdeathsig
// set to SIGKILL unless the caller chose another signal: the kernel sends
// the child that signal when this process dies, however it dies. The
// caller waits for cmd as usual.
//
// Linux sends the parent-death signal when the thread that forked the
// child exits, not when its process does, and the Go runtime ends a
// thread when a goroutine locked to it exits. Start therefore forks from
// a goroutine of its own, locked to its thread, that stays locked until
// the child has exited: it waits with waitid and WNOWAIT, which leaves
// the child for cmd.Wait to reap.
//
// Only the child gets the signal. A child that starts processes of its
// own must pass it on: `ip netns exec` does, for it execs the command in
// its own process; `go run` and `go test`, whose programs run in
// processes of their own, do not.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if cmd.SysProcAttr.Pdeathsig == 0 {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := cmd.Start()
		pid := 0
		if err == nil {
			pid = cmd.Process.Pid
		}
		started <- err
		if err != nil {
			runtime.UnlockOSThread()
			return
		}
		for {
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, unix.EINTR) {
				// nil: the child has exited; ECHILD: cmd.Wait has
				// reaped it already. Either way it is gone, and this
				// thread may end.
				break
			}
		}
		runtime.UnlockOSThread()
	}()
	return <-started
}

// Running reports whether pid is a process that has not exited: there in
// /proc, and not a zombie waiting to be reaped. The tests of the commands
// that use Start watch their children end with it.
func Running(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// PID (COMM) STATE ...; COMM may hold spaces and parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
