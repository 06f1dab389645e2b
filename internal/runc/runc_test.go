package runc_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/oci"
	"github.com/afxdp/afxdp/internal/runc"
	"github.com/afxdp/afxdp/internal/testenv"
)

var (
	layoutOnce sync.Once
	layoutDir  string
	layoutErr  error
)

// helloLayout builds internal/oci/testdata/hello statically and stores it as
// an image in an OCI layout, once per test run.
func helloLayout(t *testing.T) string {
	t.Helper()
	layoutOnce.Do(func() {
		dir, err := os.MkdirTemp("", "afxdp-runc-test")
		if err != nil {
			layoutErr = err
			return
		}
		layoutDir = dir
		bin := filepath.Join(dir, "hello")
		cmd := exec.Command("go", "build", "-o", bin, "../oci/testdata/hello")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			layoutErr = errors.New("go build hello: " + err.Error() + ": " + string(out))
			return
		}
		img, err := oci.Build(&oci.Options{Binary: bin, Entrypoint: "/bin/hello"})
		if err != nil {
			layoutErr = err
			return
		}
		layoutErr = oci.WriteLayout(filepath.Join(dir, "layout"), img, "hello")
	})
	if layoutErr != nil {
		t.Fatal(layoutErr)
	}
	return filepath.Join(layoutDir, "layout")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if layoutDir != "" {
		os.RemoveAll(layoutDir)
	}
	os.Exit(code)
}

func requireRunc(t *testing.T) {
	t.Helper()
	testenv.RequirePrivileged(t)
	if _, err := exec.LookPath("runc"); err != nil {
		if os.Getenv(testenv.RequireEnv) == "1" {
			t.Fatalf("runc not installed (run .ci/deps.sh): %v", err)
		}
		t.Skipf("runc not installed (apt-get install runc): %v", err)
	}
}

func unpack(t *testing.T) *runc.Bundle {
	t.Helper()
	b, err := runc.Unpack(helloLayout(t), "hello", filepath.Join(t.TempDir(), "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// fields parses the "key: value" lines the hello program prints.
func fields(out []byte) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			m[k] = v
		}
	}
	return m
}

// runcState checks that runc keeps no state for id.
func checkNoState(t *testing.T, root, id string) {
	t.Helper()
	args := []string{"list", "-q"}
	if root != "" {
		args = append([]string{"--root", root}, args...)
	}
	out, err := exec.Command("runc", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("runc list: %v: %s", err, out)
	}
	for _, l := range strings.Fields(string(out)) {
		if l == id {
			t.Errorf("runc list still shows %s", id)
		}
	}
	if root == "" {
		root = "/run/runc"
	}
	if _, err := os.Stat(filepath.Join(root, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("runc state %s/%s left behind (stat: %v)", root, id, err)
	}
}

func TestRunInNamedNetns(t *testing.T) {
	requireRunc(t)
	b := unpack(t)

	// The container joins a named namespace holding one end of a veth
	// pair; the other end stays here and must be invisible inside.
	ns, err := netenv.NewNetns(netenv.RandomName("afxr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(ns.Path()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s left behind", ns.Path())
		}
	})
	v := testenv.NewVeth(t, &netenv.VethOptions{PeerNS: ns})

	if err := b.WriteConfig(&runc.SpecOptions{NetnsPath: ns.Path()}); err != nil {
		t.Fatal(err)
	}
	id := netenv.RandomName("afxdp-t")
	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, res.Stdout, res.Stderr)
	}
	checkNoState(t, "", id)
	if !bytes.HasPrefix(res.Stdout, []byte("hello from a static afxdp test binary\n")) {
		t.Fatalf("stdout does not start with the greeting:\n%s", res.Stdout)
	}
	f := fields(res.Stdout)
	if got, want := f["interfaces"], "lo,"+v.Peer.Name; got != want {
		t.Errorf("container sees interfaces %q, want %q (host end %s must not show)", got, want, v.Host.Name)
	}
	if f["uid"] != "65534 gid: 65534" {
		t.Errorf("container runs as uid %q, want 65534 gid: 65534", f["uid"])
	}
	// Exactly CAP_NET_RAW (bit 13) survives the switch to the non-root
	// user, as an ambient capability.
	if f["capeff"] != "0000000000002000" {
		t.Errorf("container CapEff %s, want 0000000000002000 (CAP_NET_RAW only)", f["capeff"])
	}
	if f["af_packet"] != "ok" || f["af_xdp"] != "ok" {
		t.Errorf("sockets in the container: AF_PACKET %q, AF_XDP %q, want ok", f["af_packet"], f["af_xdp"])
	}
	// Depends on the inherited RLIMIT_MEMLOCK: see TestRunUMEMWithIPCLock.
	t.Logf("4 MiB UMEM with CAP_NET_RAW only: %s", f["umem_4m"])
}

