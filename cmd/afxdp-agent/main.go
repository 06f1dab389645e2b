// Command afxdp-agent is the privileged half of the container fast path: it
// loads and attaches the XDP redirect program and its XSKMAP on each
// interface it serves, and answers unprivileged workloads (holding only
// CAP_NET_RAW) on one Unix socket per interface,
// <socket-dir>/<interface>/afxdp.sock, in the protocol of the AF_XDP device
// plugin for Kubernetes (see package agent). Workloads get the XSKMAP's fd,
// or hand their AF_XDP socket to the agent to register, and ask it to set
// busy-poll options on their sockets bound to the interface.
//
// It needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_PERFMON or
// CAP_SYS_ADMIN, CAP_CHOWN, CAP_FOWNER; CAP_SYS_ADMIN also for -netns,
// -read-only-map, and -pin without a mounted bpffs; CAP_DAC_OVERRIDE for
// one non-root -allow-uid without -socket-gid, whose user then owns the
// device directory) and Linux 5.11 or later for busy-poll options;
// unprivileged workloads can put their socket in the map through the fd on
// Linux 6.5 and later, and use the /xsk_register request otherwise. The
// socket directory must belong to root and be writable by root alone, and
// so must the directories above it, unless sticky like /tmp: the agent
// refuses to start otherwise (see agent.ServerOptions).
//
// Run it, for example, as:
//
//	afxdp-agent -iface eth1 -allow-uid 0,1000 -filter-ipproto 17 -filter-port 4789
//
// or with a JSON file (-config agent.json). Flags given on the command line
// override its settings. -iface adds interfaces to its devices, and -netns,
// -mode, -replace, -max-queues and the -filter flags apply to the -iface
// interfaces only (without -iface they are refused):
//
//	{
//	  "socket_dir": "/tmp/afxdp_dp",
//	  "allowed_uids": [0, 1000],
//	  "socket_gid": 0,
//	  "idle_timeout": "30s",
//	  "max_message_size": 256,
//	  "max_conns": 256,
//	  "pin": true,
//	  "pin_dir": "/sys/fs/bpf/afxdp",
//	  "read_only_map": false,
//	  "devices": [
//	    {"name": "eth1", "netns": "/var/run/netns/c1", "mode": "generic",
//	     "replace": false, "max_queues": 64,
//	     "filter": {"ethertype": 2048, "ipproto": 17, "dst_port": 4789,
//	                "dst_addr": "192.0.2.10"}}
//	  ]
//	}
//
// With -pin, each XSKMAP is also pinned at <pin-dir>/<interface>/xsks_map
// (where DPDK's AF_XDP driver looks with use_pinned_map=1, once the
// directory is mounted into the pod); bpffs is mounted at /sys/fs/bpf first
// if the pin directory is under it and nothing is mounted there; that mount
// stays when the agent exits. Without -pin nothing is mounted. The agent
// refuses a pin directory, or an <interface> directory in it, that another
// user owns or could redirect (see agent.ServerOptions.PinDir).
//
// SIGINT or SIGTERM stops it cleanly: connections are closed, the programs
// detached, the pins and sockets removed. The directories stay, empty:
// <socket-dir>/<interface> and <pin-dir>/<interface>, since a pod
// bind-mounts its interface's directory, and a mount holds the directory,
// not its path, so that a new one made by the next start would not be the
// pod's. A pod started before the agent needs <socket-dir>/<interface>
// made first (owned by root, mode 0700: install -d -m 0700 DIR), and the
// agent takes it over. An agent that is killed (SIGKILL)
// or crashes loses its programs at once, since the kernel detaches them
// with the agent's links, but leaves its sockets and pins on disk; started
// again, it takes them back with new programs and new, empty maps, so the
// workloads must register again. It takes the pins back only when started
// with -pin: without it, it warns of each pin it finds at
// <pin-dir>/<interface>/xsks_map, which holds a map no program reads, and
// leaves it, since it cannot tell an earlier run's pin from another
// agent's; remove it by hand (rm) if no other agent pins there.
//
// An interface that goes away while the agent runs (the link deleted, or
// its network namespace: a pod or a container restarted) is followed: the
// kernel detaches the program with it, and while the interface (or the
// namespace at -netns's path) is absent the agent refuses its map and
// registrations and logs why; once an interface of the same name is back
// there, the agent attaches a new program with a new, empty XSKMAP to it,
// pins that in place of the old pin, and serves it. It checks on each
// request and every second (agent.Server.Refresh), so that a workload that
// only opens the pin finds the new map. Registrations made on the old
// interface do not carry over: the workloads register again.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/bpf"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0) // -h: the usage is what was asked for
		}
		fmt.Fprintln(os.Stderr, "afxdp-agent:", err)
		os.Exit(1)
	}
}

