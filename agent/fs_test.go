package agent

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/testenv"
)

// stat returns the owner and permission bits of path, not following a
// symbolic link.
func stat(t *testing.T, path string) (uid uint32, mode os.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Uid, st.Mode()
}

// TestSocketDirRefused: NewServer refuses a socket directory that another
// user could write to or redirect, names it, and changes nothing. The
// directory is checked before any device is set up, so these need no
// interface. Each refusal closes the descriptors of the directories it
// walked through.
func TestSocketDirRefused(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, base string) (socketDir, named string)
		want  string
	}{
		{"owned_by_another_user", func(t *testing.T, base string) (string, string) {
			d := mkdir(t, base, "sd", 0o755)
			chown(t, d, 65534)
			return d, d
		}, "owned by uid 65534"},
		{"world_writable", func(t *testing.T, base string) (string, string) {
			d := mkdir(t, base, "sd", 0o777)
			return d, d
		}, "writable by group or others"},
		{"sticky_world_writable", func(t *testing.T, base string) (string, string) {
			d := mkdir(t, base, "sd", 0o777|os.ModeSticky)
			return d, d
		}, "writable by group or others"},
		{"symlink", func(t *testing.T, base string) (string, string) {
			d := mkdir(t, base, "real", 0o755)
			l := filepath.Join(base, "link")
			symlink(t, d, l)
			return l, l
		}, "symbolic link"},
		{"parent_owned_by_another_user", func(t *testing.T, base string) (string, string) {
			p := mkdir(t, base, "parent", 0o755)
			chown(t, p, 65534)
			return filepath.Join(p, "sd"), p
		}, "owned by uid 65534"},
		{"parent_group_writable", func(t *testing.T, base string) (string, string) {
			p := mkdir(t, base, "parent", 0o775)
			return filepath.Join(p, "sd"), p
		}, "writable by group or others"},
		{"link_on_the_way_owned_by_another_user", func(t *testing.T, base string) (string, string) {
			real := mkdir(t, base, "real", 0o755)
			l := filepath.Join(base, "link")
			symlink(t, real, l)
			if err := os.Lchown(l, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(l, "sd"), l
		}, "symbolic link owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := socketDir(t)
			sd, named := tc.setup(t, base)
			fds := fdCount(t)
			_, err := NewServer(&ServerOptions{Devices: []Device{{Name: "afxdp-none"}}, SocketDir: sd, Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), named+":") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewServer = %v, want an error naming %s: %s", err, named, tc.want)
			}
			if after := fdCount(t); after != fds {
				t.Errorf("%d descriptors open after the refusal, %d before", after, fds)
			}
			if _, err := os.Lstat(filepath.Join(sd, "afxdp-none")); err == nil {
				t.Error("a device directory was made in a refused socket directory")
			}
		})
	}
}

// TestSocketDirCreated: what is missing of SocketDir is made, root's and
// 0755 whatever the umask (users other than root must be able to reach
// their sockets through it); a symbolic link on the way that root owns is
// followed. The server is one that works: a NewServer that fails removes
// what it made (TestNewServerFailedLeavesNothing).
func TestSocketDirCreated(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	base := socketDir(t)
	real := mkdir(t, base, "real", 0o755)
	symlink(t, "real", filepath.Join(base, "link"))
	sd := filepath.Join(base, "link", "a", "b")
	// No test in this package runs in parallel with this one, so the
	// process-wide umask change touches nothing else.
	umask := syscall.Umask(0o077)
	srv, err := NewServer(&ServerOptions{Devices: []Device{{Name: v.Host.Name}}, SocketDir: sd, Logger: testLogger(t)})
	syscall.Umask(umask)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if want := filepath.Join(sd, v.Host.Name, SocketName); srv.SocketPath(v.Host.Name) != want {
		t.Errorf("socket at %s, want %s", srv.SocketPath(v.Host.Name), want)
	}
	for _, d := range []string{filepath.Join(real, "a"), filepath.Join(real, "a", "b")} {
		uid, mode := stat(t, d)
		if uid != 0 || !mode.IsDir() || mode.Perm() != 0o755 {
			t.Errorf("%s: uid %d mode %v, want a directory of root's with mode 0755", d, uid, mode)
		}
	}
}