// TestRunUMEMWithIPCLock shows what an AF_XDP container needs beyond
// CAP_NET_RAW: the UMEM is charged against RLIMIT_MEMLOCK (often 8 KiB or
// 8 MiB) unless the process has CAP_IPC_LOCK.
func TestRunUMEMWithIPCLock(t *testing.T) {
	requireRunc(t)
	b := unpack(t)
	if err := b.WriteConfig(&runc.SpecOptions{Capabilities: []string{"CAP_NET_RAW", "CAP_IPC_LOCK"}}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := netenv.RandomName("afxdp-t")
	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Root: root})
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, res.Stderr)
	}
	checkNoState(t, root, id)
	f := fields(res.Stdout)
	if f["capeff"] != "0000000000006000" {
		t.Errorf("CapEff %s, want 0000000000006000 (CAP_NET_RAW, CAP_IPC_LOCK)", f["capeff"])
	}
	if f["umem_4m"] != "ok" {
		t.Errorf("registering a 4 MiB UMEM with CAP_IPC_LOCK: %s", f["umem_4m"])
	}
}

func TestRunWithoutCapabilities(t *testing.T) {
	requireRunc(t)
	b := unpack(t)
	if err := b.WriteConfig(&runc.SpecOptions{Capabilities: []string{}}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := netenv.RandomName("afxdp-t")
	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Root: root})
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, res.Stderr)
	}
	checkNoState(t, root, id)
	f := fields(res.Stdout)
	if f["capeff"] != "0000000000000000" {
		t.Errorf("CapEff %s, want none", f["capeff"])
	}
	if !strings.Contains(f["af_xdp"], "operation not permitted") {
		t.Errorf("AF_XDP without CAP_NET_RAW: %q, want operation not permitted", f["af_xdp"])
	}
	// A new network namespace of runc's own holds only lo.
	if f["interfaces"] != "lo" {
		t.Errorf("interfaces %q, want lo", f["interfaces"])
	}
}

func TestRunTimeoutKillsAndDeletes(t *testing.T) {
	requireRunc(t)
	b := unpack(t)
	if err := b.WriteConfig(&runc.SpecOptions{Args: []string{"/bin/hello", "sleep"}}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := netenv.RandomName("afxdp-t")
	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Root: root, Timeout: 2 * time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run of a sleeping container: %v, want DeadlineExceeded", err)
	}
	if !bytes.Contains(res.Stdout, []byte("hello from")) {
		t.Errorf("stdout before the kill is lost: %q", res.Stdout)
	}
	checkNoState(t, root, id)
}

func TestRunExitStatus(t *testing.T) {
	requireRunc(t)
	b := unpack(t)
	if err := b.WriteConfig(&runc.SpecOptions{Args: []string{"/nonexistent"}}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := netenv.RandomName("afxdp-t")
	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Root: root})
	if err == nil || res.ExitCode == 0 {
		t.Fatalf("Run of a missing executable: err %v, exit %d; want failure", err, res.ExitCode)
	}
	checkNoState(t, root, id)
}

