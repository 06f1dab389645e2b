package cni_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/cni"
	"github.com/afxdp/afxdp/internal/testenv"
)

// hangingPlugins makes a plugin directory whose macvlan plugin answers
// ADD with result (or hangs when result is "") and hangs on every other
// command. A hanging plugin starts a sleep that keeps its stdout and
// stderr open, as a delegated IPAM plugin does, and then waits for it;
// the sleeps are killed at cleanup.
func hangingPlugins(t *testing.T, result string) string {
	t.Helper()
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	add := "sleep 30 & echo $! >>" + pids + "; wait"
	if result != "" {
		add = "printf '%s' '" + result + "'"
	}
	script := "#!/bin/sh\ncase \"$CNI_COMMAND\" in\nADD) " + add + " ;;\n*) sleep 30 & echo $! >>" + pids + "; wait ;;\nesac\n"
	for _, p := range []string{"macvlan", "host-local"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return dir
}

// await returns fn's error, or fails the test if fn has not returned
// within a minute: a bound on a hang, far above the timeouts in play.
func await(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("%s has not returned after a minute: a hanging plugin holds it", what)
		return nil
	}
}

// A plugin that hangs on ADD is killed when Attach's context ends, and
// the DEL that Attach then runs to clean up is bounded too, although the
// context has ended: Attach returns, with an error that says the context
// ended.
func TestAttachHangingPluginBounded(t *testing.T) {
	testenv.RequirePrivileged(t)
	defer cni.SetTimeouts(500*time.Millisecond, 200*time.Millisecond)()
	dir := hangingPlugins(t, "")
	ns := testenv.NewNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := await(t, "Attach", func() error {
		a, err := cni.Attach(ctx, cni.Config{Plugin: "macvlan", Master: "lo", NetnsPath: ns.Path(), PluginDir: dir})
		if err == nil {
			a.Close()
			return errors.New("no error")
		}
		return err
	})
	t.Log(err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ADD") {
		t.Errorf("Attach with a hanging plugin: %v; want an error naming ADD that wraps context.DeadlineExceeded", err)
	}
}

// Close of an attachment whose plugin hangs on DEL returns, with an
// error naming DEL, instead of waiting for the plugin for good.
func TestCloseHangingPluginBounded(t *testing.T) {
	testenv.RequirePrivileged(t)
	defer cni.SetTimeouts(500*time.Millisecond, 200*time.Millisecond)()
	ns := testenv.NewNetns(t)
	result := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"` + ns.Path() +
		`"}],"ips":[{"interface":0,"address":"10.1.2.3/24"}]}`
	dir := hangingPlugins(t, result)
	a, err := cni.Attach(context.Background(), cni.Config{Plugin: "macvlan", Master: "lo", NetnsPath: ns.Path(), PluginDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = await(t, "Close", a.Close)
	t.Log(err)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "DEL") {
		t.Errorf("Close with a plugin hanging on DEL: %v; want an error naming DEL that wraps context.DeadlineExceeded", err)
	}
	if _, err := os.Stat(a.IPAMDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("IPAM dir %s left after Close (%v)", a.IPAMDir, err)
	}
}
