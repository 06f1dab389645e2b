package runc

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/afxdp/afxdp/internal/oci"
)

// ImageConfig is the part of an image's config that a bundle's process
// starts from.
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// User is the image's "UID[:GID]" (or a name, which WriteConfig cannot
	// resolve in an image without /etc/passwd).
	User string
}

// Bundle is an OCI runtime bundle directory: rootfs/ and, after
// [Bundle.WriteConfig], config.json.
type Bundle struct {
	// Dir is the bundle directory, passed to `runc run --bundle`.
	Dir string
	// Image is the config of the image the rootfs came from.
	Image ImageConfig

	closeOnce sync.Once
}

// Unpack makes a bundle in dir (which must not exist or be empty) from the
// image named tag in the OCI image layout at layoutDir ("" when the layout
// holds one image). File owners are kept when running as root.
func Unpack(layoutDir, tag, dir string) (_ *Bundle, err error) {
	img, err := oci.Image(layoutDir, tag)
	if err != nil {
		return nil, fmt.Errorf("unpack: %w", err)
	}
	return UnpackImage(img, dir)
}

// UnpackImage makes a bundle in dir from img; see [Unpack]. If it fails,
// it removes what it made: dir itself, and the parents made for it, only
// if they did not exist before.
func UnpackImage(img v1.Image, dir string) (_ *Bundle, err error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("unpack: read image config: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if len(ents) > 0 {
		return nil, fmt.Errorf("unpack into %s: directory not empty", dir)
	}
	// top is the topmost of dir and its parents that MkdirAll makes, ""
	// if dir is there already.
	top, err := FirstMissing(dir)
	if err != nil {
		return nil, fmt.Errorf("unpack into %s: %w", dir, err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		if top != "" {
			os.RemoveAll(top)
		}
		return nil, fmt.Errorf("unpack: %w", err)
	}
	b := &Bundle{Dir: dir, Image: ImageConfig{
		Entrypoint: cf.Config.Entrypoint,
		Cmd:        cf.Config.Cmd,
		Env:        cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
	}}
	defer func() {
		// A failure leaves dir as it was found: a directory the caller
		// made stays, empty; one made here goes, with the parents made
		// for it.
		switch {
		case err == nil:
		case top == "":
			os.RemoveAll(rootfs)
		default:
			os.RemoveAll(top)
		}
	}()

	// Extract flattens the layers, applying whiteouts: each path appears
	// once, as the topmost layer has it.
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := untar(rc, rootfs); err != nil {
		return nil, fmt.Errorf("unpack into %s: %w", rootfs, err)
	}
	return b, nil
}

// untar writes the tar stream r below dir. An os.Root confines every
// operation to dir, also through symbolic links in the archive.
func untar(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	chown := os.Geteuid() == 0
	// Extract emits the upper layers first, so a hard link may come
	// before its target: make links once every file is there.
	var links [][2]string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			// mutate.Extract ends the archive before it reports an
			// error (a bad layer, an unsafe path): read on to get it.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return fmt.Errorf("read layers: %w", err)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		if name == "." {
			continue
		}
		if !fs.ValidPath(name) {
			return fmt.Errorf("entry %q: path outside the rootfs", h.Name)
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		}
		mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		case tar.TypeReg:
			if err := removeNonDir(root, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := removeNonDir(root, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			if chown {
				if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
					return fmt.Errorf("entry %q: %w", h.Name, err)
				}
			}
			continue
		case tar.TypeLink:
			target := path.Clean(strings.TrimPrefix(h.Linkname, "/"))
			if !fs.ValidPath(target) {
				return fmt.Errorf("entry %q: link target %q outside the rootfs", h.Name, h.Linkname)
			}
			links = append(links, [2]string{target, name})
			continue // a hard link shares its target's mode and owner
		default:
			// Device nodes, FIFOs and the like: runc gives the
			// container its own /dev, and an AF_XDP program image
			// has no use for them.
			continue
		}
		if chown {
			if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		}
		// Chmod after chown: chown clears the set-ID bits.
		if err := root.Chmod(name, mode); err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
	}
	for _, l := range links {
		if err := removeNonDir(root, l[1]); err != nil {
			return fmt.Errorf("entry %q: %w", l[1], err)
		}
		if err := root.Link(l[0], l[1]); err != nil {
			return fmt.Errorf("entry %q: %w", l[1], err)
		}
	}
	return nil
}

func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return root.RemoveAll(name)
	}
	return root.Remove(name)
}

// Close removes the bundle directory. A second Close returns nil; Closes
// called at the same time wait for the first.
func (b *Bundle) Close() (err error) {
	b.closeOnce.Do(func() {
		if rerr := os.RemoveAll(b.Dir); rerr != nil {
			err = fmt.Errorf("remove bundle: %w", rerr)
		}
	})
	return err
}

// FirstMissing is the topmost of p and its parents that does not exist:
// what os.MkdirAll(p) would make, so that removing it undoes that. It is ""
// when p exists.
func FirstMissing(p string) (string, error) {
	p = filepath.Clean(p)
	missing := ""
	for {
		_, err := os.Lstat(p)
		if err == nil {
			return missing, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		missing = p
		parent := filepath.Dir(p)
		if parent == p {
			return missing, nil
		}
		p = parent
	}
}

// parseUser reads a numeric "UID[:GID]"; a missing GID equals the UID.
func parseUser(s string) (uid, gid uint32, err error) {
	us, gs, hasGID := strings.Cut(s, ":")
	u, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: must be numeric UID[:GID] (the image has no /etc/passwd)", s)
	}
	g := u
	if hasGID {
		g, err = strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("user %q: must be numeric UID[:GID]", s)
		}
	}
	return uint32(u), uint32(g), nil
}
