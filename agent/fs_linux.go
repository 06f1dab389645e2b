package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The system calls the agent makes on its socket directories, kept
// together here.
//
// The agent runs as root and creates, chowns and chmods in SocketDir, which
// defaults to a path under /tmp that any user may create first. It
// therefore never changes the mode or owner of anything through a path
// that someone else could redirect: it walks to SocketDir one directory at
// a time with openat(O_NOFOLLOW), checking each one, and works on the
// device's directory through a descriptor.

// maxSymlinks bounds the symbolic links followed on the way to SocketDir,
// as the kernel's own path walk does (MAXSYMLINKS).
const maxSymlinks = 40

// openSocketDir opens the directory at path, creating what is missing of
// it with mode 0755, and returns its descriptor after making sure that
// only the agent's user (or root) can change what it holds:
//   - every directory on the way must belong to root or the agent's user
//     and be writable by nobody else, unless it has the sticky bit (as
//     /tmp does: others may add entries there, but not rename or remove
//     the agent's);
//   - a symbolic link on the way is followed only if it belongs to root or
//     the agent's user (the rule of fs.protected_symlinks);
//   - the directory itself must not be a symbolic link, must belong to
//     root or the agent's user and be writable by nobody else.
//
// The directories it creates are appended to made (if not nil), parents
// first, also when it fails.
func openSocketDir(path string, made *[]string) (fd int, err error) {
	return openTrustedDir(path, "socket directory", false, made)
}

// openPinDir is openSocketDir for ServerOptions.PinDir, with one rule
// less: the pin directory itself may be writable by others if it is sticky
// (the root of a bpffs mounted without a mode is 1777), since the agent
// pins only in <PinDir>/<device>, which openPinDeviceDir checks.
func openPinDir(path string, made *[]string) (fd int, err error) {
	return openTrustedDir(path, "pin directory", true, made)
}

// openTrustedDir does the work of openSocketDir and openPinDir; what names
// the directory in errors, stickyLast lets the directory itself be
// writable by others when it is sticky, and made receives the directories
// created.
func openTrustedDir(path, what string, stickyLast bool, made *[]string) (_ int, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return -1, fmt.Errorf(what+" %s: %w", path, err)
	}
	dir, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf(what+" %s: %w", abs, os.NewSyscallError("open /", err))
	}
	// dir is the directory reached so far; a failure closes it. (Not the
	// named result: each failure sets that to -1 before this runs.)
	defer func() {
		if err != nil {
			unix.Close(dir)
		}
	}()
	cur := "/"
	rest := splitPath(abs)
	if err := checkDirFD(dir, what, cur, len(rest) == 0 && !stickyLast); err != nil {
		return -1, err
	}
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		last := len(rest) == 0
		next := filepath.Join(cur, name)
		nfd, err := openDirAt(dir, name)
		created := false
		if errors.Is(err, unix.ENOENT) {
			merr := unix.Mkdirat(dir, name, 0o755)
			if merr != nil && !errors.Is(merr, unix.EEXIST) {
				return -1, fmt.Errorf("create "+what+" %s: %w", next, os.NewSyscallError("mkdirat", merr))
			}
			if created = merr == nil; created {
				noteMade(made, next)
			}
			nfd, err = openDirAt(dir, name)
		}
		if err == nil && created {
			// The umask may have taken bits off the 0755 the
			// documentation promises, and users other than root
			// need them to reach their sockets.
			if err := unix.Fchmod(nfd, 0o755); err != nil {
				unix.Close(nfd)
				return -1, fmt.Errorf("create "+what+" %s: %w", next, os.NewSyscallError("fchmod", err))
			}
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			target, lerr := trustedLink(dir, what, name, next)
			if lerr != nil {
				return -1, lerr
			}
			if target == "" {
				return -1, fmt.Errorf(what+" %s: not a directory: %w", next, err)
			}
			if last {
				return -1, fmt.Errorf(what+" %s: is a symbolic link (to %s); give the directory itself", next, target)
			}
			if links++; links > maxSymlinks {
				return -1, fmt.Errorf(what+" %s: %w", abs, os.NewSyscallError("openat", unix.ELOOP))
			}
			if filepath.IsAbs(target) {
				root, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return -1, fmt.Errorf(what+" %s: %w", abs, os.NewSyscallError("open /", err))
				}
				unix.Close(dir)
				dir, cur = root, "/"
			}
			rest = append(splitPath(target), rest...)
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("open "+what+" %s: %w", next, os.NewSyscallError("openat", err))
		}
		if err := checkDirFD(nfd, what, next, last && !stickyLast); err != nil {
			unix.Close(nfd)
			return -1, err
		}
		unix.Close(dir)
		dir, cur = nfd, next
	}
	return dir, nil
}

