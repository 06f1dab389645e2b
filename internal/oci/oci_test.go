package oci_test

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
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
	// Real executables of the host: one with a PT_INTERP must be refused
	// with ErrNotStatic, one without accepted.
	for _, host := range []string{"/bin/sh", "/usr/bin/env"} {
		f, err := elf.Open(host)
		if err != nil {
			continue
		}
		dynamic := false
		for _, p := range f.Progs {
			dynamic = dynamic || p.Type == elf.PT_INTERP
		}
		f.Close()
		_, err = oci.CheckStatic(host)
		switch {
		case dynamic && !errors.Is(err, oci.ErrNotStatic):
			t.Errorf("CheckStatic(%s), which has a PT_INTERP: %v, want ErrNotStatic", host, err)
		case !dynamic && err != nil:
			t.Errorf("CheckStatic(%s), which has no PT_INTERP: %v", host, err)
		}
	}
}

// CheckStatic reads the architecture off the ELF header: the machine, and
// for 64-bit PowerPC the byte order, which tells ppc64 from ppc64le.
func TestCheckStaticArchitecture(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		order   binary.ByteOrder
		machine elf.Machine
		want    string
	}{
		{binary.LittleEndian, elf.EM_X86_64, "amd64"},
		{binary.LittleEndian, elf.EM_AARCH64, "arm64"},
		{binary.LittleEndian, elf.EM_PPC64, "ppc64le"},
		{binary.BigEndian, elf.EM_PPC64, "ppc64"},
		{binary.BigEndian, elf.EM_S390, "s390x"},
		// KnownArch takes the four MIPS architectures: their binaries
		// must be recognised too.
		{binary.BigEndian, elf.EM_MIPS, "mips64"},
		{binary.LittleEndian, elf.EM_MIPS, "mips64le"},
	} {
		p := filepath.Join(dir, tc.want)
		if err := os.WriteFile(p, fakeELF(tc.order, tc.machine, ""), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := oci.CheckStatic(p)
		if err != nil || got != tc.want {
			t.Errorf("CheckStatic of a static %v %v executable: %q, %v; want %q", tc.order, tc.machine, got, err, tc.want)
		}
	}
}

// TestCheckStaticRefuses32BitABIsOf64BitMachines: an ELFCLASS32 binary for
// x86-64 (x32) or RISC-V (riscv32) is no Go architecture and must not be
// taken for amd64 or riscv64; a 32-bit 386 binary is 386.
func TestCheckStaticRefuses32BitABIsOf64BitMachines(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		machine elf.Machine
		want    string // "" for an error
	}{
		{elf.EM_X86_64, ""},
		{elf.EM_RISCV, ""},
		{elf.EM_AARCH64, ""},
		{elf.EM_386, "386"},
	} {
		p := filepath.Join(dir, tc.machine.String())
		if err := os.WriteFile(p, fakeELF32(tc.machine), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := oci.CheckStatic(p)
		switch {
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), "ELFCLASS32")):
			t.Errorf("CheckStatic of a 32-bit %v executable: %q, %v; want an error naming the class", tc.machine, got, err)
		case tc.want != "" && (err != nil || got != tc.want):
			t.Errorf("CheckStatic of a 32-bit %v executable: %q, %v; want %q", tc.machine, got, err, tc.want)
		}
	}
}

// fakeELF32 returns a minimal little-endian ELF32 executable header for
// machine, with no program headers.
func fakeELF32(machine elf.Machine) []byte {
	const ehsize = 52
	b := make([]byte, ehsize)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 1, 1, 1 // ELFCLASS32, little endian, version 1
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2) // ET_EXEC
	le.PutUint16(b[18:], uint16(machine))
	le.PutUint32(b[20:], 1) // version
	le.PutUint32(b[24:], 0x8049000)
	le.PutUint16(b[40:], ehsize)
	le.PutUint16(b[42:], 32) // phentsize
	return b
}

// A file that cannot be opened is reported as such, not as a file that
// is not ELF.
func TestCheckStaticReportsOpenError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing")
	_, err := oci.CheckStatic(p)
	if !errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("CheckStatic of a missing file: %v, want the open error, not \"not an ELF\"", err)
	}
	text := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := oci.CheckStatic(text); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("CheckStatic of a script: %v, want \"not an ELF\"", err)
	}
}

