package runc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultCapabilities are the capabilities a container gets when
// [SpecOptions].Capabilities is nil: CAP_NET_RAW, which opening AF_XDP and
// AF_PACKET sockets needs.
var DefaultCapabilities = []string{"CAP_NET_RAW"}

// SpecOptions configures [Bundle.WriteConfig]. The zero value runs the
// image's entrypoint and command as the image's user with CAP_NET_RAW, in a
// new, empty network namespace.
type SpecOptions struct {
	// Args replaces the image's entrypoint and command. Default: the
	// image's Entrypoint followed by its Cmd.
	Args []string
	// Env is appended to the image's environment ("KEY=value").
	Env []string
	// UID and GID override the image's user when User is set.
	User *User
	// Capabilities the process holds (names like "CAP_NET_RAW"), in every
	// set including ambient. nil means [DefaultCapabilities]; an empty,
	// non-nil slice means none.
	Capabilities []string
	// NetnsPath is a network namespace to join, such as
	// /var/run/netns/NAME. Default: runc makes a new one holding only lo
	// (down).
	NetnsPath string
	// Hostname of the container's UTS namespace. Default "afxdp".
	Hostname string
	// Memlock is RLIMIT_MEMLOCK in bytes (soft and hard). An AF_XDP
	// socket's UMEM is charged against it in a process without
	// CAP_IPC_LOCK. Raising it above the caller's own hard limit needs
	// CAP_SYS_RESOURCE in the caller (runc fails with "error setting
	// rlimit type 8: operation not permitted" otherwise). Default 0: the
	// container inherits runc's limit.
	Memlock uint64
	// WritableRootfs mounts the rootfs read-write. Default read-only.
	WritableRootfs bool
	// Binds are host directories or files bind-mounted into the
	// container, such as the agent's socket directory
	// (<SocketDir>/<device> at the same path inside, or at /tmp/afxdp_dp/<device>).
	Binds []Bind
}

// Bind is a bind mount: Source on the host at Destination in the
// container (created in the rootfs if missing), read-only when ReadOnly.
type Bind struct {
	Source, Destination string
	ReadOnly            bool
}

// User is a numeric user and group.
type User struct {
	UID, GID uint32
}

// The subset of the OCI runtime spec (v1.0.2) that runc needs here.
type spec struct {
	OCIVersion string  `json:"ociVersion"`
	Process    process `json:"process"`
	Root       root    `json:"root"`
	Hostname   string  `json:"hostname"`
	Mounts     []mount `json:"mounts"`
	Linux      linux   `json:"linux"`
}

type process struct {
	Terminal        bool          `json:"terminal"`
	User            specUser      `json:"user"`
	Args            []string      `json:"args"`
	Env             []string      `json:"env"`
	Cwd             string        `json:"cwd"`
	Capabilities    *capabilities `json:"capabilities,omitempty"`
	Rlimits         []rlimit      `json:"rlimits"`
	NoNewPrivileges bool          `json:"noNewPrivileges"`
}

type specUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type capabilities struct {
	Bounding    []string `json:"bounding"`
	Effective   []string `json:"effective"`
	Permitted   []string `json:"permitted"`
	Inheritable []string `json:"inheritable"`
	Ambient     []string `json:"ambient"`
}

type rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

type root struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

type linux struct {
	Namespaces    []namespace `json:"namespaces"`
	MaskedPaths   []string    `json:"maskedPaths"`
	ReadonlyPaths []string    `json:"readonlyPaths"`
}

type namespace struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
}

// WriteConfig writes the bundle's config.json.
func (b *Bundle) WriteConfig(opts *SpecOptions) error {
	var o SpecOptions
	if opts != nil {
		o = *opts
	}
	args := o.Args
	if args == nil {
		args = append(append([]string(nil), b.Image.Entrypoint...), b.Image.Cmd...)
	}
	if len(args) == 0 {
		return errors.New("write config: Args: the image has no entrypoint or command, so Args must be set")
	}
	var u User
	if o.User != nil {
		u = *o.User
	} else if b.Image.User != "" {
		uid, gid, err := parseUser(b.Image.User)
		if err != nil {
			return fmt.Errorf("write config: image %w", err)
		}
		u = User{uid, gid}
	}
	caps := o.Capabilities
	if caps == nil {
		caps = DefaultCapabilities
	}
	for _, c := range caps {
		if !strings.HasPrefix(c, "CAP_") || strings.ToUpper(c) != c {
			return fmt.Errorf("write config: Capabilities %q: must be a name like CAP_NET_RAW", c)
		}
	}
	caps = append([]string{}, caps...) // marshal as [] not null
	for _, e := range o.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("write config: Env %q: must be KEY=value", e)
		}
	}
	if o.NetnsPath != "" && !filepath.IsAbs(o.NetnsPath) {
		return fmt.Errorf("write config: NetnsPath %q: must be absolute", o.NetnsPath)
	}
	if o.Hostname == "" {
		o.Hostname = "afxdp"
	}
	var binds []mount
	for i, bm := range o.Binds {
		if !filepath.IsAbs(bm.Source) || !filepath.IsAbs(bm.Destination) || filepath.Clean(bm.Destination) == "/" {
			return fmt.Errorf("write config: Binds[%d] %s -> %s: both must be absolute, the destination not /", i, bm.Source, bm.Destination)
		}
		opts := []string{"rbind", "nosuid", "nodev", "noexec"}
		if bm.ReadOnly {
			opts = append(opts, "ro")
		}
		binds = append(binds, mount{Destination: filepath.Clean(bm.Destination), Type: "bind", Source: bm.Source, Options: opts})
	}
	cwd := b.Image.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	env := append(append([]string(nil), b.Image.Env...), o.Env...)
	if !hasKey(env, "PATH") {
		env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	}

	rlimits := []rlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}
	if o.Memlock != 0 {
		rlimits = append(rlimits, rlimit{Type: "RLIMIT_MEMLOCK", Hard: o.Memlock, Soft: o.Memlock})
	}
	s := spec{
		OCIVersion: "1.0.2",
		Process: process{
			Terminal: false,
			User:     specUser(u),
			Args:     args,
			Env:      env,
			Cwd:      cwd,
			Capabilities: &capabilities{
				Bounding: caps, Effective: caps, Permitted: caps, Inheritable: caps, Ambient: caps,
			},
			Rlimits:         rlimits,
			NoNewPrivileges: true,
		},
		Root:     root{Path: "rootfs", Readonly: !o.WritableRootfs},
		Hostname: o.Hostname,
		Mounts: []mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs",
				Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
				Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
				Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue",
				Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs",
				Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: linux{
			Namespaces: []namespace{
				{Type: "pid"},
				{Type: "network", Path: o.NetnsPath},
				{Type: "ipc"},
				{Type: "uts"},
				{Type: "mount"},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
				"/sys/firmware",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	s.Mounts = append(s.Mounts, binds...)
	data, err := json.MarshalIndent(&s, "", "\t")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(b.Dir, "config.json"), data, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

func hasKey(env []string, key string) bool {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			return true
		}
	}
	return false
}