// createContainer creates (runc create, not start) a container of the
// bundle in dir under root with a random ID, which it returns, and
// force-deletes it at cleanup.
func createContainer(t *testing.T, root, dir string) string {
	t.Helper()
	id := netenv.RandomName("afxdp-t")
	// The created container's init keeps the stdio runc gives it: a
	// file, not a pipe that CombinedOutput would wait on for good.
	logf, err := os.Create(filepath.Join(t.TempDir(), "create.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	create := exec.Command("runc", "--root", root, "create", "--bundle", dir, id)
	create.Stdout, create.Stderr = logf, logf
	if err := create.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("runc create: %v: %s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("runc", "--root", root, "delete", "--force", id).Run()
		checkNoState(t, root, id)
	})
	return id
}

// TestRunLeavesTakenIDAlone runs a bundle under the ID of a container
// that exists already (created, not started): runc refuses it, and Run
// must say so and leave that container as it was, not force-delete it.
func TestRunLeavesTakenIDAlone(t *testing.T) {
	requireRunc(t)
	b := unpack(t)
	if err := b.WriteConfig(&runc.SpecOptions{Args: []string{"/bin/hello", "sleep"}}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := createContainer(t, root, b.Dir)
	_, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Root: root, Timeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "the ID is taken") {
		t.Fatalf("Run under a taken ID: %v, want it refused", err)
	}
	if out, err := exec.Command("runc", "--root", root, "state", id).CombinedOutput(); err != nil {
		t.Fatalf("the other container is gone after Run: %v: %s", err, out)
	}
}

func TestWriteConfigValidation(t *testing.T) {
	b := &runc.Bundle{Dir: t.TempDir(), Image: runc.ImageConfig{Entrypoint: []string{"/x"}, User: "65534"}}
	for _, tc := range []struct {
		name string
		opts *runc.SpecOptions
		img  runc.ImageConfig
		want string
	}{
		{"noargs", nil, runc.ImageConfig{}, "Args"},
		{"nameduser", nil, runc.ImageConfig{Entrypoint: []string{"/x"}, User: "nobody"}, "numeric"},
		{"cap", &runc.SpecOptions{Capabilities: []string{"net_raw"}}, b.Image, "Capabilities"},
		{"env", &runc.SpecOptions{Env: []string{"X"}}, b.Image, "Env"},
		{"netns", &runc.SpecOptions{NetnsPath: "netns/x"}, b.Image, "NetnsPath"},
		{"bind", &runc.SpecOptions{Binds: []runc.Bind{{Source: "rel", Destination: "/x"}}}, b.Image, "Binds[0]"},
		{"bindroot", &runc.SpecOptions{Binds: []runc.Bind{{Source: "/tmp", Destination: "/"}}}, b.Image, "Binds[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bb := &runc.Bundle{Dir: b.Dir, Image: tc.img}
			if err := bb.WriteConfig(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WriteConfig: %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if _, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: "../x"}); err == nil {
		t.Error("Run with ID ../x: no error")
	}
}

// TestUnpackLayers checks whiteouts, modes, links, and that an archive cannot
// write outside the rootfs through a symbolic link.
func TestUnpackLayers(t *testing.T) {
	lower := layer(t,
		ent{name: "etc/", mode: 0o755, typ: tar.TypeDir},
		ent{name: "etc/passwd", mode: 0o644, body: "root:x:0:0::/:/x\n"},
		ent{name: "etc/group", mode: 0o644, body: "root:x:0:\n"},
		ent{name: "opq/", mode: 0o755, typ: tar.TypeDir},
		ent{name: "opq/old", mode: 0o644, body: "old"},
		ent{name: "bin/", mode: 0o755, typ: tar.TypeDir},
		ent{name: "bin/tool", mode: 0o4755, body: "tool"},
	)
	upper := layer(t,
		ent{name: "etc/.wh.passwd", mode: 0o644},
		ent{name: "opq/.wh..wh..opq", mode: 0o644},
		ent{name: "opq/new", mode: 0o600, body: "new"},
		ent{name: "bin/alias", typ: tar.TypeSymlink, link: "tool"},
		ent{name: "bin/hard", typ: tar.TypeLink, link: "bin/tool"},
	)
	img, err := mutate.AppendLayers(empty.Image, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "b")
	b, err := runc.UnpackImage(img, dir)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	for p, want := range map[string]string{
		"etc/group": "root:x:0:\n", "opq/new": "new", "bin/tool": "tool", "bin/alias": "tool", "bin/hard": "tool",
	} {
		got, err := os.ReadFile(filepath.Join(rootfs, p))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", p, got, err, want)
		}
	}
	for _, gone := range []string{"etc/passwd", "opq/old", "etc/.wh.passwd", "opq/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(rootfs, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a whiteout (%v)", gone, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(rootfs, "opq/new")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("opq/new mode: %v, %v; want 0600", fi.Mode(), err)
	}
	if os.Geteuid() == 0 {
		if fi, err := os.Stat(filepath.Join(rootfs, "bin/tool")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
			t.Errorf("bin/tool lost its setuid bit: %v, %v", fi.Mode(), err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle dir left after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// Archives that plant a symlink out of the rootfs and write through
	// it, or name a path above it: whether Extract drops such entries or
	// Unpack refuses them, nothing may land outside. (untar's own
	// confinement is tested in unpack_internal_test.go.)
	outside := t.TempDir()
	for i, evil := range []v1.Layer{
		layer(t,
			ent{name: "escape", typ: tar.TypeSymlink, link: outside},
			ent{name: "escape/pwned", mode: 0o644, body: "x"}),
		layer(t,
			ent{name: "d/", typ: tar.TypeDir, mode: 0o755},
			ent{name: "d/up", typ: tar.TypeSymlink, link: "../../../../../../../../.." + outside},
			ent{name: "d/up/pwned", mode: 0o644, body: "x"}),
		layer(t, ent{name: "../../../../../../../../.." + outside + "/pwned", mode: 0o644, body: "x"}),
	} {
		img, err = mutate.AppendLayers(empty.Image, evil)
		if err != nil {
			t.Fatal(err)
		}
		// A directory the caller made must still be there, empty,
		// after a failure; one Unpack made must be gone.
		made := t.TempDir()
		for _, dir := range []string{made, filepath.Join(t.TempDir(), "evil")} {
			b, err := runc.UnpackImage(img, dir)
			if err == nil {
				b.Close()
				continue
			}
			t.Logf("case %d: %v", i, err)
			ents, err := os.ReadDir(dir)
			switch {
			case dir == made && (err != nil || len(ents) != 0):
				t.Errorf("case %d: after a failed unpack, the caller's directory holds %v (%v), want it empty", i, ents, err)
			case dir != made && !errors.Is(err, os.ErrNotExist):
				t.Errorf("case %d: after a failed unpack, the directory it made is still there (%v)", i, err)
			}
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("case %d: archive wrote outside the rootfs: %v", i, ents)
		}
	}
}

type ent struct {
	name, body, link string
	mode             int64
	typ              byte
}

func layer(t *testing.T, ents ...ent) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: typ, Linkname: e.link}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A failed unpack into a directory whose parents are missing removes the
// parents it made too, not only the directory.
func TestUnpackFailureRemovesMadeParents(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, layer(t, ent{name: "../../../../../../../../../tmp/pwned", mode: 0o644, body: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	if b, err := runc.UnpackImage(img, filepath.Join(base, "a", "b", "bundle")); err == nil {
		b.Close()
		t.Fatal("UnpackImage of an archive with a path above the rootfs succeeded")
	}
	if ents, err := os.ReadDir(base); err != nil || len(ents) != 0 {
		t.Errorf("after a failed unpack, %s holds %v (%v), want it empty", base, ents, err)
	}
}

// slowRunc writes a runc wrapper that pauses before `runc run`, so that a
// context that ends meanwhile ends before the container exists. It returns
// the wrapper's path and a function that waits until the pause has begun.
func slowRunc(t *testing.T) (path string, paused func()) {
	t.Helper()
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, mark := filepath.Join(dir, "runc"), filepath.Join(dir, "paused")
	script := "#!/bin/sh\nfor a; do [ \"$a\" = run ] && touch " + mark + " && sleep 0.5; done\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
			if _, err := os.Stat(mark); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the runc wrapper has not begun its pause after a minute")
			}
		}
	}
}

// cancelWhileMaking runs the bundle in dir as id under root through
// slowRunc's wrapper, cancels Run's context while the wrapper holds runc
// back before it makes the container, and returns Run's error. Run must
// return within a minute of the cancel.
func cancelWhileMaking(t *testing.T, dir, id, root string) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	wrapper, paused := slowRunc(t)
	go func() {
		_, err := runc.Run(ctx, dir, &runc.RunOptions{ID: id, Root: root, Runc: wrapper})
		done <- err
	}()
	paused()
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		exec.Command("runc", "--root", root, "delete", "--force", id).Run()
		t.Fatal("Run has not returned a minute after its context was cancelled: the container started after all")
		return nil
	}
}

