// Package container starts a child process the way a container runtime
// would start an unprivileged workload, so that tests can check what such a
// workload can and cannot do: new mount, PID, IPC and UTS namespaces, an
// existing network namespace joined before exec, a non-root UID and GID,
// and no capabilities but the ambient ones asked for (CAP_NET_RAW for
// AF_XDP).
//
// Tests usually re-execute their own binary as the child: [Executable]
// copies it where another UID may run it, [Options.Child] names the
// function the child runs, and the test's TestMain calls [RunChild] first.
package container

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// ChildEnv is the environment variable that tells a re-executed test binary
// which child function to run.
const ChildEnv = "AFXDP_CONTAINER_CHILD"

// Nobody is the default UID and GID of a child.
const Nobody = 65534

// Options configures [Start].
type Options struct {
	// Path is the program to run. Required; see Executable.
	Path string
	// Args are the program's arguments (without argv[0]).
	Args []string
	// Child, when set, is put in the environment as ChildEnv=Child.
	Child string
	// Env is added to the child's environment, which otherwise holds only
	// PATH and ChildEnv.
	Env []string

	// UID and GID the child runs as, between 1 and 4294967294. The zero
	// value means 65534 (nobody), so root cannot be asked for: the
	// point is an unprivileged child. Negative values and values above
	// 4294967294 are refused: IDs are 32 bits, and 4294967295 is
	// (uid_t)-1, no user.
	UID, GID int

	// Caps are the capabilities the child keeps, as ambient capabilities
	// (unix.CAP_NET_RAW, ...); each must be one this kernel has
	// (/proc/sys/kernel/cap_last_cap). Default: none.
	Caps []uintptr

	// Netns is the path of a network namespace the child joins (for
	// example netenv.Netns.Path()). Default: the caller's.
	Netns string

	// ShareNamespaces keeps the caller's mount, PID, IPC and UTS
	// namespaces instead of making new ones.
	ShareNamespaces bool

	// Memlock, when not zero, is the child's soft RLIMIT_MEMLOCK in bytes
	// (an unprivileged process charges AF_XDP UMEM against it). Raising it
	// above the caller's hard limit needs CAP_SYS_RESOURCE.
	Memlock uint64

	// Stdin is the child's standard input; default: empty.
	Stdin io.Reader
	// Stdout and Stderr receive the child's output; default: discarded.
	Stdout, Stderr io.Writer

	// ExtraFiles are passed as descriptors 3, 4, ...
	ExtraFiles []*os.File
}

// Process is a started child.
type Process struct {
	Cmd *exec.Cmd

	waitOnce sync.Once
	waitErr  error
}

// rlimitMu serialises the temporary change of this process's
// RLIMIT_MEMLOCK that a child inherits.
var rlimitMu sync.Mutex

// Start starts the child. It is killed with SIGKILL if the calling thread's
// process dies (Pdeathsig).
func Start(opts *Options) (*Process, error) {
	if opts == nil || opts.Path == "" {
		return nil, errors.New("start child: Path is required")
	}
	o := *opts
	if o.UID == 0 {
		o.UID = Nobody
	}
	if o.GID == 0 {
		o.GID = Nobody
	}
	for _, id := range []struct {
		name string
		v    int
	}{{"UID", o.UID}, {"GID", o.GID}} {
		// Compared as int64 so that the bound compiles where int is 32
		// bits; uint32(v) would turn 1<<32 into 0, root.
		if id.v < 0 || int64(id.v) >= math.MaxUint32 {
			return nil, fmt.Errorf("start child: %s %d: must be between 1 and %d", id.name, id.v, uint32(math.MaxUint32-1))
		}
	}
	if len(o.Caps) > 0 {
		// os/exec indexes a 64-bit set with each number in the forked
		// child, where a number of 64 or more crashes the process, and
		// the kernel refuses one it does not know with a bare EINVAL.
		last, err := lastCap()
		if err != nil {
			return nil, fmt.Errorf("start child: Caps: %w", err)
		}
		for i, c := range o.Caps {
			if c > last {
				return nil, fmt.Errorf("start child: Caps[%d] %d: not a capability of this kernel (the last is %d)", i, c, last)
			}
		}
	}
	cmd := exec.Command(o.Path, o.Args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if o.Child != "" {
		cmd.Env = append(cmd.Env, ChildEnv+"="+o.Child)
	}
	cmd.Env = append(cmd.Env, o.Env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	cmd.ExtraFiles = o.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: uint32(o.UID), Gid: uint32(o.GID), Groups: []uint32{}},
		AmbientCaps: o.Caps,
		Pdeathsig:   syscall.SIGKILL,
	}
	if !o.ShareNamespaces {
		cmd.SysProcAttr.Cloneflags = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS
	}

	start := cmd.Start
	if o.Memlock != 0 {
		inner := start
		start = func() error {
			rlimitMu.Lock()
			defer rlimitMu.Unlock()
			var old unix.Rlimit
			if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
				return fmt.Errorf("get RLIMIT_MEMLOCK: %w", err)
			}
			want := unix.Rlimit{Cur: o.Memlock, Max: max(o.Memlock, old.Max)}
			if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &want); err != nil {
				return fmt.Errorf("set RLIMIT_MEMLOCK: %w", err)
			}
			defer unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old)
			return inner()
		}
	}
	if o.Netns != "" {
		inner := start
		start = func() error {
			var startErr error
			err := inNetns(o.Netns, func() error { startErr = inner(); return startErr })
			if err != nil && startErr == nil {
				// Entering the namespace failed, not the start.
				return fmt.Errorf("Netns %s: %w", o.Netns, err)
			}
			return err
		}
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("start child %s: %w", filepath.Base(o.Path), err)
	}
	return &Process{Cmd: cmd}, nil
}