// splitPath returns the names in path, without empty ones and ".".
func splitPath(path string) []string {
	var names []string
	for _, n := range strings.Split(path, "/") {
		if n != "" && n != "." {
			names = append(names, n)
		}
	}
	return names
}

// openDirAt opens the directory name in dirfd without following a
// symbolic link.
func openDirAt(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// trustedLink returns the target of the symbolic link name in dirfd (path
// names it in errors), or "" if name is not a symbolic link. It fails if
// someone other than root or the agent's user owns the link.
func trustedLink(dirfd int, what, name, path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "", fmt.Errorf(what+" %s: %w", path, os.NewSyscallError("fstatat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", nil
	}
	if !trustedOwner(st.Uid) {
		return "", fmt.Errorf(what+" %s: symbolic link owned by uid %d, not root", path, st.Uid)
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", fmt.Errorf(what+" %s: %w", path, os.NewSyscallError("readlinkat", err))
	}
	return string(buf[:n]), nil
}

// checkDirFD fails unless the directory open as fd belongs to root or the
// agent's user and nobody else may write to it; a sticky directory passes
// unless it is the directory itself (last).
// what and path name the directory in errors.
func checkDirFD(fd int, what, path string, last bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf(what+" %s: %w", path, os.NewSyscallError("fstat", err))
	}
	if !trustedOwner(st.Uid) {
		return fmt.Errorf(what+" %s: owned by uid %d, not root: another user could plant links in it", path, st.Uid)
	}
	perm := st.Mode & 0o7777
	if perm&0o022 != 0 && (last || perm&unix.S_ISVTX == 0) {
		return fmt.Errorf(what+" %s: mode %04o: writable by group or others", path, perm)
	}
	return nil
}

// trustedOwner reports whether uid is root or the agent's user.
func trustedOwner(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// deviceDir is a device's directory in the socket directory, open while
// the server sets it up.
type deviceDir struct {
	fd   int
	path string
}

// openDeviceDir creates (mode 0700) or opens the directory name in the
// socket directory sdfd, and makes it the agent's own: owned by the
// agent's user, group root, mode 0700. A directory left by an agent that
// died may belong to the allowed user it was handed to; nobody else can
// have made it, since only root writes in the socket directory. A symbolic
// link or anything but a directory is refused. If it creates the
// directory, it appends path to made (if not nil).
func openDeviceDir(sdfd int, name, path string, made *[]string) (_ *deviceDir, err error) {
	switch err := unix.Mkdirat(sdfd, name, 0o700); {
	case err == nil:
		noteMade(made, path)
	case !errors.Is(err, unix.EEXIST):
		return nil, fmt.Errorf("create socket directory %s: %w", path, os.NewSyscallError("mkdirat", err))
	}
	fd, err := openDirAt(sdfd, name)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var st unix.Stat_t
		if unix.Fstatat(sdfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return nil, fmt.Errorf("socket directory %s: is a symbolic link", path)
		}
		return nil, fmt.Errorf("socket directory %s: not a directory: %w", path, os.NewSyscallError("openat", err))
	}
	if err != nil {
		return nil, fmt.Errorf("open socket directory %s: %w", path, os.NewSyscallError("openat", err))
	}
	d := &deviceDir{fd: fd, path: path}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if err := unix.Fchown(fd, os.Geteuid(), 0); err != nil {
		return nil, fmt.Errorf("take socket directory %s: %w", path, os.NewSyscallError("fchown", err))
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return nil, fmt.Errorf("take socket directory %s: %w", path, os.NewSyscallError("fchmod", err))
	}
	return d, nil
}

// removeStale removes the entry name (a socket left by an agent that died),
// if there is one. It does not follow a symbolic link.
func (d *deviceDir) removeStale(name string) error {
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove stale socket %s: %w", filepath.Join(d.path, name), os.NewSyscallError("unlinkat", err))
	}
	return nil
}