// A context cancelled while runc is still making the container stops it
// too: runc would otherwise go on to start it, and Run would wait for the
// container to exit, which this one does not do for an hour. Run must
// return on its own, not when a delay of last resort kills runc: that
// delay is made longer than the test's bound on a hang.
func TestRunCancelBeforeContainerExists(t *testing.T) {
	requireRunc(t)
	defer runc.SetWaitDelay(10 * time.Minute)()
	b := unpack(t)
	root := t.TempDir()
	id := netenv.RandomName("afxdp-t")
	// The ID among the arguments names this container's process.
	args := []string{"/bin/hello", "sleep", id}
	if err := b.WriteConfig(&runc.SpecOptions{Args: args}); err != nil {
		t.Fatal(err)
	}
	err := cancelWhileMaking(t, b.Dir, id, root)
	t.Log(err)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "killed: context canceled") {
		t.Errorf("Run cancelled before the container existed: %v; want it killed, wrapping context.Canceled", err)
	}
	checkNoState(t, root, id)
	if pids := running(t, strings.Join(args, " ")); len(pids) > 0 {
		t.Errorf("the container's process is still running: pid %s", strings.Join(pids, " "))
	}
}

// A container whose process is killed by a signal fails with an error
// that names the signal: runc prints nothing then, only exits with 128
// plus its number.
func TestRunKilledContainerNamesSignal(t *testing.T) {
	requireRunc(t)
	b := unpack(t)
	root := t.TempDir()
	id := netenv.RandomName("afxdp-t")
	if err := b.WriteConfig(&runc.SpecOptions{Args: []string{"/bin/hello", "sleep", id}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		// Once runc has started it, kill the container's process as
		// something outside would (the OOM killer, an operator).
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			out, err := exec.Command("runc", "--root", root, "state", id).Output()
			var st struct {
				Status string `json:"status"`
				Pid    int    `json:"pid"`
			}
			if err == nil && json.Unmarshal(out, &st) == nil && st.Status == "running" && st.Pid > 0 {
				syscall.Kill(st.Pid, syscall.SIGKILL)
				return
			}
		}
	}()
	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Root: root})
	t.Log(err)
	if err == nil || res.ExitCode != 137 || !strings.Contains(err.Error(), "killed by signal 9 (SIGKILL)") {
		t.Errorf("Run of a container killed by SIGKILL: %v, exit %d; want exit 137 and an error naming SIGKILL", err, res.ExitCode)
	}
	checkNoState(t, root, id)
}

