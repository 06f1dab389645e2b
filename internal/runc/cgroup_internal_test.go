package runc

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A hybrid layout as on this project's test machine: v1 hierarchies (cpu
// and cpuacct comounted), the process in a nested memory cgroup, and v2
// at /sys/fs/cgroup/unified.
const (
	hybridSelf = `9:name=systemd:/
8:pids:/
4:memory:/api/abc
2:cpu,cpuacct:/
1:net_cls:/
0::/
`
	hybridMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 31 0:39 / /mnt/extra\040copy rw,relatime - cgroup cgroup rw,pids
`
	// In a container: each hierarchy's mount shows only the subtree
	// from the container's cgroup down, which /proc/self/cgroup names
	// from the host's root.
	nestedSelf = `3:memory:/docker/c1
2:devices:/docker/c1
1:name=elogind:/docker/c1
`
	nestedMountinfo = `50 40 0:40 /docker/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
51 40 0:41 /docker/c1 /sys/fs/cgroup/devices ro - cgroup cgroup rw,devices
52 40 0:42 /docker/c1 /sys/fs/cgroup/elogind ro - cgroup cgroup rw,name=elogind
`
)

func TestCgroupDirs(t *testing.T) {
	for _, tc := range []struct {
		name            string
		inner           string
		layout          cgroupLayout
		self, mountinfo string
		want            []string
	}{
		{"hybrid, ID", "afxdp-1", layoutHybrid, hybridSelf, hybridMountinfo, []string{
			"/sys/fs/cgroup/cpu,cpuacct/afxdp-1",
			"/sys/fs/cgroup/memory/api/abc/afxdp-1",
			"/sys/fs/cgroup/pids/afxdp-1",
			"/sys/fs/cgroup/systemd/afxdp-1",
			"/sys/fs/cgroup/unified/afxdp-1",
		}},
		{"hybrid, absolute path", "/ctr/x", layoutHybrid, hybridSelf, hybridMountinfo, []string{
			"/sys/fs/cgroup/cpu,cpuacct/ctr/x",
			"/sys/fs/cgroup/memory/ctr/x",
			"/sys/fs/cgroup/pids/ctr/x",
			"/sys/fs/cgroup/systemd/ctr/x",
			"/sys/fs/cgroup/unified/ctr/x",
		}},
		{"v1 only", "id", layoutV1, hybridSelf, hybridMountinfo, []string{
			"/sys/fs/cgroup/cpu,cpuacct/id",
			"/sys/fs/cgroup/memory/api/abc/id",
			"/sys/fs/cgroup/pids/id",
			"/sys/fs/cgroup/systemd/id",
		}},
		{"nested", "id", layoutV1, nestedSelf, nestedMountinfo, []string{
			"/sys/fs/cgroup/memory/id",
			"/sys/fs/cgroup/devices/id",
		}},
		{"unified, ID", "id", layoutUnified, "0::/user.slice/session-1.scope\n", "", []string{
			"/sys/fs/cgroup/user.slice/id",
		}},
		{"unified, absolute path", "/a/b", layoutUnified, "0::/user.slice/session-1.scope\n", "", []string{
			"/sys/fs/cgroup/a/b",
		}},
		{"own cgroup", ".", layoutHybrid, hybridSelf, hybridMountinfo, nil},
		{"root cgroup", "/", layoutHybrid, hybridSelf, hybridMountinfo, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cgroupDirs(tc.inner, tc.layout, []byte(tc.self), []byte(tc.mountinfo))
			if !slices.Equal(got, tc.want) {
				t.Errorf("cgroupDirs(%q) = %q, want %q", tc.inner, got, tc.want)
			}
		})
	}
}

func TestCgroupMountsUnescape(t *testing.T) {
	ms := cgroupMounts([]byte(`42 31 0:39 /a\040b /mnt/x\040y rw - cgroup cgroup rw,pids` + "\n"))
	if len(ms) != 1 || ms[0].mountpoint != "/mnt/x y" || ms[0].root != "/a b" {
		t.Errorf("cgroupMounts: %+v, want mount /mnt/x y of root /a b", ms)
	}
}

func TestCgroupInner(t *testing.T) {
	for _, tc := range []struct {
		config string
		want   string
		ok     bool
	}{
		{`{"linux":{}}`, "id", true},
		{`{}`, "id", true},
		{`{"linux":{"cgroupsPath":"/a/../b/"}}`, "/b", true},
		{`{"linux":{"cgroupsPath":"../../x/y"}}`, "x/y", true},
		{`{"linux":{"cgroupsPath":".."}}`, "", true},
		{`not json`, "", false},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.config), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, ok := cgroupInner(dir, "id"); got != tc.want || ok != tc.ok {
			t.Errorf("cgroupInner of %s: %q, %v; want %q, %v", tc.config, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := cgroupInner(t.TempDir(), "id"); ok {
		t.Error("cgroupInner without a config.json: ok")
	}
}
