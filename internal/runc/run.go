package runc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"time"
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

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$`)

// Run runs the bundle in dir with `runc run` in the foreground and waits for
// it to exit. Whatever happens it then runs `runc delete --force`, so that no
// container state is left behind, unless runc refused the ID because
// another container has it: that one is not touched. It returns an error, together with the
// Result, when the container exits non-zero, is killed on timeout (the
// error then wraps context.DeadlineExceeded) or cannot start.
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

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	res := &Result{ID: o.ID, ExitCode: -1}
	var stdout, stderr bytes.Buffer
	cmd := runcCmd(ctx, "run", "--bundle", dir, o.ID)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// On expiry, kill the container itself: killing only the runc
	// process would leave the container's process running.
	cmd.Cancel = func() error {
		kctx, kcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer kcancel()
		runcCmd(kctx, "kill", o.ID, "KILL").Run()
		return nil
	}
	// If runc does not exit after the kill (or the container's process
	// keeps our pipes open), stop waiting for it.
	cmd.WaitDelay = 5 * time.Second

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
		return res, fmt.Errorf("run container %s: killed (timeout %v): %w", o.ID, o.Timeout, ctx.Err())
	case errors.As(runErr, &ee):
		res.ExitCode = ee.ExitCode()
		return res, fmt.Errorf("run container %s: %w: %s", o.ID, runErr, lastLine(res.Stderr))
	case runErr != nil:
		return res, fmt.Errorf("run container %s: %w", o.ID, runErr)
	}
	res.ExitCode = 0
	return res, nil
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return b
}
