package oci

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultUser is the image's default user: the numeric UID:GID 65534:65534
// ("nobody"). It is numeric because the image has no /etc/passwd to look a
// name up in.
const DefaultUser = "65534:65534"

// RefNameAnnotation is the OCI annotation that names an image inside a
// layout's index.json (the tag given to [WriteLayout]).
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// ErrNotStatic is returned (wrapped) by [CheckStatic] and [Build] for an
// executable that needs a dynamic loader.
var ErrNotStatic = errors.New("executable is dynamically linked")

// Options configures [Build]. Only Binary is required.
type Options struct {
	// Binary is the host path of the statically linked executable.
	Binary string
	// Entrypoint is the absolute path the binary gets inside the image, run
	// as the image's entrypoint; not under /proc, /sys or /dev, which
	// runtimes mount over. Default "/" + the binary's base name.
	Entrypoint string
	// Args are extra entrypoint arguments after the path. Default none.
	Args []string
	// Cmd is the image's default command (arguments a runtime appends and
	// a user may override). Default none.
	Cmd []string
	// User is the "UID[:GID]" the container runs as; it must be numeric,
	// the UID not 0, and neither above [MaxID]. Default [DefaultUser].
	// Without a GID the image gets "UID:UID": runtimes that find no
	// /etc/passwd entry for a UID alone run it in group 0 (Docker, for
	// one), which is root's.
	User string
	// Env is extra environment ("KEY=value"); PATH=/ is always set.
	Env []string
	// Labels are the image config's labels. Default none.
	Labels map[string]string
	// Architecture is the GOARCH-style architecture of the image: a Go
	// architecture (see [KnownArch]), and the one of the binary's ELF
	// header, which is the default.
	Architecture string
}

