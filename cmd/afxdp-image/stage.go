package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/afxdp/afxdp/internal/oci"
	"github.com/afxdp/afxdp/internal/runc"
)

// A run writes nothing where the user will look until every output is
// ready: the bundle and the tarball are made under names of their own
// beside their destinations and renamed into place last. Each step that
// makes something records how to remove it, so that a failure removes what
// this run made and nothing that was there before.

// undo is the removals of what a run has made, to run if a later step
// fails.
type undo []func() error

func (u *undo) add(f func() error) { *u = append(*u, f) }

// run removes in reverse order of making and joins every failure.
func (u undo) run() error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		errs = append(errs, u[i]())
	}
	return errors.Join(errs...)
}

// checkBundleDir says whether dir, the --bundle destination, exists; it
// must be missing or an empty directory.
func checkBundleDir(dir string) (exists bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, lerr := os.Lstat(dir); lerr == nil {
			return false, fmt.Errorf("--bundle %q: a symbolic link to nothing", dir)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("--bundle %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("--bundle %q: not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("--bundle %q: %w", dir, err)
	}
	if len(ents) > 0 {
		return false, fmt.Errorf("--bundle %q: directory not empty", dir)
	}
	return true, nil
}

// distinctOutputs fails if two of the outputs given (flag, path; an
// empty path is not given) name the same path.
func distinctOutputs(outs [][2]string) error {
	for i, a := range outs {
		for _, b := range outs[i+1:] {
			if a[1] == "" || b[1] == "" {
				continue
			}
			pa, erra := filepath.Abs(a[1])
			pb, errb := filepath.Abs(b[1])
			if erra == nil && errb == nil && pa == pb {
				return fmt.Errorf("%s and %s: both %s: give each output its own path", a[0], b[0], pa)
			}
		}
	}
	return nil
}

// removeLayoutFiles removes what an OCI image layout adds to a directory:
// oci-layout, index.json and blobs/.
func removeLayoutFiles(dir string) error {
	var errs []error
	for _, name := range []string{"blobs", "index.json", oci.LayoutFile} {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, name)))
	}
	return errors.Join(errs...)
}

// mkdirAll is os.MkdirAll that records, in u, the removal of what it made.
func mkdirAll(u *undo, dir string) error {
	top, err := runc.FirstMissing(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if top != "" {
		u.add(func() error { return os.RemoveAll(top) })
	}
	return nil
}

// unique makes, with mk, a new entry in dir named prefix and random
// digits, and returns its path.
func unique(dir, prefix string, mk func(string) error) (string, error) {
	for range 16 {
		var b [6]byte
		rand.Read(b[:])
		p := filepath.Join(dir, prefix+hex.EncodeToString(b[:]))
		err := mk(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("make a new entry %s* in %s: all names taken", prefix, dir)
}

func mkdir(p string) error { return os.Mkdir(p, 0o755) }

func mkfile(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		return err
	}
	return f.Close()
}

// stagedBundle is a runc bundle unpacked in a directory of this run's own,
// to be moved to its destination by commit.
type stagedBundle struct {
	dir    string // the --bundle destination
	exists bool   // dir existed (empty) before the run
	tmp    string // the staging directory, which this run made
}

// stageBundle unpacks img and writes its config.json, with spec, in a new
// directory: inside dir when it exists (so that commit renames within one
// file system), otherwise beside it, making its parents if need be.
func stageBundle(u *undo, img v1.Image, dir string, exists bool, spec *runc.SpecOptions, runArgs []string) (*stagedBundle, error) {
	s := &stagedBundle{dir: dir, exists: exists}
	parent, prefix := dir, ".afxdp-image-"
	if !exists {
		parent, prefix = filepath.Dir(dir), "."+filepath.Base(dir)+".afxdp-image-"
		if err := mkdirAll(u, parent); err != nil {
			return nil, fmt.Errorf("--bundle %q: %w", dir, err)
		}
	}
	var err error
	s.tmp, err = unique(parent, prefix, mkdir)
	if err != nil {
		return nil, fmt.Errorf("--bundle %q: %w", dir, err)
	}
	u.add(func() error { return os.RemoveAll(s.tmp) })
	// runc.UnpackImage wants an empty directory, and on failure removes
	// the directory it was given: here, only what this run made.
	b, err := runc.UnpackImage(img, s.tmp)
	if err != nil {
		return nil, err
	}
	if len(runArgs) > 0 {
		spec.Args = append(append([]string{}, b.Image.Entrypoint...), runArgs...)
	}
	if err := b.WriteConfig(spec); err != nil {
		return nil, err
	}
	return s, nil
}

// commit moves the bundle to its destination, recording in u how to take
// it out again.
func (s *stagedBundle) commit(u *undo) error {
	if !s.exists {
		if err := os.Rename(s.tmp, s.dir); err != nil {
			return fmt.Errorf("--bundle %q: %w", s.dir, err)
		}
		u.add(func() error { return os.RemoveAll(s.dir) })
		return nil
	}
	for _, name := range []string{"rootfs", "config.json"} {
		dst := filepath.Join(s.dir, name)
		if err := os.Rename(filepath.Join(s.tmp, name), dst); err != nil {
			return fmt.Errorf("--bundle %q: %w", s.dir, err)
		}
		u.add(func() error { return os.RemoveAll(dst) })
	}
	if err := os.Remove(s.tmp); err != nil {
		return fmt.Errorf("--bundle %q: %w", s.dir, err)
	}
	return nil
}
