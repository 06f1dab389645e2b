// Package onerun lets one of bench/cmd's measuring commands (compare,
// results) run on a machine at a time. Two at once share its CPUs and
// measure each other, and each takes what the other makes for its own:
// compare removes DPDK's /var/run/dpdk when its testpmd made it and it is
// empty, which another compare's bookkeeping cannot follow, and a run's
// removal of what dead runs left (package stale) must not race a live
// run that is about to use it.
//
// The lock is flock(2), exclusive and non-blocking, on a file at a fixed
// path, Path, outside the temporary directory. The file stays there
// between runs: removing a file that is locked would let the next two
// runs lock two different files, one removed and one new. The holder
// writes its pid and its command into the file, for the message of a run
// that is refused. The kernel drops the lock when the last descriptor of
// the file's open file description is closed, however its holder ends: a
// run killed outright (SIGKILL) blocks no one once it is gone, and the
// children it passed its lock to (Pass) are gone too.
//
// A command that runs another of them (results runs compare) passes its
// lock on with Pass: the child inherits the open file itself, and the
// child's Acquire takes the lock through it. An environment variable
// names the descriptor, but alone it lets nothing through: Acquire checks
// that the descriptor is the lock file and that the lock can be taken on
// it, which only the holder's own open file can while another holds it.
package onerun

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Path is the lock file. Tests point it elsewhere, so that their runs
// neither wait for nor refuse real ones.
var Path = "/run/afxdp-bench.lock"

// envFD names the descriptor through which a child inherits its parent's
// lock (see Pass).
const envFD = "AFXDP_BENCH_LOCK_FD"

// Lock is the right to run, held from Acquire to Close.
type Lock struct {
	f *os.File
}

// BusyError is Acquire's error when another run holds the lock.
type BusyError struct {
	Path    string // the lock file
	PID     int    // the holder's pid; 0: not known
	Command string // the holder's command ("compare"); "": not known
}

func (e *BusyError) Error() string {
	who := "another compare or results (holding " + e.Path + ")"
	if e.PID > 0 && e.Command != "" {
		who = fmt.Sprintf("another %s (pid %d)", e.Command, e.PID)
	}
	return who + " is running: two at once would measure each other; wait for it or stop it"
}

// Unwrap makes errors.Is(err, syscall.EWOULDBLOCK) true, as for flock.
func (e *BusyError) Unwrap() error { return syscall.EWOULDBLOCK }

// Acquire takes the lock for command ("compare": what the message of a
// run refused calls it) and returns at once: with a *BusyError when
// another run holds it. A process whose parent passed it the lock (Pass)
// gets that lock.
func Acquire(command string) (*Lock, error) {
	if l := inherited(); l != nil {
		return l, nil
	}
	f, err := os.OpenFile(Path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock out other runs: %w", err)
	}
	if err := flock(f); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, busy(f)
		}
		return nil, fmt.Errorf("lock %s: %w", Path, err)
	}
	rec := []byte(fmt.Sprintf("%d %s\n", os.Getpid(), command))
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(rec, 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write the holder into %s: %w", Path, err)
	}
	return &Lock{f: f}, nil
}

// flock takes the lock on f, exclusive, without waiting.
func flock(f *os.File) error {
	c, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := c.Control(func(fd uintptr) {
		ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("flock", ferr)
}

// busy returns the error for a lock that another holds, naming the holder
// that f, the lock file, names. A holder writes its name once it has the
// lock: until it has, the file may be empty or name one that is gone, so
// busy reads it again for a little while.
func busy(f *os.File) error {
	e := &BusyError{Path: Path}
	for try := 0; ; try++ {
		b := make([]byte, 128)
		n, _ := f.ReadAt(b, 0)
		var pid int
		var cmd string
		if _, err := fmt.Sscanf(string(b[:n]), "%d %s", &pid, &cmd); err == nil && pid > 0 &&
			!errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			e.PID, e.Command = pid, cmd
			return e
		}
		if try == 10 {
			// A holder that is gone while its lock is not: a child it
			// passed the lock to still runs.
			return e
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inherited returns the lock that this process's parent passed it (Pass),
// or nil when there is none: no descriptor named, or one that is not the
// lock file, or one whose open file does not hold the lock while another
// does. Either way the variable goes from the environment, so that this
// process's children do not see it.
func inherited() *Lock {
	v, ok := os.LookupEnv(envFD)
	if !ok {
		return nil
	}
	os.Unsetenv(envFD)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	var got, want unix.Stat_t
	if unix.Fstat(fd, &got) != nil || unix.Stat(Path, &want) != nil || got.Dev != want.Dev || got.Ino != want.Ino {
		return nil
	}
	// The holder's open file takes the lock again at once (flock locks
	// belong to the open file, not to the process); any other is refused
	// while the holder lives.
	if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return nil
	}
	// Not for this process's own children (testpmd, gcc): they would
	// hold the lock after this process had gone.
	unix.CloseOnExec(fd)
	return &Lock{f: os.NewFile(uintptr(fd), Path)}
}

// Pass lets cmd, a command whose Acquire would otherwise be refused while
// l is held (compare, run by results), run under l: cmd inherits l's
// open file. Call it before cmd starts. The lock is held until l is
// closed and cmd has exited, whichever is later.
func (l *Lock) Pass(cmd *exec.Cmd) {
	cmd.ExtraFiles = append(cmd.ExtraFiles, l.f)
	// ExtraFiles[i] is descriptor 3+i in the child.
	cmd.Env = append(cmd.Environ(), envFD+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
}

// Close lets the lock go, unless a child that l was passed to still
// holds it. It closes the file and does not unlock it: flock's LOCK_UN
// would unlock it for that child, or for the parent that passed it to
// this process, too. A second Close returns nil.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// testLockEnv names the lock file of a test binary's runs (UseTestLock).
const testLockEnv = "AFXDP_TEST_BENCH_LOCK"

// UseTestLock is for the TestMain of a command's tests, which run the
// command in process and as processes of their own, alongside other
// commands' tests: it points Path at a lock file of the tests' own, so
// that their runs neither refuse nor are refused by real ones, and names
// it in the environment for the processes the tests start. In such a
// process, where the environment names one already, it points Path at
// that. done removes the file the call made, if any.
func UseTestLock() (done func(), err error) {
	if p := os.Getenv(testLockEnv); p != "" {
		Path = p
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", "benchlock")
	if err != nil {
		return nil, err
	}
	Path = filepath.Join(dir, "bench.lock")
	os.Setenv(testLockEnv, Path)
	return func() { os.RemoveAll(dir) }, nil
}