// Build makes a single-layer image holding the binary.
func Build(opts *Options) (v1.Image, error) {
	if opts == nil || opts.Binary == "" {
		return nil, errors.New("build image: Binary: must be set")
	}
	o := *opts
	if o.Entrypoint == "" {
		o.Entrypoint = "/" + path.Base(o.Binary)
	}
	if !path.IsAbs(o.Entrypoint) || path.Clean(o.Entrypoint) != o.Entrypoint || o.Entrypoint == "/" {
		return nil, fmt.Errorf("build image: Entrypoint %q: must be a clean absolute file path", o.Entrypoint)
	}
	for _, m := range runtimeMounts {
		if o.Entrypoint == m || strings.HasPrefix(o.Entrypoint, m+"/") {
			return nil, fmt.Errorf("build image: Entrypoint %q: container runtimes mount %s over the image's, which would hide the binary", o.Entrypoint, m)
		}
	}
	if o.User == "" {
		o.User = DefaultUser
	}
	if err := validateUser(o.User); err != nil {
		return nil, fmt.Errorf("build image: User %q: %w", o.User, err)
	}
	if !strings.Contains(o.User, ":") {
		o.User += ":" + o.User
	}
	for _, e := range o.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return nil, fmt.Errorf("build image: Env %q: must be KEY=value", e)
		}
	}

	arch, err := CheckStatic(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	switch {
	case o.Architecture == "":
		o.Architecture = arch
	case !KnownArch(o.Architecture):
		return nil, fmt.Errorf("build image: Architecture %q: not a Go architecture (GOARCH) of Linux", o.Architecture)
	case o.Architecture != arch:
		return nil, fmt.Errorf("build image: Architecture %q: the binary is %s (its ELF header)", o.Architecture, arch)
	}

	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	layerTar, err := layerTar(o.Entrypoint, bin)
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("build image: make layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: time.Unix(0, 0).UTC()},
			CreatedBy: "afxdp-image --binary " + path.Base(o.Binary),
			Comment:   "static executable at " + o.Entrypoint,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("build image: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("build image: read config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = o.Architecture
	cf.OS = "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = append([]string{o.Entrypoint}, o.Args...)
	cf.Config.Cmd = o.Cmd
	cf.Config.User = o.User
	cf.Config.WorkingDir = "/"
	cf.Config.Env = append([]string{"PATH=/"}, o.Env...)
	if len(o.Labels) > 0 {
		cf.Config.Labels = make(map[string]string, len(o.Labels))
		for k, v := range o.Labels {
			cf.Config.Labels[k] = v
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("build image: set config: %w", err)
	}
	return img, nil
}

// MaxID is the largest UID or GID an image may run as: runc refuses larger
// ones ("uids and gids must be in range 0-2147483647"), and so does
// Kubernetes; 4294967295 is (uid_t)-1, no user at all.
const MaxID = math.MaxInt32

func validateUser(u string) error {
	uid, gid, hasGID := strings.Cut(u, ":")
	if !isNumber(uid) || (hasGID && !isNumber(gid)) {
		return errors.New("must be numeric UID[:GID]")
	}
	if strings.Trim(uid, "0") == "" {
		return errors.New("must not be root (UID 0)")
	}
	ids := [][2]string{{"UID", uid}}
	if hasGID {
		ids = append(ids, [2]string{"GID", gid})
	}
	for _, id := range ids {
		// isNumber allows at most 10 digits: this cannot overflow.
		if v, _ := strconv.ParseUint(id[1], 10, 64); v > MaxID {
			return fmt.Errorf("%s %s: must be at most %d (runc refuses more)", id[0], id[1], MaxID)
		}
	}
	return nil
}

// runtimeMounts are the directories that container runtimes mount over
// the image's own (proc, sysfs and a tmpfs), hiding what the image has
// there.
var runtimeMounts = []string{"/proc", "/sys", "/dev"}

func isNumber(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// layerTar returns an uncompressed tar holding the parent directories of
// entry (0755) and the binary (0755), all owned by root, timestamps at the
// epoch.
func layerTar(entry string, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	rel := strings.TrimPrefix(entry, "/")
	parts := strings.Split(rel, "/")
	for i := 1; i < len(parts); i++ {
		dir := strings.Join(parts[:i], "/") + "/"
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX,
		}); err != nil {
			return nil, fmt.Errorf("write layer: %w", err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: rel, Mode: 0o755, Size: int64(len(bin)), ModTime: epoch, Format: tar.FormatPAX,
	}); err != nil {
		return nil, fmt.Errorf("write layer: %w", err)
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, fmt.Errorf("write layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write layer: %w", err)
	}
	return buf.Bytes(), nil
}

// CheckStatic reports whether the file at p is a Linux ELF executable that
// needs no dynamic loader, and returns its GOARCH-style architecture. A
// dynamically linked one gives an error wrapping [ErrNotStatic].
func CheckStatic(p string) (arch string, err error) {
	file, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("check %w", err)
	}
	defer file.Close()
	f, err := elf.NewFile(file)
	if err != nil {
		return "", fmt.Errorf("check %s: not an ELF executable: %w", p, err)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("check %s: ELF type %v: not an executable", p, f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		interp, rerr := io.ReadAll(io.LimitReader(prog.Open(), 4096))
		if rerr != nil {
			return "", fmt.Errorf("check %s: read PT_INTERP: %w", p, rerr)
		}
		return "", fmt.Errorf("check %s: %w (interpreter %s): rebuild it statically, for Go with CGO_ENABLED=0",
			p, ErrNotStatic, strings.TrimRight(string(interp), "\x00"))
	}
	if f.Type == elf.ET_DYN && f.Entry == 0 {
		return "", fmt.Errorf("check %s: shared library, not an executable", p)
	}
	arch, ok := elfArch[f.Machine]
	if !ok {
		return "", fmt.Errorf("check %s: unknown ELF machine %v", p, f.Machine)
	}
	switch {
	case f.Machine == elf.EM_PPC64 && f.Data == elf.ELFDATA2MSB:
		arch = "ppc64"
	case f.Machine == elf.EM_MIPS:
		// One machine for four architectures: the class and the byte
		// order tell them apart.
		if f.Class == elf.ELFCLASS64 {
			arch += "64"
		}
		if f.Data == elf.ELFDATA2LSB {
			arch += "le"
		}
	}
	if arch == "arm" && f.Class == elf.ELFCLASS64 || arch == "386" && f.Class == elf.ELFCLASS64 {
		return "", fmt.Errorf("check %s: ELF machine %v with class %v", p, f.Machine, f.Class)
	}
	if f.Class == elf.ELFCLASS32 && is64[arch] {
		// x32 (EM_X86_64), riscv32 (EM_RISCV) and the like: 32-bit
		// code for a 64-bit machine, no Go architecture.
		return "", fmt.Errorf("check %s: ELF machine %v with class %v: a 32-bit ABI of a 64-bit machine (x32, riscv32), not a Go architecture", p, f.Machine, f.Class)
	}
	return arch, nil
}

// elfArch is the architecture of each ELF machine CheckStatic knows; a
// big-endian EM_PPC64 is ppc64, not ppc64le, and EM_MIPS is one of mips,
// mipsle, mips64 and mips64le by class and byte order.
var elfArch = map[elf.Machine]string{
	elf.EM_X86_64:    "amd64",
	elf.EM_AARCH64:   "arm64",
	elf.EM_386:       "386",
	elf.EM_ARM:       "arm",
	elf.EM_RISCV:     "riscv64",
	elf.EM_PPC64:     "ppc64le",
	elf.EM_S390:      "s390x",
	elf.EM_LOONGARCH: "loong64",
	elf.EM_MIPS:      "mips",
}

// is64 are the architectures whose binaries are ELFCLASS64 only.
var is64 = map[string]bool{"amd64": true, "arm64": true, "riscv64": true, "ppc64": true, "ppc64le": true, "s390x": true, "loong64": true}

// KnownArch reports whether arch is a Go architecture (GOARCH) that Go
// builds Linux executables for (`go tool dist list`).
func KnownArch(arch string) bool {
	switch arch {
	case "386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le",
		"ppc64", "ppc64le", "riscv64", "s390x":
		return true
	}
	return false
}

// LayoutFile is the file that marks a directory as an OCI image layout.
const LayoutFile = "oci-layout"

// CheckLayoutDir checks that [WriteLayout] may write to dir: it is missing
// (WriteLayout makes it), an empty directory, or an OCI image layout
// (holding an oci-layout file) whose index can be read. A directory that
// holds anything else is refused, so that a layout's files never land
// among a user's.
func CheckLayoutDir(dir string) error {
	if _, err := layoutState(dir); err != nil {
		return fmt.Errorf("check layout %s: %w", dir, err)
	}
	return nil
}

// layoutState says whether dir holds a layout (isLayout), or may get a new
// one (missing or empty); it refuses anything else.
func layoutState(dir string) (isLayout bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, errors.New("not a directory")
	}
	if lf, err := os.Stat(filepath.Join(dir, LayoutFile)); err == nil && lf.Mode().IsRegular() {
		// An existing layout: its index must be readable to add to it.
		p, err := layout.FromPath(dir)
		if err != nil {
			return false, fmt.Errorf("holds %s but no readable index: %w", LayoutFile, err)
		}
		idx, err := p.ImageIndex()
		if err == nil {
			_, err = idx.IndexManifest()
		}
		if err != nil {
			return false, fmt.Errorf("holds %s but no readable index: %w", LayoutFile, err)
		}
		return true, nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return false, fmt.Errorf("directory not empty and holds no %s file: not an OCI image layout; give a missing or empty directory", LayoutFile)
	}
	if err != nil && err != io.EOF {
		return false, err
	}
	return false, nil
}

// InitLayout makes dir a new, empty OCI image layout if it is missing or an
// empty directory, and reports whether it did; a layout already there is
// left as it is, and any other directory is refused (see
// [CheckLayoutDir]). If it fails, it removes the files it wrote (not the
// directories it made).
func InitLayout(dir string) (made bool, err error) {
	isLayout, err := layoutState(dir)
	if err != nil {
		return false, fmt.Errorf("init layout %s: %w", dir, err)
	}
	if isLayout {
		return false, nil
	}
	if _, err := layout.Write(dir, empty.Index); err != nil {
		os.Remove(filepath.Join(dir, "index.json"))
		os.Remove(filepath.Join(dir, LayoutFile))
		return false, fmt.Errorf("init layout %s: %w", dir, err)
	}
	return true, nil
}

// WriteLayout adds img to the OCI image layout at dir, annotated with tag
// as its ref name when tag is not empty. dir must be a layout already, or
// a missing or empty directory, in which WriteLayout makes a new layout;
// it refuses any other directory (see [CheckLayoutDir]).
func WriteLayout(dir string, img v1.Image, tag string) error {
	isLayout, err := layoutState(dir)
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	var p layout.Path
	if isLayout {
		p, err = layout.FromPath(dir)
	} else {
		p, err = layout.Write(dir, empty.Index)
	}
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	var opts []layout.Option
	if tag != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{RefNameAnnotation: tag}))
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	opts = append(opts, layout.WithPlatform(v1.Platform{OS: cf.OS, Architecture: cf.Architecture}))
	if err := p.AppendImage(img, opts...); err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	return nil
}

// WriteTarball writes img, tagged tag, as an archive that `docker load` and
// `podman load` read. An untagged tag gets ":latest"; an empty tag is an
// error, as docker load needs a name.
func WriteTarball(file string, img v1.Image, tag string) error {
	t, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("write tarball %s: tag %q: %w", file, tag, err)
	}
	if err := tarball.WriteToFile(file, t, img); err != nil {
		return fmt.Errorf("write tarball %s: %w", file, err)
	}
	return nil
}

// Image returns the image in the layout at dir whose ref name is tag; with
// tag "" the layout must hold exactly one image.
func Image(dir, tag string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	var found []v1.Descriptor
	for _, d := range m.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		if tag == "" || d.Annotations[RefNameAnnotation] == tag {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0 && tag == "":
		return nil, fmt.Errorf("open layout %s: no image", dir)
	case len(found) == 0:
		return nil, fmt.Errorf("open layout %s: no image named %q", dir, tag)
	case len(found) > 1 && tag == "":
		return nil, fmt.Errorf("open layout %s: %d images: name one", dir, len(found))
	}
	// With several images of one name, the last added wins.
	img, err := idx.Image(found[len(found)-1].Digest)
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	return img, nil
}
