package oci_test

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/afxdp/afxdp/internal/oci"
)

var (
	helloOnce sync.Once
	helloPath string
	helloErr  error
)

// helloBinary compiles testdata/hello with CGO_ENABLED=0 once per test run.
func helloBinary(t *testing.T) string {
	t.Helper()
	helloOnce.Do(func() {
		dir, err := os.MkdirTemp("", "afxdp-oci-hello")
		if err != nil {
			helloErr = err
			return
		}
		helloPath = filepath.Join(dir, "hello")
		cmd := exec.Command("go", "build", "-o", helloPath, "./testdata/hello")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			helloErr = errors.New("go build testdata/hello: " + err.Error() + ": " + string(out))
		}
	})
	if helloErr != nil {
		t.Fatal(helloErr)
	}
	return helloPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if helloPath != "" {
		os.RemoveAll(filepath.Dir(helloPath))
	}
	os.Exit(code)
}

func TestBuildLayoutRoundTrip(t *testing.T) {
	bin := helloBinary(t)
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img, err := oci.Build(&oci.Options{
		Binary:     bin,
		Entrypoint: "/usr/local/bin/hello",
		Args:       []string{"-v"},
		Labels:     map[string]string{"org.opencontainers.image.title": "hello"},
		Env:        []string{"GREETING=hi"},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	if err := oci.WriteLayout(dir, img, "afxdp/hello:test"); err != nil {
		t.Fatal(err)
	}

	got, err := oci.Image(dir, "afxdp/hello:test")
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := got.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q, want %q", mt, types.OCIManifestSchema1)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if g, w := strings.Join(cf.Config.Entrypoint, " "), "/usr/local/bin/hello -v"; g != w {
		t.Errorf("entrypoint %q, want %q", g, w)
	}
	if cf.Config.User != oci.DefaultUser {
		t.Errorf("user %q, want %q", cf.Config.User, oci.DefaultUser)
	}
	if cf.Config.Labels["org.opencontainers.image.title"] != "hello" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	if g, w := strings.Join(cf.Config.Env, " "), "PATH=/ GREETING=hi"; g != w {
		t.Errorf("env %q, want %q", g, w)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}

	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %q, want %q", mt, types.OCILayer)
	}
	files := readLayer(t, layers[0])
	f, ok := files["usr/local/bin/hello"]
	if !ok {
		t.Fatalf("layer lacks usr/local/bin/hello; has %v", keys(files))
	}
	if f.hdr.Typeflag != tar.TypeReg || f.hdr.Mode != 0o755 || f.hdr.Uid != 0 || f.hdr.Gid != 0 {
		t.Errorf("binary header: type %c mode %o owner %d:%d, want regular 0755 0:0",
			f.hdr.Typeflag, f.hdr.Mode, f.hdr.Uid, f.hdr.Gid)
	}
	if !bytes.Equal(f.data, want) {
		t.Errorf("binary in layer differs from the input (%d bytes, want %d)", len(f.data), len(want))
	}
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		if h, ok := files[d]; !ok || h.hdr.Typeflag != tar.TypeDir || h.hdr.Mode != 0o755 {
			t.Errorf("layer lacks directory %s with mode 0755", d)
		}
	}
	if len(files) != 4 {
		t.Errorf("layer holds %v, want the binary and its 3 directories", keys(files))
	}
}