// A Run whose context ends while runc is about to refuse a taken ID must
// not kill the container that has the ID: it is someone else's.
func TestRunCancelLeavesTakenIDAlone(t *testing.T) {
	requireRunc(t)
	other := unpack(t)
	if err := other.WriteConfig(&runc.SpecOptions{Args: []string{"/bin/hello", "sleep"}}); err != nil {
		t.Fatal(err)
	}
	b := unpack(t)
	if err := b.WriteConfig(&runc.SpecOptions{Args: []string{"/bin/hello", "sleep"}}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	id := createContainer(t, root, other.Dir)
	t.Log(cancelWhileMaking(t, b.Dir, id, root))
	out, serr := exec.Command("runc", "--root", root, "state", id).Output()
	var st struct {
		Status string `json:"status"`
	}
	if serr != nil || json.Unmarshal(out, &st) != nil || st.Status != "created" {
		t.Errorf("the other container after the cancelled Run: %s (%v), want it still created", out, serr)
	}
}

// Close may be called from two goroutines at once (a deferred Close and a
// cleanup's): one removes the bundle, both return nil.
func TestBundleCloseConcurrent(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, layer(t, ent{name: "f", mode: 0o644, body: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "b")
	b, err := runc.UnpackImage(img, dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = b.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Close %d: %v", i, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bundle dir left after Close: %v", err)
	}
}

// TestBundleCloseFailsOnce makes a bundle's Close fail (a file system is
// mounted in its directory, which cannot be removed while it is): of
// Closes called at the same time one reports it, the others return nil
// once it is done, and so does a Close after them.
func TestBundleCloseFailsOnce(t *testing.T) {
	testenv.RequirePrivileged(t)
	dir := filepath.Join(t.TempDir(), "b")
	mnt := filepath.Join(dir, "m")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Error(err)
		}
	})
	b := &runc.Bundle{Dir: dir}
	if err := testenv.FailsOnce(t, "Close", 8, b.Close); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Close of a bundle with a mount in it: %v, want EBUSY", err)
	}
}

