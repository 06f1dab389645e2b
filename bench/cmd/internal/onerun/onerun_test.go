package onerun

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain runs this binary as a holder of the lock at
// $AFXDP_ONERUN_HOLDER when a test starts it so: it calls Acquire, says
// on its standard output what it got (and whether the lock's descriptor
// is closed on exec), holds the lock until its standard input ends, and
// exits.
func TestMain(m *testing.M) {
	if p := os.Getenv("AFXDP_ONERUN_HOLDER"); p != "" {
		Path = p
		l, err := Acquire("compare")
		if err != nil {
			fmt.Println("refused:", err)
			os.Exit(1)
		}
		flags, err := unix.FcntlInt(l.f.Fd(), unix.F_GETFD, 0)
		fmt.Printf("held cloexec=%v env=%q err=%v\n", flags&unix.FD_CLOEXEC != 0, os.Getenv(envFD), err)
		io.Copy(io.Discard, os.Stdin)
		if err := l.Close(); err != nil {
			fmt.Println("close:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// usePath points Path at a lock file of t's own for the rest of t.
func usePath(t *testing.T) {
	old := Path
	Path = filepath.Join(t.TempDir(), "bench.lock")
	t.Cleanup(func() { Path = old })
}

// wantBusy fails t unless err says that a compare with pid holds the
// lock.
func wantBusy(t *testing.T, err error, pid int) {
	t.Helper()
	want := fmt.Sprintf("another compare (pid %d) is running: two at once would measure each other; wait for it or stop it", pid)
	var be *BusyError
	if !errors.As(err, &be) || err.Error() != want || !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("Acquire while pid %d holds the lock: %v; want %q", pid, err, want)
	}
}

// TestSecondRefused takes the lock twice in this process: the second is
// refused at once, naming this process, and taken once the first lets
// go. A second Close returns nil.
func TestSecondRefused(t *testing.T) {
	usePath(t)
	l, err := Acquire("compare")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Acquire("results")
	wantBusy(t, err, os.Getpid())
	if d := time.Since(start); d > time.Second {
		t.Errorf("refused after %v; want at once", d)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	l, err = Acquire("results")
	if err != nil {
		t.Fatalf("Acquire once the holder closed its lock: %v", err)
	}
	defer l.Close()
	if b, err := os.ReadFile(Path); err != nil || string(b) != fmt.Sprintf("%d results\n", os.Getpid()) {
		t.Errorf("lock file holds %q (%v); want this process's pid and results", b, err)
	}
}

// holder is this test binary holding the lock in a process of its own.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	said  string // its first line
}

// startHolder starts a holder; setup, if not nil, changes its command
// first. It returns once the holder has said what it got.
func startHolder(t *testing.T, setup func(*exec.Cmd)) *holder {
	t.Helper()
	h := &holder{cmd: exec.Command(os.Args[0], "-test.run=^$")}
	h.cmd.Env = append(os.Environ(), "AFXDP_ONERUN_HOLDER="+Path)
	if setup != nil {
		setup(h.cmd)
	}
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		h.cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("holder said nothing: %v", err)
	}
	h.said = strings.TrimSpace(line)
	return h
}

// TestKilledHolderBlocksNoOne: a holder in another process refuses this
// one, naming it; killed with SIGKILL, with no chance to let go, it
// leaves the lock free.
func TestKilledHolderBlocksNoOne(t *testing.T) {
	usePath(t)
	h := startHolder(t, nil)
	if !strings.HasPrefix(h.said, "held ") {
		t.Fatalf("holder: %s", h.said)
	}
	_, err := Acquire("compare")
	wantBusy(t, err, h.cmd.Process.Pid)
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	l, err := Acquire("compare")
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Close()
}

// TestPass passes the lock to a child, which gets it while this process
// holds it, with its descriptor closed on exec and the variable gone from
// its environment; and checks that nothing else gets it: a child without
// the lock, or with the variable alone, or with the variable and another
// descriptor, or another open file of the lock file, is refused, naming
// the holder. A child that was passed the lock holds it after its parent
// lets go, until it exits.
func TestPass(t *testing.T) {
	usePath(t)
	l, err := Acquire("compare")
	defer l.Close()
	if err != nil {
		t.Fatal(err)
	}
	refused := fmt.Sprintf("refused: another compare (pid %d) is running", os.Getpid())
	other, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	again, err := os.Open(Path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for _, tc := range []struct {
		name  string
		setup func(*exec.Cmd)
		want  string
	}{
		{"none", nil, refused},
		{"variable alone", func(c *exec.Cmd) { c.Env = append(c.Env, envFD+"=3") }, refused},
		{"variable with stdin", func(c *exec.Cmd) { c.Env = append(c.Env, envFD+"=0") }, refused},
		{"another descriptor", func(c *exec.Cmd) {
			c.ExtraFiles = []*os.File{other}
			c.Env = append(c.Env, envFD+"=3")
		}, refused},
		{"another open file of the lock file", func(c *exec.Cmd) {
			c.ExtraFiles = []*os.File{again}
			c.Env = append(c.Env, envFD+"=3")
		}, refused},
		{"passed", l.Pass, `held cloexec=true env="" err=<nil>`},
		// The descriptor's number is not fixed.
		{"passed after another", func(c *exec.Cmd) {
			c.ExtraFiles = []*os.File{other}
			l.Pass(c)
		}, `held cloexec=true env="" err=<nil>`},
	} {
		h := startHolder(t, tc.setup)
		if !strings.HasPrefix(h.said, tc.want) {
			t.Errorf("%s: the child said %q; want %q", tc.name, h.said, tc.want)
		}
		h.stdin.Close()
		h.cmd.Wait()
	}

	// The passed child exits: this process holds the lock still.
	_, err = Acquire("results")
	wantBusy(t, err, os.Getpid())

	// This process lets go while the child runs: the child holds it.
	h := startHolder(t, l.Pass)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire("results"); !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("Acquire while the child that was passed the lock runs: %v; want it refused", err)
	}
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	l2, err := Acquire("results")
	if err != nil {
		t.Fatalf("Acquire once the child that was passed the lock exited: %v", err)
	}
	l2.Close()
}

// TestHolderNotNamed: a lock file that names no live process (its holder
// has not written itself in yet, or is gone while a child it passed the
// lock to runs) gives a message that names the lock file instead.
func TestHolderNotNamed(t *testing.T) {
	usePath(t)
	l, err := Acquire("compare")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{"", "junk\n", fmt.Sprintf("%d results\n", gone.Process.Pid)} {
		if err := os.WriteFile(Path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Acquire("compare")
		want := "another compare or results (holding " + Path + ") is running: two at once would measure each other; wait for it or stop it"
		if err == nil || err.Error() != want {
			t.Errorf("lock file holding %q: %v; want %q", content, err, want)
		}
	}
}
