package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/afxdp/afxdp/bench/cmd/internal/onerun"
	"github.com/afxdp/afxdp/internal/testenv"
)

// compareRun is compare running in a process of its own.
type compareRun struct {
	cmd  *exec.Cmd
	done chan error // cmd.Wait's result, put back once received
	said func() string
}

// startCompare runs compare with TMPDIR tmp and the afxdp nap row alone,
// whose trial warms up for ten minutes: it holds the lock, and its
// namespace and veth pair, until it is stopped. setup, if not nil,
// changes its command before it starts. When the test ends, compare is
// interrupted if it runs (killed if it still runs 30s later) and the
// namespaces named after it are removed.
func startCompare(t *testing.T, tmp string, setup func(*exec.Cmd)) *compareRun {
	t.Helper()
	stderr, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stderr.Close() })
	r := &compareRun{done: make(chan error, 1)}
	r.said = func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
	r.cmd = exec.Command(os.Args[0], "-only", "^afxdp rxdrop nap$", "-rounds", "1", "-d", "1s", "-warmup", "10m")
	r.cmd.Env = append(os.Environ(), "AFXDP_COMPARE_MAIN=1", "TMPDIR="+tmp)
	r.cmd.Stderr = stderr
	if setup != nil {
		setup(r.cmd)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case err := <-r.done:
			r.done <- err
		default:
			r.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-r.done:
				r.done <- err
			case <-time.After(30 * time.Second):
				t.Errorf("compare (pid %d) still running 30s after SIGTERM: killed", r.cmd.Process.Pid)
				r.cmd.Process.Kill()
				r.done <- <-r.done
			}
		}
		left, _ := filepath.Glob(filepath.Join("/var/run/netns", "afxcmp"+strconv.Itoa(r.cmd.Process.Pid)+"-*"))
		for _, p := range left {
			netns.DeleteNamed(filepath.Base(p))
		}
	})
	return r
}

// wait waits up to d for compare to exit and returns how it exited.
func (r *compareRun) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(d):
		t.Fatalf("compare (pid %d) still running after %v:\n%s", r.cmd.Process.Pid, d, r.said())
		return nil
	}
}

// waitNamed waits for compare to say which namespace it made, which it
// does once it holds the lock and has built its topology, and returns the
// namespace's name.
func (r *compareRun) waitNamed(t *testing.T) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^veth \S+ <-> \S+ \(netns (\S+)\)`)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(r.said()); m != nil {
			return m[1]
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("compare (pid %d) ended (%v) before it made its topology:\n%s", r.cmd.Process.Pid, err, r.said())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("compare (pid %d) made no topology within a minute:\n%s", r.cmd.Process.Pid, r.said())
		}
	}
}

// refusedBy checks that r, started while the holder (its command and pid)
// ran, exited at once with an error naming it and said nothing else.
func (r *compareRun) refusedBy(t *testing.T, command string, pid int) {
	t.Helper()
	start := time.Now()
	err := r.wait(t, 10*time.Second)
	want := fmt.Sprintf("compare: another %s (pid %d) is running: two at once would measure each other; wait for it or stop it\n", command, pid)
	if err == nil || r.said() != want {
		t.Errorf("compare started while %s %d ran: %v, said:\n%s\nwant it to fail, saying only:\n%s", command, pid, err, r.said(), want)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("compare refused to run %v after it started; want at once", took)
	}
	left, _ := filepath.Glob(filepath.Join("/var/run/netns", "afxcmp"+strconv.Itoa(r.cmd.Process.Pid)+"-*"))
	if len(left) > 0 {
		t.Errorf("the refused compare made namespaces %q", left)
	}
}

// TestOneAtATime starts a compare while another runs: the second must
// refuse at once, naming the first, before it makes anything (namespace,
// veth pair, temporary directory) and before it removes what dead
// compares left, which would confuse the first (it would remove
// /var/run/dpdk from under it). It used to measure alongside the first.
// The first then is killed outright (SIGKILL), with no chance to let go
// of the lock: the next compare runs, and removes what it left.
func TestOneAtATime(t *testing.T) {
	testenv.RequirePrivileged(t)
	first := startCompare(t, t.TempDir(), nil)
	firstNS := first.waitNamed(t)

	// What a compare that is gone left: removeStale would remove it.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	stale := filepath.Join(tmp, "afxcmp"+strconv.Itoa(gone.Process.Pid)+"-cref123")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	second := startCompare(t, tmp, nil)
	second.refusedBy(t, "compare", first.cmd.Process.Pid)
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 1 || ents[0].Name() != filepath.Base(stale) {
		t.Errorf("the refused compare's TMPDIR holds %v (%v); want only %s, as it was", ents, err, filepath.Base(stale))
	}

	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 10*time.Second)
	third := startCompare(t, t.TempDir(), nil)
	third.waitNamed(t)
	firstPath := filepath.Join("/var/run/netns", firstNS)
	if _, err := os.Stat(firstPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("namespace %s of the killed compare, once the next runs: %v; want it removed", firstNS, err)
	}
	if !strings.Contains(third.said(), "compare: removed namespace "+firstPath+", left by a compare that is gone\n") {
		t.Errorf("the compare after the killed one did not say it removed %s:\n%s", firstPath, third.said())
	}
	if err := third.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	third.wait(t, 30*time.Second)
}

// TestPassedLockRuns runs compare as results does, under the lock that
// results holds and passes it: it runs, while a compare started beside it
// is refused, naming results.
func TestPassedLockRuns(t *testing.T) {
	testenv.RequirePrivileged(t)
	l, err := onerun.Acquire("results")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	child := startCompare(t, t.TempDir(), l.Pass)
	child.waitNamed(t)
	other := startCompare(t, t.TempDir(), nil)
	other.refusedBy(t, "results", os.Getpid())
	if err := child.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	child.wait(t, 30*time.Second)
}
