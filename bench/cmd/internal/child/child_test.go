package child

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain runs as the parent of TestChildDiesWithParent when that test
// starts this binary with AFXDP_CHILD_PARENT set: it starts sleep with
// Start, prints its pid and waits to be killed.
func TestMain(m *testing.M) {
	if os.Getenv("AFXDP_CHILD_PARENT") == "1" {
		cmd := exec.Command("sleep", "60")
		if err := Start(cmd); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(cmd.Process.Pid)
		cmd.Wait()
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestChildDiesWithParent starts a parent that starts a child with Start,
// kills the parent with SIGKILL and checks that the child dies too. A
// child started by exec.Cmd.Start alone went on running, re-parented.
func TestChildDiesWithParent(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), "AFXDP_CHILD_PARENT=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		parent.Process.Kill()
		parent.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, aerr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || aerr != nil {
		t.Fatalf("parent said %q (%v), want its child's pid", line, err)
	}
	if !Running(pid) {
		t.Fatalf("child %d not running before its parent was killed", pid)
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); Running(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child %d still running 10s after its parent was killed", pid)
		}
	}
}

// TestStartFromEndingThread starts a child from a goroutine locked to its
// thread that then exits, which ends the thread, and checks that the
// child did not get the parent-death signal with it: Start forks from a
// thread of its own, which lives as long as the child.
func TestStartFromEndingThread(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	type res struct {
		tid int
		err error
	}
	c := make(chan res)
	var r res
	for {
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == os.Getpid() {
				// The main thread, which the runtime keeps when a
				// goroutine locked to it exits: try another.
				runtime.UnlockOSThread()
				c <- res{}
				return
			}
			// Never unlocked: the thread ends with this goroutine.
			c <- res{unix.Gettid(), Start(cmd)}
		}()
		if r = <-c; r.tid != 0 {
			break
		}
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer cmd.Process.Kill()
	task := fmt.Sprintf("/proc/self/task/%d", r.tid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d of the goroutine that called Start did not end", r.tid)
		}
	}
	// Had the child been sent SIGKILL, it dies of that whatever comes
	// next.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v, want it killed by SIGTERM", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("child ended with %v, want it killed by SIGTERM: it got the parent-death signal when its caller's thread ended", err)
	}
}
