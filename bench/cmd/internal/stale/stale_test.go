package stale

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestRemoveStale fills a directory with names of every kind and checks
// that RemoveStale removes those that a process that is gone made, and
// only those, through the place's Remove when it has one, and says so.
func TestRemoveStale(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	alive := exec.Command("sleep", "60")
	if err := alive.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		alive.Process.Kill()
		alive.Wait()
	}()
	g, a, me := strconv.Itoa(gone.Process.Pid), strconv.Itoa(alive.Process.Pid), strconv.Itoa(os.Getpid())
	o := New("tool", "afxtool")
	dir, other := t.TempDir(), t.TempDir()
	removed := []string{"afxtool" + g, "afxtool" + g + "-build123"}
	kept := []string{
		"afxtool" + a, "afxtool" + a + "-x", // its process runs
		"afxtool" + me, "afxtool" + me + "-y", // this process's
		"afxtool" + g + "x", "afxtool-" + g, "afxtool", "xafxtool" + g, // not names it makes
		"afxtoolbox" + g, // another prefix that starts with this one
	}
	for _, n := range slices.Concat(removed, kept) {
		if err := os.Mkdir(filepath.Join(dir, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A file inside, which os.Remove would not remove.
	if err := os.WriteFile(filepath.Join(dir, removed[1], "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The other place's Remove fails for one name.
	for _, n := range []string{"afxtool" + g + "-ok", "afxtool" + g + "-fails"} {
		if err := os.Mkdir(filepath.Join(other, n), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	failed := errors.New("cannot")
	var out strings.Builder
	got := o.RemoveStale(&out,
		Place{Dir: filepath.Join(dir, "missing"), What: "nothing"},
		Place{Dir: dir, What: "build directory"},
		Place{Dir: other, What: "thing", Remove: func(name string) error {
			if strings.HasSuffix(name, "-fails") {
				return failed
			}
			return os.Remove(filepath.Join(other, name))
		}})
	t.Logf("RemoveStale said:\n%s", out.String())
	var want []string
	for _, n := range removed {
		want = append(want, filepath.Join(dir, n))
	}
	want = append(want, filepath.Join(other, "afxtool"+g+"-ok"))
	if !slices.Equal(got, want) {
		t.Errorf("RemoveStale returned %q; want %q", got, want)
	}
	for _, p := range want {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after RemoveStale: %v; want it removed", p, err)
		}
	}
	for _, n := range append(kept, "") {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s after RemoveStale: %v; want it kept", filepath.Join(dir, n), err)
		}
	}
	fails := filepath.Join(other, "afxtool"+g+"-fails")
	if _, err := os.Stat(fails); err != nil {
		t.Errorf("%s, whose Remove failed: %v", fails, err)
	}
	wantSaid := "tool: removed build directory " + want[0] + ", left by a tool that is gone\n" +
		"tool: removed build directory " + want[1] + ", left by a tool that is gone\n" +
		"tool: remove thing " + fails + ", left by a tool that is gone: cannot\n" +
		"tool: removed thing " + want[2] + ", left by a tool that is gone\n"
	if out.String() != wantSaid {
		t.Errorf("RemoveStale said:\n%s\nwant:\n%s", out.String(), wantSaid)
	}
}

// TestName checks that Name is the prefix and this process's pid, which
// Gone does not take for a process that is gone.
func TestName(t *testing.T) {
	o := New("tool", "afxtool")
	if got, want := o.Name(), "afxtool"+strconv.Itoa(os.Getpid()); got != want {
		t.Errorf("Name() = %q; want %q", got, want)
	}
	if o.Gone(o.Name()) || o.Gone(o.Name()+"-x") {
		t.Errorf("Gone(%q) is true in the process that made it", o.Name())
	}
}