// config is the JSON configuration file.
type config struct {
	SocketDir      string         `json:"socket_dir"`
	AllowedUIDs    []int          `json:"allowed_uids"`
	SocketGID      int            `json:"socket_gid"`
	IdleTimeout    duration       `json:"idle_timeout"`
	MaxMessageSize int            `json:"max_message_size"`
	MaxConns       int            `json:"max_conns"`
	Pin            bool           `json:"pin"`
	PinDir         string         `json:"pin_dir"`
	ReadOnlyMap    bool           `json:"read_only_map"`
	Devices        []deviceConfig `json:"devices"`
}

type deviceConfig struct {
	Name      string       `json:"name"`
	Netns     string       `json:"netns"`
	Mode      string       `json:"mode"`
	Replace   bool         `json:"replace"`
	MaxQueues int          `json:"max_queues"`
	Filter    filterConfig `json:"filter"`
}

type filterConfig struct {
	EtherType uint16 `json:"ethertype"`
	IPProto   uint8  `json:"ipproto"`
	DstPort   uint16 `json:"dst_port"`
	DstAddr   string `json:"dst_addr"` // parsed by deviceConfig.device, which names the field
}

// duration reads "30s" or a number of seconds; null leaves it as it was.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"30s\" or seconds", b)
	}
	*d = duration(secs * float64(time.Second))
	return nil
}

// defaultPinDir is where -pin puts the maps unless -pin-dir says otherwise.
const defaultPinDir = "/sys/fs/bpf/afxdp"

// followInterval is how often the agent checks that each interface still
// has its program, and re-attaches to one that came back (Server.Refresh).
const followInterval = time.Second

// bpffsRoot is the conventional bpffs mount point.
const bpffsRoot = "/sys/fs/bpf"

