package runc_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// running returns the PIDs of the processes whose command line, its
// arguments joined by spaces, contains cmdline (what `pgrep -f` matches).
// It reads /proc itself: pgrep (procps) is not on every machine, and a
// check that runs it would see nothing running where it is missing.
func running(t *testing.T, cmdline string) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, d := range dirs {
		// A process may end between the glob and the read.
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.TrimRight(string(b), "\x00")
		if strings.Contains(strings.ReplaceAll(args, "\x00", " "), cmdline) {
			pids = append(pids, filepath.Base(d))
		}
	}
	return pids
}

// TestRunningFindsALiveProcess: running must see a process that is there,
// on any machine, or the checks that nothing is left running pass on a
// machine where they cannot look.
func TestRunningFindsALiveProcess(t *testing.T) {
	// A time sleep takes, made unique by its fraction.
	arg := fmt.Sprintf("3600.%09d", time.Now().UnixNano()%1e9)
	cmd := exec.Command("/bin/sleep", arg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	if got := running(t, "sleep "+arg); len(got) != 1 {
		t.Fatalf("running(%q) = %v while pid %d runs it", "sleep "+arg, got, cmd.Process.Pid)
	}
}