// inNetns runs fn on a thread inside the network namespace at path. A child
// forked by fn inherits the namespace: the fork happens on this thread.
func inNetns(path string, fn func() error) error { return sys.InNetnsPath(path, fn) }

// lastCap is the highest capability number of the running kernel, at most
// 63: the capability sets that os/exec hands the kernel have 64 bits.
func lastCap() (uintptr, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("read the last capability: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 8)
	if err != nil {
		return 0, fmt.Errorf("read the last capability: %w", err)
	}
	return uintptr(min(n, 63)), nil
}

// Wait waits for the child to exit; later calls return the same result.
func (p *Process) Wait() error {
	p.waitOnce.Do(func() { p.waitErr = p.Cmd.Wait() })
	return p.waitErr
}

// Kill sends SIGKILL and reaps the child. Killing a child that already
// exited is not an error.
func (p *Process) Kill() error {
	if err := p.Cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill child %d: %w", p.Cmd.Process.Pid, err)
	}
	p.Wait()
	return nil
}

// Executable copies the running program into a new directory under the
// system's temporary directory, both world-readable and executable, so that
// a child with another UID may run it (go test builds its binaries, and
// t.TempDir makes its directories, where only their owner can enter). The
// copy is removed at tb's cleanup. It returns the copy's path.
func Executable(tb testing.TB) string {
	tb.Helper()
	path, err := copyExecutable()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(filepath.Dir(path)) })
	return path
}

func copyExecutable() (_ string, err error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("copy executable: %w", err)
	}
	dir, err := os.MkdirTemp("", "afxdp-container-")
	if err != nil {
		return "", fmt.Errorf("copy executable: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("copy executable: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return "", fmt.Errorf("copy executable: %w", err)
	}
	defer src.Close()
	path := filepath.Join(dir, filepath.Base(self))
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return "", fmt.Errorf("copy executable: %w", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", fmt.Errorf("copy executable: %w", err)
	}
	if err := dst.Close(); err != nil {
		return "", fmt.Errorf("copy executable: %w", err)
	}
	return path, nil
}

// RunChild runs, and exits with the status of, the child function named by
// ChildEnv when the variable is set; otherwise it returns at once. Call it
// first in TestMain.
func RunChild(children map[string]func() int) {
	name := os.Getenv(ChildEnv)
	if name == "" {
		return
	}
	fn, ok := children[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "container: no child function %q\n", name)
		os.Exit(2)
	}
	os.Exit(fn())
}

// Caps returns the process's effective capability set, as the bit mask of
// /proc/self/status's CapEff line.
func Caps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	var v uint64
	for _, line := range strings.Split(string(b), "\n") {
		if n, _ := fmt.Sscanf(line, "CapEff:\t%x", &v); n == 1 {
			return v, nil
		}
	}
	return 0, errors.New("read capabilities: no CapEff line")
}