// run is the agent's main, minus the process: it serves until ctx is done.
// ready, if not nil, is called with the server once it serves (tests use
// it).
func run(ctx context.Context, args []string, stderr io.Writer, ready func(*agent.Server)) error {
	fs := flag.NewFlagSet("afxdp-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "JSON configuration file")
		ifaces     = fs.String("iface", "", "comma-separated interfaces to serve (in the agent's network namespace)")
		netnsPath  = fs.String("netns", "", "network namespace path holding the -iface interfaces")
		socketDir  = fs.String("socket-dir", "", "socket directory (default "+agent.DefaultSocketDir+")")
		allowUIDs  = fs.String("allow-uid", "", "comma-separated UIDs served, checked on each connection with SO_PEERCRED (default: 0 only)")
		socketGID  = fs.Int("socket-gid", 0, "group owning each interface's directory and socket (modes 0750, 0660): only its members and root can open the socket, and of those only the -allow-uid UIDs are served (0: no group)")
		mode       = fs.String("mode", "", "XDP attach mode for -iface: auto, driver or generic (default auto)")
		replace    = fs.Bool("replace", false, "replace another XDP program found on an interface")
		maxQueues  = fs.Int("max-queues", 0, "XSKMAP entries per interface (default 64)")
		etherType  = fs.String("filter-ethertype", "", "redirect only this EtherType (e.g. 0x0800)")
		ipProto    = fs.Uint("filter-ipproto", 0, "redirect only this IP protocol (e.g. 17)")
		dstPort    = fs.Uint("filter-port", 0, "redirect only this UDP/TCP destination port")
		dstAddr    = fs.String("filter-addr", "", "redirect only this IPv4 or IPv6 destination address")
		idle       = fs.Duration("idle-timeout", 0, "close connections idle this long, unless they hold an /xsk_register registration (default 30s; negative: never)")
		maxMsg     = fs.Int("max-message", 0, "longest request in bytes (default 256)")
		maxConns   = fs.Int("max-conns", 0, "most connections served at once, over all interfaces (default 256)")
		pin        = fs.Bool("pin", false, "pin each XSKMAP at <pin-dir>/<interface>/xsks_map")
		pinDir     = fs.String("pin-dir", "", "bpffs directory for -pin (default "+defaultPinDir+"); without -pin, where the agent looks for pins left by an earlier run, to warn of them")
		readOnly   = fs.Bool("read-only-map", false, "send clients a read-only XSKMAP fd, so that they register through the agent (/xsk_register)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		logJSON    = fs.Bool("log-json", false, "log in JSON")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *ifaces == "" {
		// These shape the -iface devices only: without one, taking
		// them silently would leave the config's devices unfiltered.
		for _, name := range []string{"netns", "mode", "replace", "max-queues", "filter-ethertype", "filter-ipproto", "filter-port", "filter-addr"} {
			if set[name] {
				return fmt.Errorf("-%s applies to -iface interfaces only, and there is no -iface; set it in the config's devices instead", name)
			}
		}
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level %q: %w", *logLevel, err)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	var log *slog.Logger
	if *logJSON {
		log = slog.New(slog.NewJSONHandler(stderr, hopts))
	} else {
		log = slog.New(slog.NewTextHandler(stderr, hopts))
	}

	var cfg config
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		// idle_timeout is read apart: encoding/json names the field of
		// a type error, but not of an error its UnmarshalJSON returns.
		var file struct {
			config
			IdleTimeout json.RawMessage `json:"idle_timeout"`
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&file); err != nil {
			return fmt.Errorf("parse config %s: %w", *configPath, err)
		}
		// Decode reads one value: what follows it (a second object,
		// a stray brace) would be dropped with its settings.
		if off := dec.InputOffset(); strings.Trim(string(b[off:]), " \t\r\n") != "" {
			return fmt.Errorf("parse config %s: data after the JSON object at offset %d", *configPath, off)
		}
		cfg = file.config
		if file.IdleTimeout != nil {
			if err := cfg.IdleTimeout.UnmarshalJSON(file.IdleTimeout); err != nil {
				return fmt.Errorf("parse config %s: idle_timeout: %w", *configPath, err)
			}
		}
		// A bad value in a device entry is reported with the file, the
		// entry and the field, as JSON type errors are.
		for i, d := range cfg.Devices {
			if _, err := d.device(); err != nil {
				return fmt.Errorf("parse config %s: devices[%d] (%s): %w", *configPath, i, d.Name, err)
			}
		}
	}
	if set["socket-dir"] {
		cfg.SocketDir = *socketDir
	}
	if set["allow-uid"] {
		uids, err := parseInts(*allowUIDs)
		if err != nil {
			return fmt.Errorf("-allow-uid: %w", err)
		}
		cfg.AllowedUIDs = uids
	}
	if set["socket-gid"] {
		cfg.SocketGID = *socketGID
	}
	if set["idle-timeout"] {
		cfg.IdleTimeout = duration(*idle)
	}
	if set["max-message"] {
		cfg.MaxMessageSize = *maxMsg
	}
	if set["max-conns"] {
		cfg.MaxConns = *maxConns
	}
	if set["pin"] {
		cfg.Pin = *pin
	}
	if set["pin-dir"] {
		cfg.PinDir = *pinDir
	}
	if set["read-only-map"] {
		cfg.ReadOnlyMap = *readOnly
	}
	if *ifaces != "" {
		var et uint64
		if *etherType != "" {
			v, err := strconv.ParseUint(*etherType, 0, 16)
			if err != nil {
				return fmt.Errorf("-filter-ethertype %q: %w", *etherType, err)
			}
			et = v
		}
		if *ipProto > 255 || *dstPort > 65535 {
			return fmt.Errorf("-filter-ipproto %d or -filter-port %d out of range", *ipProto, *dstPort)
		}
		if *dstAddr != "" {
			if _, err := netip.ParseAddr(*dstAddr); err != nil {
				return fmt.Errorf("-filter-addr: %w", err)
			}
		}
		for _, name := range strings.Split(*ifaces, ",") {
			cfg.Devices = append(cfg.Devices, deviceConfig{
				Name: strings.TrimSpace(name), Netns: *netnsPath, Mode: *mode, Replace: *replace, MaxQueues: *maxQueues,
				Filter: filterConfig{EtherType: uint16(et), IPProto: uint8(*ipProto), DstPort: uint16(*dstPort), DstAddr: *dstAddr},
			})
		}
	}
	opts, err := cfg.serverOptions(log)
	if err != nil {
		return err
	}
	if opts.PinDir != "" {
		if err := ensureBPFFS(opts.PinDir, log); err != nil {
			return needsPrivilege(err, effectiveCaps())
		}
	}

	srv, err := agent.NewServer(opts)
	if err != nil {
		return needsPrivilege(err, effectiveCaps())
	}
	if !cfg.Pin {
		dir := cfg.PinDir
		if dir == "" {
			dir = defaultPinDir
		}
		warnStalePins(dir, opts.Devices, log)
	}
	dir := opts.SocketDir
	if dir == "" {
		dir = agent.DefaultSocketDir
	}
	uids := opts.AllowedUIDs
	if len(uids) == 0 {
		uids = []int{0} // the server's default
	}
	log.Info("agent ready", "devices", len(opts.Devices), "socket_dir", dir, "allowed_uids", uids)
	if ready != nil {
		ready(srv)
	}
	follow := time.NewTicker(followInterval)
	defer follow.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-follow.C:
			// Refresh logs a device it finds not served, and its
			// re-attachment.
			srv.Refresh()
		}
	}
	log.Info("shutting down")
	if err := srv.Close(); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