// Architecture must be a Go architecture, and the binary's.
func TestBuildArchitecture(t *testing.T) {
	bin := helloBinary(t)
	other := "arm64"
	if runtime.GOARCH == other {
		other = "amd64"
	}
	for _, tc := range []struct {
		arch, want string
	}{
		{"bogus", `Architecture "bogus": not a Go architecture (GOARCH)`},
		{other, `Architecture "` + other + `": the binary is ` + runtime.GOARCH},
	} {
		_, err := oci.Build(&oci.Options{Binary: bin, Architecture: tc.arch})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build with Architecture %q: %v, want an error containing %q", tc.arch, err, tc.want)
		}
	}
	img, err := oci.Build(&oci.Options{Binary: bin, Architecture: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Architecture != runtime.GOARCH {
		t.Errorf("config %+v, %v: want architecture %s", cf, err, runtime.GOARCH)
	}
}

// WriteLayout writes a new layout only into a missing or empty directory,
// and adds to one that holds an oci-layout file; it leaves any other
// directory as it was.
func TestWriteLayoutRefusesOtherDirectories(t *testing.T) {
	img, err := oci.Build(&oci.Options{Binary: helloBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	busy := filepath.Join(dir, "busy")
	if err := os.Mkdir(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(busy, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = oci.WriteLayout(busy, img, "afxdp/hello:test")
	if err == nil || !strings.Contains(err.Error(), busy) || !strings.Contains(err.Error(), "oci-layout") {
		t.Errorf("WriteLayout into a directory of other files: %v, want an error naming it and oci-layout", err)
	}
	if ents, _ := os.ReadDir(busy); len(ents) != 1 {
		t.Errorf("WriteLayout wrote into a directory of other files: it holds %v", ents)
	}
	if err := oci.CheckLayoutDir(busy); err == nil {
		t.Error("CheckLayoutDir of a directory of other files: no error")
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := oci.WriteLayout(file, img, ""); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("WriteLayout onto a regular file: %v", err)
	}

	// Missing, then added to; empty, then added to.
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(dir, "new", "layout"), empty} {
		for _, tag := range []string{"afxdp/hello:one", "afxdp/hello:two"} {
			if err := oci.CheckLayoutDir(d); err != nil {
				t.Errorf("CheckLayoutDir(%s) before adding %s: %v", d, tag, err)
			}
			if err := oci.WriteLayout(d, img, tag); err != nil {
				t.Fatalf("WriteLayout(%s, %s): %v", d, tag, err)
			}
		}
		for _, tag := range []string{"afxdp/hello:one", "afxdp/hello:two"} {
			if _, err := oci.Image(d, tag); err != nil {
				t.Error(err)
			}
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
		// runc (like Kubernetes) takes IDs up to 2147483647 only, and
		// 4294967295 is (uid_t)-1, no user at all: such an image could
		// be built but never run.
		{"uid_none", &oci.Options{Binary: bin, User: "4294967295"}, "UID 4294967295"},
		{"uid_beyond_int32", &oci.Options{Binary: bin, User: "2147483648:1000"}, "UID 2147483648"},
		{"uid_beyond_32_bits", &oci.Options{Binary: bin, User: "9999999999"}, "UID 9999999999"},
		{"gid_none", &oci.Options{Binary: bin, User: "1000:4294967295"}, "GID 4294967295"},
		// Runtimes mount /proc, /sys and /dev over the image's own: a
		// binary there is hidden and the container cannot start.
		{"under_proc", &oci.Options{Binary: bin, Entrypoint: "/proc/hello"}, "/proc"},
		{"under_dev", &oci.Options{Binary: bin, Entrypoint: "/dev/shm/hello"}, "/dev"},
		{"under_sys", &oci.Options{Binary: bin, Entrypoint: "/sys/hello"}, "/sys"},
		{"is_proc", &oci.Options{Binary: bin, Entrypoint: "/proc"}, "/proc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := oci.Build(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

// TestBuildLimits: the largest IDs runc runs and entrypoints that merely
// start like a mounted directory are taken.
func TestBuildLimits(t *testing.T) {
	bin := helloBinary(t)
	for _, o := range []*oci.Options{
		{Binary: bin, User: "2147483647:2147483647"},
		{Binary: bin, User: "0001"},
		{Binary: bin, Entrypoint: "/procs/hello"},
		{Binary: bin, Entrypoint: "/device"},
		{Binary: bin, Entrypoint: "/usr/sys/hello"},
	} {
		if _, err := oci.Build(o); err != nil {
			t.Errorf("Build(User %q, Entrypoint %q): %v", o.User, o.Entrypoint, err)
		}
	}
}

// TestBuildUserWithoutGID: a User without a GID is written as UID:UID.
// A runtime that finds no /etc/passwd entry for a UID alone runs it in
// group 0, root's (Docker does), where the runc bundles of internal/runc
// take the UID's number: the image must say which.
func TestBuildUserWithoutGID(t *testing.T) {
	bin := helloBinary(t)
	for user, want := range map[string]string{"4242": "4242:4242", "4242:7": "4242:7", "4242:0": "4242:0"} {
		img, err := oci.Build(&oci.Options{Binary: bin, User: user})
		if err != nil {
			t.Fatalf("Build(User %q): %v", user, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != want {
			t.Errorf("Build(User %q): image user %q, want %q", user, cf.Config.User, want)
		}
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
	return fakeELF(binary.LittleEndian, elf.EM_X86_64, interp)
}

// fakeELF returns a minimal ELF64 executable header of the given byte
// order and machine, with one PT_INTERP program header naming interp when
// interp is not empty, and none otherwise.
func fakeELF(order binary.ByteOrder, machine elf.Machine, interp string) []byte {
	const ehsize, phsize = 64, 56
	b := make([]byte, ehsize+phsize)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little endian, version 1
	if order == binary.BigEndian {
		b[5] = 2
	}
	order.PutUint16(b[16:], 2) // ET_EXEC
	order.PutUint16(b[18:], uint16(machine))
	order.PutUint32(b[20:], 1) // version
	order.PutUint64(b[24:], 0x401000)
	order.PutUint16(b[52:], ehsize)
	order.PutUint16(b[54:], phsize)
	if interp == "" {
		return b[:ehsize]
	}
	order.PutUint64(b[32:], ehsize) // phoff
	order.PutUint16(b[56:], 1)      // phnum
	ph := b[ehsize:]
	order.PutUint32(ph[0:], 3) // PT_INTERP
	order.PutUint32(ph[4:], 4) // PF_R
	order.PutUint64(ph[8:], ehsize+phsize)
	order.PutUint64(ph[32:], uint64(len(interp)+1))
	order.PutUint64(ph[40:], uint64(len(interp)+1))
	order.PutUint64(ph[48:], 1)
	return append(append(b, interp...), 0)
}