// setEntry sets the owner and mode of the entry name, which must not be a
// symbolic link. It is called while the directory is still the agent's
// alone, so nobody can swap the entry in between.
func (d *deviceDir) setEntry(name string, mode os.FileMode, uid, gid int) error {
	p := filepath.Join(d.path, name)
	if err := unix.Fchownat(d.fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set owner of %s: %w", p, os.NewSyscallError("fchownat", err))
	}
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set mode of %s: %w", p, os.NewSyscallError("fstatat", err))
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("set mode of %s: is a symbolic link", p)
	}
	if err := unix.Fchmodat(d.fd, name, uint32(mode.Perm()), 0); err != nil {
		return fmt.Errorf("set mode of %s: %w", p, os.NewSyscallError("fchmodat", err))
	}
	return nil
}

// handOver gives the directory its final owner and mode.
func (d *deviceDir) handOver(mode os.FileMode, uid, gid int) error {
	if err := unix.Fchown(d.fd, uid, gid); err != nil {
		return fmt.Errorf("set owner of %s: %w", d.path, os.NewSyscallError("fchown", err))
	}
	if err := unix.Fchmod(d.fd, uint32(mode.Perm())); err != nil {
		return fmt.Errorf("set mode of %s: %w", d.path, os.NewSyscallError("fchmod", err))
	}
	return nil
}

// Close closes the directory's descriptor. A second Close returns nil.
func (d *deviceDir) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return fmt.Errorf("close socket directory %s: %w", d.path, os.NewSyscallError("close", err))
	}
	return nil
}

// openPinDeviceDir creates (mode 0755) or opens the directory name in the
// pin directory pdfd (path names it in errors), and returns its descriptor
// after making sure that it is no symbolic link, belongs to root or the
// agent's user and is writable by nobody else: a user who made it first,
// in a pin directory that others may write to, could otherwise unlink or
// replace the pin in it, or lead the agent to another directory. If it
// creates the directory, it appends path to made (if not nil).
func openPinDeviceDir(pdfd int, name, path string, made *[]string) (_ int, err error) {
	merr := unix.Mkdirat(pdfd, name, 0o755)
	if merr != nil && !errors.Is(merr, unix.EEXIST) {
		return -1, fmt.Errorf("create pin directory %s: %w", path, os.NewSyscallError("mkdirat", merr))
	}
	if merr == nil {
		noteMade(made, path)
	}
	fd, err := openDirAt(pdfd, name)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var st unix.Stat_t
		if unix.Fstatat(pdfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, fmt.Errorf("pin directory %s: is a symbolic link", path)
		}
		return -1, fmt.Errorf("pin directory %s: not a directory: %w", path, os.NewSyscallError("openat", err))
	}
	if err != nil {
		return -1, fmt.Errorf("open pin directory %s: %w", path, os.NewSyscallError("openat", err))
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if merr == nil {
		// The umask may have taken bits off: clients need to reach
		// the pin.
		if err := unix.Fchmod(fd, 0o755); err != nil {
			return -1, fmt.Errorf("create pin directory %s: %w", path, os.NewSyscallError("fchmod", err))
		}
	}
	if err := checkDirFD(fd, "pin directory", path, true); err != nil {
		return -1, err
	}
	return fd, nil
}

// removeStaleAt removes the entry name in the directory dirfd (path names
// it in errors), if there is one, without following a symbolic link.
func removeStaleAt(dirfd int, name, path string) error {
	if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove stale %s: %w", path, os.NewSyscallError("unlinkat", err))
	}
	return nil
}

// renameAt renames the entry from in the directory dirfd to to, replacing
// what is there (a symbolic link there is replaced, not followed) in one
// step: the path names the old entry or the new, never nothing. path
// names to in errors.
func renameAt(dirfd int, from, to, path string) error {
	if err := unix.Renameat(dirfd, from, dirfd, to); err != nil {
		return fmt.Errorf("replace %s: %w", path, os.NewSyscallError("renameat", err))
	}
	return nil
}

// noteMade appends the directory path to made, unless made is nil.
func noteMade(made *[]string, path string) {
	if made != nil {
		*made = append(*made, path)
	}
}