func (c *config) serverOptions(log *slog.Logger) (*agent.ServerOptions, error) {
	if len(c.Devices) == 0 {
		return nil, errors.New("no interface to serve: give -iface or devices in -config")
	}
	o := &agent.ServerOptions{
		SocketDir:      c.SocketDir,
		AllowedUIDs:    c.AllowedUIDs,
		SocketGID:      c.SocketGID,
		IdleTimeout:    time.Duration(c.IdleTimeout),
		MaxMessageSize: c.MaxMessageSize,
		MaxConns:       c.MaxConns,
		ReadOnlyMap:    c.ReadOnlyMap,
		Logger:         log,
	}
	if c.Pin {
		o.PinDir = c.PinDir
		if o.PinDir == "" {
			o.PinDir = defaultPinDir
		}
	}
	for i, d := range c.Devices {
		dev, err := d.device()
		if err != nil {
			return nil, fmt.Errorf("devices[%d] (%s): %w", i, d.Name, err)
		}
		o.Devices = append(o.Devices, dev)
	}
	return o, nil
}

// device is the agent's Device for d. An error names the field.
func (d deviceConfig) device() (agent.Device, error) {
	m, err := parseMode(d.Mode)
	if err != nil {
		return agent.Device{}, err
	}
	var addr netip.Addr
	if d.Filter.DstAddr != "" {
		if addr, err = netip.ParseAddr(d.Filter.DstAddr); err != nil {
			return agent.Device{}, fmt.Errorf("filter.dst_addr: %w", err)
		}
	}
	return agent.Device{
		Name: d.Name, Netns: d.Netns, Mode: m, Replace: d.Replace, MaxQueues: d.MaxQueues,
		Filter: bpf.Filter{EtherType: d.Filter.EtherType, IPProto: d.Filter.IPProto, DstPort: d.Filter.DstPort, DstAddr: addr},
	}, nil
}

// warnStalePins warns of each pin at <dir>/<device>/xsks_map, for an agent
// that runs without -pin. An agent that pinned its maps and was killed, or
// crashed, leaves its pins, and only a start with -pin takes them back; a
// pod that opens such a pin gets a map that no program reads, and receives
// nothing. The pin may also be another agent's (one serving an interface of
// the same name in another namespace), so it is left alone.
func warnStalePins(dir string, devices []agent.Device, log *slog.Logger) {
	for _, d := range devices {
		pin := filepath.Join(dir, d.Name, agent.PinName)
		if _, err := os.Lstat(pin); err != nil {
			continue
		}
		log.Warn("stale pin: this agent runs without -pin and does not serve the XSKMAP pinned for its device "+
			"(left by an earlier run with -pin that was killed, or another agent's): a pod that opens it receives nothing; "+
			"if no other agent pins there, remove it", "device", d.Name, "pin", pin, "remove", "rm "+pin)
	}
}

