package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/vishvananda/netlink"
)

func TestRun(t *testing.T) {
	testenv.RequirePrivileged(t)
	before := testenv.Snapshot(t)
	for _, size := range []int{64, 1514} {
		if err := run(context.Background(), io.Discard, 20_000, size); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
	}
	if after := testenv.Snapshot(t); after != before {
		t.Fatalf("leak: before %+v, after %+v", before, after)
	}
	if err := run(context.Background(), io.Discard, 10, 20); err == nil || !strings.Contains(err.Error(), "-size 20") {
		t.Fatalf("bad size: %v", err)
	}
}

// TestInterrupt stops the program with SIGINT in the middle of a long run
// and checks that it removed its links.
func TestInterrupt(t *testing.T) {
	testenv.RequirePrivileged(t)
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-n", "1000000000")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until it has made its veth pair and is moving frames.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "receiver ") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	// "veth pair HOST <-> PEER (...)": the host end is in our namespace.
	first, _, _ := strings.Cut(out.String(), "\n")
	fields := strings.Fields(first)
	if len(fields) < 5 || fields[0] != "veth" {
		t.Fatalf("unexpected first line %q", first)
	}
	host := fields[2]
	if _, err := netlink.LinkByName(host); err != nil {
		t.Fatalf("host end %s not there while running: %v", host, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	t.Logf("output:\n%s", out.String())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out.String(), "interrupted") {
		t.Fatalf("after SIGINT: %v", err)
	}
	if !strings.Contains(out.String(), "removed the veth pair") {
		t.Fatal("no cleanup message")
	}
	if _, err := netlink.LinkByName(host); err == nil {
		t.Errorf("link %s left behind", host)
	}
	_ = os.Remove(bin)
}
