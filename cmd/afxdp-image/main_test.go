package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/afxdp/afxdp/internal/oci"
)

// helloBinary builds the static test program once for the package's tests.
var helloBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "afxdp-image-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", bin, "../../internal/oci/testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

var binDir string // removed by TestMain

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func hello(t *testing.T) string {
	t.Helper()
	bin, err := helloBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	bin := hello(t)
	layout := filepath.Join(dir, "layout")
	tarFile := filepath.Join(dir, "hello.tar")
	var stdout, stderr bytes.Buffer
	err := run([]string{"--binary", bin, "--entrypoint", "/app/hello", "--tag", "afxdp/hello:t",
		"--oci-layout", layout, "--tar", tarFile, "--label", "a=b", "--user", "1000:1000"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "sha256:") {
		t.Errorf("output %q does not name the digest", stdout.String())
	}
	img, err := oci.Image(layout, "afxdp/hello:t")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Entrypoint[0] != "/app/hello" || cf.Config.User != "1000:1000" || cf.Config.Labels["a"] != "b" {
		t.Errorf("config %+v", cf.Config)
	}
	if fi, err := os.Stat(tarFile); err != nil || fi.Size() == 0 {
		t.Errorf("tarball: %v", err)
	}

	bundle := filepath.Join(dir, "bundle")
	err = run([]string{"--binary", bin, "--bundle", bundle, "--netns", "/var/run/netns/x",
		"--bind", "/tmp:/mnt/tmp", "--run-arg", "sleep"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run --bundle: %v\n%s", err, stderr.String())
	}
	config, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"/hello",`, `"sleep"`, `"/var/run/netns/x"`, `"destination": "/mnt/tmp"`, `"CAP_NET_RAW"`} {
		if !bytes.Contains(config, []byte(want)) {
			t.Errorf("config.json lacks %s", want)
		}
	}
	if fi, err := os.Stat(filepath.Join(bundle, "rootfs", "hello")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("rootfs/hello: %v", err)
	}

	for _, bad := range [][]string{
		{"--binary", bin, "--oci-layout", layout, "--bind", "/a:/b"},
		{"--binary", bin, "--bundle", filepath.Join(dir, "b2"), "--bind", "nocolon"},
		{},
		{"--binary", bin},
		{"--binary", bin, "--tar", tarFile},
		{"--binary", bin, "--oci-layout", layout, "--label", "nokey"},
		{"--binary", bin, "--oci-layout", layout, "--user", "0"},
		{"--binary", bin, "--oci-layout", layout, "extra"},
	} {
		if err := run(bad, &stdout, &stderr); err == nil {
			t.Errorf("run(%q): no error", bad)
		}
	}
}

// snapshot is what a test compares a directory tree by: each path below
// root (root itself as ".") with its mode, and a regular file's contents.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		m[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameTree(t *testing.T, root string, before map[string]string, what string) {
	t.Helper()
	after := snapshot(t, root)
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s left behind", what, filepath.Join(root, p))
		}
	}
	for p, v := range before {
		if w, ok := after[p]; !ok {
			t.Errorf("%s: %s removed", what, filepath.Join(root, p))
		} else if w != v {
			t.Errorf("%s: %s changed", what, filepath.Join(root, p))
		}
	}
}

// A flag the bundle's config would refuse fails the run before it writes
// anything: no bundle directory, no half-made rootfs that makes the next
// run fail with "directory not empty".
func TestRunBadFlagWritesNothing(t *testing.T) {
	bin := hello(t)
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"bind relative source", []string{"--bind", "rel:/x"}, `--bind "rel:/x"`},
		{"bind relative destination", []string{"--bind", "/tmp:x"}, `--bind "/tmp:x"`},
		{"bind onto /", []string{"--bind", "/tmp:/"}, `--bind "/tmp:/"`},
		{"bind option unknown", []string{"--bind", "/tmp:/x:rx"}, `--bind "/tmp:/x:rx": option "rx": want ro or rw`},
		{"netns relative", []string{"--netns", "netns/c1"}, `--netns "netns/c1"`},
		// The tarball would have been staged before its tag was read.
		{"tag invalid", []string{"--tag", "afxdp/Sender:dev"}, `--tag "afxdp/Sender:dev"`},
		{"tag empty part", []string{"--tag", "afxdp/sender:"}, `--tag "afxdp/sender:"`},
		{"arch unknown", []string{"--arch", "bogus"}, `--arch "bogus": not a Go architecture`},
		{"arch of another binary", []string{"--arch", otherArch}, `--arch "` + otherArch + `": the binary`},
		{"layout below a file", []string{"--oci-layout", "/dev/null/layout"}, `--oci-layout: check layout /dev/null/layout`},
		// Images runc could never start.
		{"user no one", []string{"--user", "4294967295"}, `User "4294967295": UID 4294967295`},
		{"group beyond runc", []string{"--user", "1000:2147483648"}, `GID 2147483648`},
		{"entrypoint under /proc", []string{"--entrypoint", "/proc/hello"}, `Entrypoint "/proc/hello"`},
		// Bundles runc could never start: the bind hides the binary.
		{"bind onto the entrypoint", []string{"--bind", "/tmp:/hello/"}, `--bind "/tmp:/hello/": DST /hello would hide the entrypoint /hello`},
		{"bind above the entrypoint", []string{"--entrypoint", "/app/bin/hello", "--bind", "/tmp:/app"},
			`--bind "/tmp:/app": DST /app would hide the entrypoint /app/bin/hello`},
	} {
		for _, exists := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/exists=%v", tc.name, exists), func(t *testing.T) {
				dir := t.TempDir()
				bundle := filepath.Join(dir, "parent", "bundle")
				tarFile := filepath.Join(dir, "img.tar")
				if exists {
					if err := os.MkdirAll(bundle, 0o750); err != nil {
						t.Fatal(err)
					}
				}
				before := snapshot(t, dir)
				args := append([]string{"--binary", bin, "--tag", "afxdp/hello:t", "--bundle", bundle,
					"--tar", tarFile, "--oci-layout", filepath.Join(dir, "layout")}, tc.flags...)
				var stdout, stderr bytes.Buffer
				err := run(args, &stdout, &stderr)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("run: %v, want an error naming %s", err, tc.want)
				}
				sameTree(t, dir, before, "failed run")
				if stdout.Len() > 0 {
					t.Errorf("failed run said %q", stdout.String())
				}
			})
		}
	}
}

// A bind's third field is its option, as with docker run -v: ro makes the
// mount read-only, and neither it nor rw ends up in the mount's path.
func TestBundleBindOptions(t *testing.T) {
	bin := hello(t)
	bundle := filepath.Join(t.TempDir(), "bundle")
	var stdout, stderr bytes.Buffer
	err := run([]string{"--binary", bin, "--bundle", bundle,
		"--bind", "/tmp:/mnt/ro:ro", "--bind", "/tmp:/mnt/rw:rw", "--bind", "/tmp:/mnt/plain"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run --bundle: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var config struct {
		Mounts []struct {
			Destination, Type string
			Options           []string
		}
	}
	if err := json.Unmarshal(b, &config); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{} // bind destination: read-only
	for _, m := range config.Mounts {
		if m.Type == "bind" {
			got[m.Destination] = slices.Contains(m.Options, "ro")
		}
	}
	want := map[string]bool{"/mnt/ro": true, "/mnt/rw": false, "/mnt/plain": false}
	if !maps.Equal(got, want) {
		t.Errorf("bind mounts (destination: read-only) %v, want %v", got, want)
	}
}

// otherArch is a Go architecture that the test binary is not built for.
var otherArch = map[bool]string{true: "amd64", false: "arm64"}[runtime.GOARCH == "arm64"]

// --oci-layout refuses a directory that holds other files and no
// oci-layout file, before anything is written; it takes an empty one and
// adds to a layout.
func TestRunLayoutDirectory(t *testing.T) {
	bin := hello(t)
	dir := t.TempDir()
	busy := filepath.Join(dir, "busy")
	if err := os.Mkdir(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(busy, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	var stdout, stderr bytes.Buffer
	err := run([]string{"--binary", bin, "--tag", "afxdp/hello:t", "--oci-layout", busy,
		"--tar", filepath.Join(dir, "img.tar"), "--bundle", filepath.Join(dir, "bundle")}, &stdout, &stderr)
	want := "--oci-layout: check layout " + busy + ": directory not empty and holds no oci-layout file"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("run with --oci-layout a directory of other files: %v, want an error containing %q", err, want)
	}
	sameTree(t, dir, before, "refused run")

	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"afxdp/hello:one", "afxdp/hello:two"} {
		if err := run([]string{"--binary", bin, "--tag", tag, "--oci-layout", empty}, &stdout, &stderr); err != nil {
			t.Fatalf("run --tag %s into %s: %v", tag, empty, err)
		}
	}
	for _, tag := range []string{"afxdp/hello:one", "afxdp/hello:two"} {
		if _, err := oci.Image(empty, tag); err != nil {
			t.Error(err)
		}
	}
}

// A step that fails after others have written removes what they wrote:
// the staged tarball and bundle and the directories made for them, and
// leaves what was there (an empty bundle directory, an old tarball) as it
// was. A run with the failure mended then succeeds in the same places.
func TestRunFailureRemovesWhatItMade(t *testing.T) {
	bin := hello(t)
	for _, exists := range []bool{false, true} {
		t.Run(fmt.Sprintf("exists=%v", exists), func(t *testing.T) {
			dir := t.TempDir()
			bundle := filepath.Join(dir, "new", "bundle")
			tarFile := filepath.Join(dir, "img.tar")
			if exists {
				bundle = filepath.Join(dir, "bundle")
				if err := os.Mkdir(bundle, 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(tarFile, []byte("old tarball"), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			// The layout is written after the tarball and the bundle are
			// staged. Every flag is checked before that, so a failure
			// there is made: the layout is written, then the step fails.
			failLayoutStep(t)
			before := snapshot(t, dir)
			layout := filepath.Join(dir, "new", "layout")
			args := []string{"--binary", bin, "--tag", "afxdp/hello:t", "--bundle", bundle,
				"--tar", tarFile, "--bind", "/tmp:/mnt/tmp", "--run-arg", "sleep", "--oci-layout", layout}
			var stdout, stderr bytes.Buffer
			err := run(args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), "layout step made to fail") {
				t.Fatalf("run with a failing layout step: %v", err)
			}
			t.Log(err)
			sameTree(t, dir, before, "failed run")

			writeLayout = oci.WriteLayout
			if err := run(args, &stdout, &stderr); err != nil {
				t.Fatalf("second run: %v", err)
			}
			ents, err := os.ReadDir(bundle)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"config.json", "rootfs"}) {
				t.Errorf("bundle holds %q, want config.json and rootfs only", names)
			}
			if fi, err := os.Stat(filepath.Join(bundle, "rootfs", "hello")); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("rootfs/hello: %v", err)
			}
			if b, err := os.ReadFile(tarFile); err != nil || len(b) < 1024 {
				t.Errorf("tarball: %d bytes, %v", len(b), err)
			}
			if _, err := oci.Image(layout, "afxdp/hello:t"); err != nil {
				t.Error(err)
			}
			leftovers, _ := filepath.Glob(filepath.Join(dir, "*", ".*afxdp-image-*"))
			top, _ := filepath.Glob(filepath.Join(dir, ".*afxdp-image-*"))
			if len(leftovers)+len(top) > 0 {
				t.Errorf("staging entries left: %q %q", top, leftovers)
			}
		})
	}
}

// An empty --oci-layout directory may also receive the tarball and the
// bundle: the run's own staging entries in it must not make the layout
// step refuse the directory as "not empty".
func TestRunOutputsInsideEmptyLayout(t *testing.T) {
	bin := hello(t)
	layout := filepath.Join(t.TempDir(), "out")
	if err := os.Mkdir(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	tarFile := filepath.Join(layout, "img.tar")
	bundle := filepath.Join(layout, "bundle")
	var stdout, stderr bytes.Buffer
	if err := run([]string{"--binary", bin, "--tag", "afxdp/hello:t", "--oci-layout", layout,
		"--tar", tarFile, "--bundle", bundle}, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := oci.Image(layout, "afxdp/hello:t"); err != nil {
		t.Error(err)
	}
	if b, err := os.ReadFile(tarFile); err != nil || len(b) < 1024 {
		t.Errorf("tarball: %d bytes, %v", len(b), err)
	}
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		t.Error(err)
	}
}

// A failure after the layout is written into an --oci-layout directory
// that existed, empty, leaves that directory empty again: the layout was
// this run's own.
func TestRunFailureEmptiesLayoutDir(t *testing.T) {
	bin := hello(t)
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	if err := os.Mkdir(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	failLayoutStep(t)
	before := snapshot(t, dir)
	var stdout, stderr bytes.Buffer
	err := run([]string{"--binary", bin, "--tag", "afxdp/hello:t", "--oci-layout", layout}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "layout step made to fail") {
		t.Fatalf("run with a failing layout step: %v", err)
	}
	sameTree(t, dir, before, "failed run")
}

// Two outputs named by one path are refused, naming both flags, before
// anything is written: a layout and a bundle in one directory would each
// find the other's files in it.
func TestRunOutputsOnOnePath(t *testing.T) {
	bin := hello(t)
	dir := t.TempDir()
	same := filepath.Join(dir, "out")
	if err := os.Mkdir(same, 0o755); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--oci-layout", same, "--bundle", same + "/"}, "--oci-layout and --bundle: both " + same},
		{[]string{"--tar", same, "--bundle", same}, "--tar and --bundle: both " + same},
		{[]string{"--oci-layout", filepath.Join(dir, "x"), "--tar", filepath.Join(dir, "x")}, "--oci-layout and --tar: both " + filepath.Join(dir, "x")},
	} {
		var stdout, stderr bytes.Buffer
		err := run(append([]string{"--binary", bin, "--tag", "afxdp/hello:t"}, tc.flags...), &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q: %v, want an error containing %q", tc.flags, err, tc.want)
		}
	}
	sameTree(t, dir, before, "refused runs")
}

// failLayoutStep makes the layout step write the layout and then fail,
// until the test ends.
func failLayoutStep(t *testing.T) {
	writeLayout = func(dir string, img v1.Image, tag string) error {
		if err := oci.WriteLayout(dir, img, tag); err != nil {
			return err
		}
		return errors.New("layout step made to fail")
	}
	t.Cleanup(func() { writeLayout = oci.WriteLayout })
}