// cgroupDirsNamed lists the directories named id in every cgroup hierarchy
// this process sees mounted (cgroup v1 and v2).
func cgroupDirsNamed(t *testing.T, id string) []string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, l := range strings.Split(string(mi), "\n") {
		_, after, ok := strings.Cut(l, " - ")
		f := strings.Fields(l)
		if !ok || len(f) < 5 || !strings.HasPrefix(after, "cgroup") {
			continue
		}
		filepath.WalkDir(f[4], func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && d.Name() == id {
				found = append(found, p)
			}
			return nil
		})
	}
	return found
}

// When `runc run` itself dies after making the container's cgroups and
// before recording the container (here a createRuntime hook SIGKILLs it),
// runc keeps no state for the ID and `runc delete` cannot remove them: Run
// must remove the empty cgroup directories runc made for the ID, in every
// hierarchy, where runc puts them by default (below this process's own
// cgroups) or where config.json's cgroupsPath says.
func TestRunKilledRuncLeavesNoCgroups(t *testing.T) {
	requireRunc(t)
	t.Run("default", func(t *testing.T) { testRunKilledRuncLeavesNoCgroups(t, false) })
	t.Run("cgroupsPath", func(t *testing.T) { testRunKilledRuncLeavesNoCgroups(t, true) })
}

func testRunKilledRuncLeavesNoCgroups(t *testing.T, absPath bool) {
	b := unpack(t)
	root := t.TempDir()
	id := netenv.RandomName("afxdp-t")
	if err := b.WriteConfig(&runc.SpecOptions{Args: []string{"/bin/hello", "sleep", id}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the outcome, leave no directory of this test's.
		for _, d := range cgroupDirsNamed(t, id) {
			syscall.Rmdir(d)
		}
	})
	// The hook runs as runc's child once the cgroups are made: it notes
	// which exist, then kills runc.
	dir := t.TempDir()
	hook, made := filepath.Join(dir, "hook"), filepath.Join(dir, "made")
	script := "#!/bin/sh\nfind /sys/fs/cgroup -type d -name " + id + " > " + made + "\nkill -KILL $PPID\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(b.Dir, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["hooks"] = map[string]any{"createRuntime": []any{map[string]any{"path": hook}}}
	if absPath {
		cfg["linux"].(map[string]any)["cgroupsPath"] = "/" + id
	}
	if raw, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{ID: id, Root: root, Timeout: 30 * time.Second})
	t.Log(err)
	if err == nil || res.ExitCode != -1 || !strings.Contains(err.Error(), "signal: killed: runc itself was killed") {
		t.Errorf("Run with runc killed: %v, exit %d; want exit -1 and an error saying runc was killed", err, res.ExitCode)
	}
	before, rerr := os.ReadFile(made)
	if rerr != nil || len(bytes.TrimSpace(before)) == 0 {
		t.Fatalf("the hook found no cgroup directory for %s before it killed runc (%v): nothing was tested", id, rerr)
	}
	t.Logf("cgroups before the kill:\n%s", before)
	if left := cgroupDirsNamed(t, id); len(left) > 0 {
		t.Errorf("cgroup directories of the container left after Run:\n%s", strings.Join(left, "\n"))
	}
	checkNoState(t, root, id)
}
