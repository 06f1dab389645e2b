package runc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RunOptions configures [Run].
type RunOptions struct {
	// ID names the container. Default: "afxdp-" and random hex digits.
	ID string
	// Runc is the runc binary. Default "runc", looked up in PATH.
	Runc string
	// Root is runc's state directory (runc --root). Default: runc's own
	// (/run/runc for root).
	Root string
	// Timeout bounds the run; the container is killed when it expires.
	// Default 60s. The context's deadline applies as well.
	Timeout time.Duration
}

// Result is what a container run produced.
type Result struct {
	// ID is the container's ID.
	ID string
	// Stdout and Stderr are the container's output; Stderr also holds
	// runc's own messages.
	Stdout, Stderr []byte
	// ExitCode is the exit status of `runc run`, which is the container
	// process's; -1 when it was killed or did not start.
	ExitCode int
}

// waitDelay bounds how long Run goes on trying to kill the container once
// its context has ended, and then how long it waits for runc to exit
// before killing runc itself.
var waitDelay = 5 * time.Second

// killRetry is the pause between attempts to kill a container that runc
// has not made yet.
const killRetry = 10 * time.Millisecond

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$`)

// Run runs the bundle in dir with `runc run` in the foreground and waits for
// it to exit. Whatever happens it then runs `runc delete --force`, so that no
// container state is left behind, and removes the cgroup directories that
// a `runc run` killed before it recorded the container leaves (only empty
// ones: one that still holds processes is reported), unless runc refused
// the ID because another container has it: that one is not touched. It
// returns an error, together with the Result, when the container exits
// non-zero, cannot start, or is killed on timeout or because ctx ended
// (the error then wraps context.DeadlineExceeded or ctx's error). A
// container that runc is still making when that happens is killed once it
// exists.
func Run(ctx context.Context, dir string, opts *RunOptions) (_ *Result, err error) {
	var o RunOptions
	if opts != nil {
		o = *opts
	}
	if o.ID == "" {
		var b [6]byte
		rand.Read(b[:])
		o.ID = "afxdp-" + hex.EncodeToString(b[:])
	}
	if !idRE.MatchString(o.ID) {
		return nil, fmt.Errorf("run container: ID %q: must be letters, digits and _.+- (at most 128)", o.ID)
	}
	if o.Runc == "" {
		o.Runc = "runc"
	}
	bin, err := exec.LookPath(o.Runc)
	if err != nil {
		return nil, fmt.Errorf("run container %s: find runc: %w", o.ID, err)
	}
	if o.Timeout == 0 {
		o.Timeout = 60 * time.Second
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("run container %s: Timeout %v: must not be negative", o.ID, o.Timeout)
	}
	var global []string
	if o.Root != "" {
		global = []string{"--root", o.Root}
	}
	runcCmd := func(ctx context.Context, args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, bin, append(append([]string(nil), global...), args...)...)
	}

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	res := &Result{ID: o.ID, ExitCode: -1}
	var stdout, stderr bytes.Buffer
	cmd := runcCmd(ctx, "run", "--bundle", dir, o.ID)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// ours says whether the container with the ID is this run's: one
	// runc made from this bundle, not another container that had the ID
	// already and that runc is about to refuse the ID for.
	bundle, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("run container %s: %w", o.ID, err)
	}
	if real, err := filepath.EvalSymlinks(bundle); err == nil {
		bundle = real
	}
	// Where runc puts the container's cgroups, read before runc runs.
	cgInner, cgOK := cgroupInner(dir, o.ID)
	ours := func(ctx context.Context) bool {
		out, err := runcCmd(ctx, "state", o.ID).Output()
		var st struct {
			Bundle string `json:"bundle"`
		}
		return err == nil && json.Unmarshal(out, &st) == nil && st.Bundle == bundle
	}
	// On expiry, kill the container itself: killing only the runc
	// process would leave the container's process running. The
	// container may not exist yet, while runc is still setting it up,
	// and runc would go on to start it: try again until the kill lands
	// or runc has exited, for at most waitDelay.
	cmd.Cancel = func() error {
		until := time.Now().Add(waitDelay)
		for {
			kctx, kcancel := context.WithTimeout(context.Background(), 10*time.Second)
			killed := ours(kctx) && runcCmd(kctx, "kill", o.ID, "KILL").Run() == nil
			kcancel()
			if killed || time.Now().After(until) {
				return nil
			}
			if errors.Is(cmd.Process.Signal(syscall.Signal(0)), os.ErrProcessDone) {
				return nil
			}
			time.Sleep(killRetry)
		}
	}
	// If runc does not exit after the kill (or the container's process
	// keeps our pipes open), stop waiting for it.
	cmd.WaitDelay = waitDelay

	// taken is set when runc refused the ID because a container has it
	// already: that container is someone else's, and stays.
	taken := false
	defer func() {
		if taken {
			return
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer dcancel()
		out, derr := runcCmd(dctx, "delete", "--force", o.ID).CombinedOutput()
		if derr != nil && !bytes.Contains(out, []byte("does not exist")) {
			err = errors.Join(err, fmt.Errorf("delete container %s: %w: %s", o.ID, derr, bytes.TrimSpace(out)))
			return
		}
		// runc has no container with the ID now, but a runc run that
		// died before it recorded the container may have left its
		// cgroups, which runc delete cannot see.
		if cgOK {
			err = errors.Join(err, removeCgroups(o.ID, cgInner))
		}
	}()

	runErr := cmd.Run()
	res.Stdout, res.Stderr = stdout.Bytes(), stderr.Bytes()
	if runErr != nil && bytes.Contains(res.Stderr, []byte("container with given ID already exists")) {
		taken = true
		return res, fmt.Errorf("run container %s: the ID is taken by another container, left as it is: %w", o.ID, runErr)
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		what := "killed"
		if cmd.Process == nil {
			what = "not started"
		}
		if parent.Err() != nil {
			return res, fmt.Errorf("run container %s: %s: %w", o.ID, what, parent.Err())
		}
		return res, fmt.Errorf("run container %s: %s (timeout %v): %w", o.ID, what, o.Timeout, ctx.Err())
	case errors.As(runErr, &ee):
		res.ExitCode = ee.ExitCode()
		return res, fmt.Errorf("run container %s: %w: %s", o.ID, runErr, exitReason(res.ExitCode, res.Stderr))
	case runErr != nil:
		return res, fmt.Errorf("run container %s: %w", o.ID, runErr)
	}
	res.ExitCode = 0
	return res, nil
}

// exitReason says why `runc run` exited with code: runc's last message,
// or, when it wrote none, the signal that killed the container's process
// (runc exits with 128 plus its number, as a shell does). Code -1 means
// that a signal killed runc itself.
func exitReason(code int, stderr []byte) string {
	if code < 0 {
		return "runc itself was killed, not the container's process"
	}
	if l := lastLine(stderr); len(l) > 0 {
		return string(l)
	}
	if code > 128 && code < 128+65 {
		name := ""
		if n := unix.SignalName(syscall.Signal(code - 128)); n != "" {
			name = " (" + n + ")"
		}
		return fmt.Sprintf("the container's process was killed by signal %d%s, or exited with %d", code-128, name, code)
	}
	return fmt.Sprintf("the container's process exited with %d", code)
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return b
}