func TestBuildReproducible(t *testing.T) {
	bin := helloBinary(t)
	var digests []v1.Hash
	for range 2 {
		img, err := oci.Build(&oci.Options{Binary: bin})
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		cf, _ := img.ConfigFile()
		if g := strings.Join(cf.Config.Entrypoint, " "); g != "/hello" {
			t.Errorf("default entrypoint %q, want /hello", g)
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of one binary differ: %s, %s", digests[0], digests[1])
	}
}

func TestWriteTarball(t *testing.T) {
	bin := helloBinary(t)
	img, err := oci.Build(&oci.Options{Binary: bin, Entrypoint: "/hello"})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "hello.tar")
	if err := oci.WriteTarball(file, img, "afxdp/hello:test"); err != nil {
		t.Fatal(err)
	}
	// docker load reads manifest.json with RepoTags; check it names our tag.
	names := tarNames(t, file)
	if !names["manifest.json"] {
		t.Fatalf("tarball lacks manifest.json: %v", names)
	}
	tag, err := name.NewTag("afxdp/hello:test")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tarball.ImageFromPath(file, &tag)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg, _ := img.ConfigName()
	gotCfg, err := got.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if gotCfg != wantCfg {
		t.Errorf("config digest %s, want %s", gotCfg, wantCfg)
	}
	layers, err := got.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	if _, ok := readLayer(t, layers[0])["hello"]; !ok {
		t.Error("tarball's layer lacks hello")
	}
	if err := oci.WriteTarball(file, img, ""); err == nil {
		t.Error("WriteTarball with an empty tag: no error")
	}
}

func TestRefuseDynamic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dyn")
	if err := os.WriteFile(p, fakeDynamicELF("/lib64/ld-linux-x86-64.so.2"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := oci.Build(&oci.Options{Binary: p})
	if !errors.Is(err, oci.ErrNotStatic) {
		t.Fatalf("Build of a dynamic executable: %v, want ErrNotStatic", err)
	}
	if !strings.Contains(err.Error(), "/lib64/ld-linux-x86-64.so.2") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("error %q should name the interpreter and the fix", err)
	}
	// A real dynamic executable of the host, if there is one.
	for _, host := range []string{"/bin/sh", "/usr/bin/env"} {
		if _, err := os.Stat(host); err != nil {
			continue
		}
		if _, err := oci.CheckStatic(host); err != nil && !errors.Is(err, oci.ErrNotStatic) {
			t.Errorf("CheckStatic(%s): %v", host, err)
		}
	}
}

func TestBuildValidation(t *testing.T) {
	bin := helloBinary(t)
	text := filepath.Join(t.TempDir(), "script")
	os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755)
	for _, tc := range []struct {
		name string
		opts *oci.Options
		want string
	}{
		{"nil", nil, "Binary"},
		{"root", &oci.Options{Binary: bin, User: "0"}, "root"},
		{"rootgid", &oci.Options{Binary: bin, User: "0:1000"}, "root"},
		{"named", &oci.Options{Binary: bin, User: "nobody"}, "numeric"},
		{"relative", &oci.Options{Binary: bin, Entrypoint: "hello"}, "Entrypoint"},
		{"dirty", &oci.Options{Binary: bin, Entrypoint: "/a/../hello"}, "Entrypoint"},
		{"env", &oci.Options{Binary: bin, Env: []string{"NOEQUALS"}}, "Env"},
		{"missing", &oci.Options{Binary: "/nonexistent/afxdp"}, "no such file"},
		{"script", &oci.Options{Binary: text}, "not an ELF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := oci.Build(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

func readLayer(t *testing.T, l v1.Layer) map[string]entry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = entry{h, data}
	}
}

func tarNames(t *testing.T, file string) map[string]bool {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
	}
}

func keys(m map[string]entry) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	return s
}

// fakeDynamicELF returns a minimal little-endian ELF64 x86-64 executable
// header with one PT_INTERP program header naming interp.
func fakeDynamicELF(interp string) []byte {
	const ehsize, phsize = 64, 56
	b := make([]byte, ehsize+phsize)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)  // version
	le.PutUint64(b[24:], 0x401000)
	le.PutUint64(b[32:], ehsize) // phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phsize)
	le.PutUint16(b[56:], 1) // phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 3) // PT_INTERP
	le.PutUint32(ph[4:], 4) // PF_R
	le.PutUint64(ph[8:], ehsize+phsize)
	le.PutUint64(ph[32:], uint64(len(interp)+1))
	le.PutUint64(ph[40:], uint64(len(interp)+1))
	le.PutUint64(ph[48:], 1)
	return append(append(b, interp...), 0)
}