// neededCaps are the capabilities the agent needs in every configuration
// (see the command's documentation); CAP_PERFMON may also be had as
// CAP_SYS_ADMIN.
var neededCaps = []struct {
	name string
	bit  int
	or   int // another capability that serves, or -1
}{
	{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN, -1},
	{"CAP_BPF", unix.CAP_BPF, -1},
	{"CAP_PERFMON", unix.CAP_PERFMON, unix.CAP_SYS_ADMIN},
	{"CAP_NET_RAW", unix.CAP_NET_RAW, -1},
	{"CAP_CHOWN", unix.CAP_CHOWN, -1},
	{"CAP_FOWNER", unix.CAP_FOWNER, -1},
}

// effectiveCaps returns the process's effective capabilities, or all of
// them if it cannot tell (then needsPrivilege adds nothing).
func effectiveCaps() uint64 {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return ^uint64(0)
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective)
}

// needsPrivilege says that the agent needs root when err is a refused
// permission (EPERM or EACCES) and caps, the effective capabilities, lack
// one of neededCaps: a bare "mkdirat: permission denied" or "map create:
// operation not permitted" does not tell a user who started the agent
// without root what is wrong. Other errors are returned as they are.
func needsPrivilege(err error, caps uint64) error {
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		return err
	}
	var lack []string
	for _, c := range neededCaps {
		if caps&(1<<c.bit) == 0 && (c.or < 0 || caps&(1<<c.or) == 0) {
			lack = append(lack, c.name)
		}
	}
	if len(lack) == 0 {
		return err
	}
	return fmt.Errorf("needs root: this process lacks %s (of CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN, CAP_NET_RAW, CAP_CHOWN, CAP_FOWNER): %w",
		strings.Join(lack, ", "), err)
}

func parseMode(s string) (bpf.AttachMode, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return bpf.AttachAuto, nil
	case "driver", "native", "drv":
		return bpf.AttachDriver, nil
	case "generic", "skb":
		return bpf.AttachGeneric, nil
	}
	return 0, fmt.Errorf("mode %q: want auto, driver or generic", s)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q: not a UID", f)
		}
		out = append(out, v)
	}
	return out, nil
}

// ensureBPFFS makes sure dir can hold pins: it mounts bpffs at /sys/fs/bpf
// when dir is below it and no bpffs is mounted there, then checks that dir
// (or, if missing, the nearest directory above it) is on a bpffs. It
// leaves creating dir to agent.NewServer, which removes what it made of
// it if it fails.
func ensureBPFFS(dir string, log *slog.Logger) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("pin dir %s: %w", dir, err)
	}
	if abs == bpffsRoot || strings.HasPrefix(abs, bpffsRoot+"/") {
		if !isBPFFS(bpffsRoot) {
			if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
				return fmt.Errorf("mount bpffs: %w", err)
			}
			if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
				return fmt.Errorf("mount bpffs at %s: %w", bpffsRoot, os.NewSyscallError("mount", err))
			}
			log.Info("mounted bpffs", "path", bpffsRoot)
		}
	}
	// A new directory is on its parent's file system: check the
	// nearest one that exists before making any, so that a pin dir
	// refused leaves no directories behind.
	have := abs
	for {
		if _, err = os.Stat(have); !errors.Is(err, os.ErrNotExist) {
			break
		}
		have = filepath.Dir(have)
	}
	if err == nil && !isBPFFS(have) { // any other error is NewServer's to report
		if have == abs {
			return fmt.Errorf("pin dir %s: not on a bpffs (mount -t bpf bpf %s)", abs, abs)
		}
		return fmt.Errorf("pin dir %s: not on a bpffs (mkdir -p %s && mount -t bpf bpf %s)", abs, abs, abs)
	}
	return nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == unix.BPF_FS_MAGIC
}