// TestNewServerFailedLeavesNothing: a NewServer that fails, whether before
// any device is set up or after the first of two, removes the directories
// it made (of SocketDir, PinDir and the devices') and no other: one that
// was there before, left by an earlier run, stays. It detaches what it
// attached.
func TestNewServerFailedLeavesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name    string
		served  bool // the first device exists, and the second is missing
		earlier bool // the directories are there from an earlier run
	}{
		{"missing_interface", false, false},
		{"second_device_missing", true, false},
		{"earlier_directories", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testenv.NewVeth(t, nil)
			base := mkdir(t, socketDir(t), "real", 0o755)
			symlink(t, "real", filepath.Join(filepath.Dir(base), "link"))
			sd := filepath.Join(filepath.Dir(base), "link", "a", "b")
			mnt := testenv.MountBPFFS(t)
			pinDir := filepath.Join(mnt, "p", "q")
			if tc.earlier {
				for _, d := range []string{filepath.Join(base, "a", "b", v.Host.Name), filepath.Join(mnt, "p", "q", v.Host.Name)} {
					if err := os.MkdirAll(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			before := append(tree(t, base), tree(t, mnt)...)
			devs := []Device{{Name: "afxdp-none"}}
			if tc.served {
				devs = []Device{{Name: v.Host.Name}, {Name: "afxdp-none"}}
			}
			srv, err := NewServer(&ServerOptions{Devices: devs, SocketDir: sd, PinDir: pinDir, Logger: testLogger(t)})
			if err == nil {
				srv.Close()
				t.Fatal("NewServer for a missing interface succeeded")
			}
			if !strings.Contains(err.Error(), "device afxdp-none") {
				t.Errorf("NewServer = %v, want an error naming device afxdp-none", err)
			}
			if after := append(tree(t, base), tree(t, mnt)...); !slices.Equal(after, before) {
				t.Errorf("after the failed NewServer:\n%s\nwant what was there before:\n%s",
					strings.Join(after, "\n"), strings.Join(before, "\n"))
			}
			if info, err := bpf.QueryXDP(v.Host.Index); err != nil || info.Attached() {
				t.Errorf("program left attached after a failed NewServer: %+v, %v", info, err)
			}
		})
	}
}

// tree lists root and everything under it, not following symbolic links.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		paths = append(paths, path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// TestSocketDirSymlinkedDevice: a symbolic link where the device's
// directory goes makes NewServer fail, naming it, without touching what the
// link points to, and leaves the interface as it found it.
func TestSocketDirSymlinkedDevice(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	sd := socketDir(t)
	victim := mkdir(t, t.TempDir(), "victim", 0o755)
	link := filepath.Join(sd, v.Host.Name)
	symlink(t, victim, link)
	_, err := NewServer(&ServerOptions{
		Devices:     []Device{{Name: v.Host.Name}},
		SocketDir:   sd,
		AllowedUIDs: []int{4242},
		Logger:      testLogger(t),
	})
	if err == nil || !strings.Contains(err.Error(), link+": is a symbolic link") {
		t.Fatalf("NewServer = %v, want an error naming %s", err, link)
	}
	if uid, mode := stat(t, victim); uid != 0 || mode.Perm() != 0o755 {
		t.Errorf("link target now uid %d mode %v, want uid 0 mode 0755", uid, mode.Perm())
	}
	// Refused, the link is left as it was found, not removed.
	if fi, err := os.Lstat(link); err != nil || fi.Mode().Type() != os.ModeSymlink {
		t.Errorf("the refused link is gone after the failed NewServer: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(victim, SocketName)); err == nil {
		t.Error("socket made in the link's target")
	}
	if info, err := bpf.QueryXDP(v.Host.Index); err != nil || info.Attached() {
		t.Errorf("program left attached after a failed NewServer: %+v, %v", info, err)
	}
}

// TestSocketDirLeftover: the device directory of an agent that died
// belongs to the user it was handed to, who may have planted a symbolic
// link where the socket goes. NewServer takes the directory back, removes
// the link without following it, and sets up the socket; the link's target
// is untouched.
func TestSocketDirLeftover(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	sd := socketDir(t)
	dir := mkdir(t, sd, v.Host.Name, 0o700)
	chown(t, dir, 4242)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	symlink(t, victim, filepath.Join(dir, SocketName))
	srv, err := NewServer(&ServerOptions{
		Devices:     []Device{{Name: v.Host.Name}},
		SocketDir:   sd,
		AllowedUIDs: []int{4242},
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if uid, mode := stat(t, victim); uid != 0 || mode.Perm() != 0o644 {
		t.Errorf("link target now uid %d mode %v, want uid 0 mode 0644", uid, mode.Perm())
	}
	if uid, mode := stat(t, srv.SocketPath(v.Host.Name)); uid != 4242 || mode.Type() != os.ModeSocket || mode.Perm() != 0o600 {
		t.Errorf("socket uid %d mode %v, want a socket of uid 4242, 0600", uid, mode)
	}
	if uid, mode := stat(t, dir); uid != 4242 || mode.Perm() != 0o700 {
		t.Errorf("device directory uid %d mode %v, want uid 4242, 0700", uid, mode.Perm())
	}
}

func mkdir(t *testing.T, parent, name string, mode os.FileMode) string {
	t.Helper()
	d := filepath.Join(parent, name)
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, mode); err != nil { // not subject to the umask
		t.Fatal(err)
	}
	return d
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestPinDirHostile: PinDir is often on a bpffs whose root any user may
// write to (a bpffs mounted without a mode is 1777, as /tmp is). A user
// who makes <PinDir>/<device> first, or a symbolic link there, must not get
// the agent to pin its map where that user can unlink or replace it (and
// with it point clients at another device's map), nor to remove another
// pin the link leads to. NewServer refuses such a pin directory, names
// what is wrong, and leaves what the link leads to alone.
func TestPinDirHostile(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name string
		// setup plants something in the bpffs mounted at mnt and
		// returns the PinDir to give.
		setup func(t *testing.T, mnt, dev string) string
		want  string
	}{
		{"device_dir_owned_by_another_user", func(t *testing.T, mnt, dev string) string {
			chown(t, mkdir(t, mnt, dev, 0o755), 65534)
			return mnt
		}, "owned by uid 65534"},
		{"device_dir_world_writable", func(t *testing.T, mnt, dev string) string {
			mkdir(t, mnt, dev, 0o777|os.ModeSticky)
			return mnt
		}, "writable by group or others"},
		{"device_dir_symlink", func(t *testing.T, mnt, dev string) string {
			l := filepath.Join(mnt, dev)
			symlink(t, filepath.Join(mnt, "victim"), l)
			if err := os.Lchown(l, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return mnt
		}, "symbolic link"},
		{"pin_dir_owned_by_another_user", func(t *testing.T, mnt, dev string) string {
			d := mkdir(t, mnt, "afxdp", 0o755)
			chown(t, d, 65534)
			return d
		}, "owned by uid 65534"},
		{"pin_dir_symlink_of_another_user", func(t *testing.T, mnt, dev string) string {
			l := filepath.Join(mnt, "afxdp")
			symlink(t, mnt, l)
			if err := os.Lchown(l, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return l
		}, "symbolic link owned by uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testenv.NewVeth(t, nil)
			mnt := testenv.MountBPFFS(t)
			// Another program's pin, which a link may lead to.
			victimDir := mkdir(t, mnt, "victim", 0o755)
			victim := filepath.Join(victimDir, PinName)
			vm, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Close()
			if err := vm.Pin(victim); err != nil {
				t.Fatal(err)
			}
			pinDir := tc.setup(t, mnt, v.Host.Name)
			srv, err := NewServer(&ServerOptions{
				Devices:   []Device{{Name: v.Host.Name}},
				SocketDir: socketDir(t),
				PinDir:    pinDir,
				Logger:    testLogger(t),
			})
			if err == nil {
				defer srv.Close()
				t.Errorf("NewServer pinned at %s, want it to refuse", srv.PinPath(v.Host.Name))
			} else if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewServer: %v; want an error that says %q", err, tc.want)
			}
			m, err := ebpf.LoadPinnedMap(victim, nil)
			if err != nil {
				t.Fatalf("the pin a link led to is gone: %v", err)
			}
			defer m.Close()
			if m.Type() != ebpf.Array {
				t.Errorf("the pin a link led to was replaced by a %v", m.Type())
			}
		})
	}
}
