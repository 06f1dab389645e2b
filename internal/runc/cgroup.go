package runc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A `runc run` that dies after it has made the container's cgroups but
// before it has recorded the container (killed by a signal, by the OOM
// killer, or by Run's last-resort kill after waitDelay) leaves those
// cgroup directories behind, and `runc delete` cannot remove them: runc
// knows no container with the ID. Run removes them itself. The paths
// below are where runc's default (cgroupfs) driver puts them, as runc 1.1
// computes them (libcontainer/cgroups/fs and fs2); Run never passes
// --systemd-cgroup.

// cgroupRoot is where runc expects the cgroup hierarchies, and
// hybridMountpoint the cgroup v2 hierarchy of a hybrid layout.
const (
	cgroupRoot       = "/sys/fs/cgroup"
	hybridMountpoint = "/sys/fs/cgroup/unified"
)

// v1Subsystems are the cgroup v1 hierarchies runc makes a directory in:
// its controllers and the named systemd hierarchy (misc since runc 1.2).
var v1Subsystems = map[string]bool{
	"cpuset": true, "devices": true, "memory": true, "cpu": true, "cpuacct": true,
	"pids": true, "blkio": true, "hugetlb": true, "net_cls": true, "net_prio": true,
	"perf_event": true, "freezer": true, "rdma": true, "misc": true, "name=systemd": true,
}

// cgroupLayout says how the cgroup hierarchies are mounted.
type cgroupLayout int

const (
	layoutV1      cgroupLayout = iota // cgroup v1 only
	layoutHybrid                      // v1, and v2 at hybridMountpoint
	layoutUnified                     // v2 only, at cgroupRoot
)

// cgroupInner returns the cgroup path runc uses for a container with id
// whose bundle is dir: config.json's linux.cgroupsPath cleaned as runc
// cleans it (a relative path cannot climb out), or the ID when that is
// empty. ok is false when there is no readable config, so that runc can
// have made no cgroup.
func cgroupInner(dir, id string) (inner string, ok bool) {
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return "", false
	}
	var cfg struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if json.Unmarshal(raw, &cfg) != nil {
		return "", false
	}
	p := ""
	if cfg.Linux != nil {
		p = cfg.Linux.CgroupsPath
	}
	if p == "" {
		return id, true
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p), true
	}
	return strings.TrimPrefix(filepath.Clean("/"+p), "/"), true
}

// cgroupDirs returns the directories runc makes for a container whose
// cgroup path is inner (see cgroupInner), given the layout and this
// process's /proc/self/cgroup and /proc/self/mountinfo: runc is a child
// of this process and in its cgroups. A relative inner is below the
// process's own cgroup in each v1 hierarchy, below the parent of its own
// cgroup in a v2-only layout, and at the top of the v2 hierarchy of a
// hybrid one; an absolute one is below each hierarchy's mount.
func cgroupDirs(inner string, layout cgroupLayout, selfCgroup, mountinfo []byte) []string {
	if inner == "" || inner == "." || inner == "/" {
		// runc would use an existing cgroup, not make one.
		return nil
	}
	own := map[string]string{} // hierarchy ("" for v2) -> own cgroup
	for _, l := range strings.Split(string(selfCgroup), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "" {
			own[""] = f[2]
			continue
		}
		for _, s := range strings.Split(f[1], ",") {
			own[s] = f[2]
		}
	}
	if layout == layoutUnified {
		p, ok := own[""]
		if !ok {
			return nil
		}
		if filepath.IsAbs(inner) {
			return []string{filepath.Join(cgroupRoot, inner)}
		}
		return []string{filepath.Join(cgroupRoot, filepath.Dir(p), inner)}
	}
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	for _, m := range cgroupMounts(mountinfo) {
		for _, s := range m.subsystems {
			cg, ok := own[s]
			if !v1Subsystems[s] || !ok {
				continue
			}
			if filepath.IsAbs(inner) {
				add(filepath.Join(m.mountpoint, inner))
				continue
			}
			rel, err := filepath.Rel(m.root, cg)
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				continue
			}
			add(filepath.Join(m.mountpoint, rel, inner))
		}
	}
	if _, ok := own[""]; ok && layout == layoutHybrid {
		add(filepath.Join(hybridMountpoint, inner))
	}
	return dirs
}

type cgroupMount struct {
	mountpoint, root string
	subsystems       []string
}

// cgroupMounts returns the cgroup v1 mounts in mountinfo (proc_pid_mountinfo(5)),
// each with the hierarchies its super options name. When two mounts hold
// a hierarchy, the first is used, as runc does.
func cgroupMounts(mountinfo []byte) []cgroupMount {
	var ms []cgroupMount
	taken := map[string]bool{}
	for _, l := range strings.Split(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || g[0] != "cgroup" {
			continue
		}
		m := cgroupMount{mountpoint: unescapeMountinfo(f[4]), root: unescapeMountinfo(f[3])}
		for _, o := range strings.Split(g[2], ",") {
			if v1Subsystems[o] && !taken[o] {
				taken[o] = true
				m.subsystems = append(m.subsystems, o)
			}
		}
		if len(m.subsystems) > 0 {
			ms = append(ms, m)
		}
	}
	return ms
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a path
// in mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hostCgroupLayout tells the layout the way runc does: by the file system
// at cgroupRoot and at hybridMountpoint.
func hostCgroupLayout() cgroupLayout {
	var st unix.Statfs_t
	if unix.Statfs(cgroupRoot, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return layoutUnified
	}
	if unix.Statfs(hybridMountpoint, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return layoutHybrid
	}
	return layoutV1
}

// cgroupBusyWait bounds how long removeCgroups waits, in all, for a
// cgroup to empty: the processes runc had started in it (its init) exit
// on their own once runc is gone, but not at once.
var cgroupBusyWait = 2 * time.Second

// removeCgroups removes the empty cgroup directories runc made for the
// container id with cgroup path inner and has left behind. It only
// removes a directory (rmdir), never its contents: one that still holds
// processes or child cgroups once cgroupBusyWait is over is left in
// place, and reported.
func removeCgroups(id, inner string) error {
	selfCgroup, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("remove cgroups of container %s: %w", id, err)
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("remove cgroups of container %s: %w", id, err)
	}
	var errs []error
	until := time.Now().Add(cgroupBusyWait)
	for _, d := range cgroupDirs(inner, hostCgroupLayout(), selfCgroup, mountinfo) {
		for {
			err = unix.Rmdir(d)
			if !errors.Is(err, unix.EBUSY) || time.Now().After(until) {
				break
			}
			time.Sleep(killRetry)
		}
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.ENOTEMPTY):
			what := "processes"
			if procs, rerr := os.ReadFile(filepath.Join(d, "cgroup.procs")); rerr == nil {
				if p := bytes.Fields(procs); len(p) > 0 {
					what = "processes (" + string(bytes.Join(p, []byte(" "))) + ")"
				} else {
					what = "child cgroups"
				}
			}
			errs = append(errs, fmt.Errorf("remove cgroup %s of container %s: it still holds %s, left in place: %w", d, id, what, os.NewSyscallError("rmdir", err)))
		default:
			errs = append(errs, fmt.Errorf("remove cgroup %s of container %s: %w", d, id, os.NewSyscallError("rmdir", err)))
		}
	}
	return errors.Join(errs...)
}
