package cni

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/netenv"
)

// DefaultPluginDir is where Debian's containernetworking-plugins package
// installs the plugins.
const DefaultPluginDir = "/usr/lib/cni"

// Version is the CNI specification version of the configurations written.
const Version = "1.0.0"

// NetworkName is the network name of the configurations written; host-local
// records an attachment's address in IPAMDir/NetworkName/ADDRESS.
const NetworkName = "afxdp"

// delTimeout bounds a DEL: the one Close runs, and the one a failed Attach
// runs to clean up, which goes on after Attach's context has ended.
var delTimeout = time.Minute

// waitDelay is how long a plugin's run may go on after the plugin exited
// or was killed: a child of it (a delegated IPAM plugin) may hold its
// stdout and stderr open, and a hung one would hold them for good.
var waitDelay = 5 * time.Second

// Config says how to wire one namespace. NetnsPath, and Master for macvlan
// and ipvlan, are required; the rest have defaults.
type Config struct {
	// Plugin is "ptp", "bridge", "macvlan" or "ipvlan".
	Plugin string
	// Subnet is the host-local IPAM range (the container gets an address
	// from it, from .2 up; the gateway is .1). Default: a random
	// 10.x.y.0/24.
	Subnet netip.Prefix
	// Master is the parent link of a macvlan or ipvlan, in the caller's
	// namespace.
	Master string
	// Mode is the macvlan mode (default "bridge") or ipvlan mode (default
	// "l2").
	Mode string
	// Bridge is the bridge device for the bridge plugin. Default: a random
	// name. A bridge that does not exist yet is made by the plugin and
	// deleted by the Close of the last attachment of this process on it,
	// so attachments may share it; one that existed before is used and
	// kept.
	Bridge string
	// MTU of the container interface. Default: the plugin's.
	MTU int
	// NetnsPath is the container's network namespace, such as
	// /var/run/netns/NAME.
	NetnsPath string
	// IfName is the interface name inside the namespace. Default "eth0".
	IfName string
	// ContainerID identifies the attachment to the plugins and IPAM.
	// Default: random.
	ContainerID string
	// PluginDir holds the plugin binaries (CNI_PATH). Default
	// [DefaultPluginDir].
	PluginDir string
}

// Attachment is a namespace wired by a plugin.
type Attachment struct {
	// Plugin is the plugin that made it.
	Plugin string
	// IfName, MAC and Addr describe the interface inside the namespace.
	IfName string
	MAC    net.HardwareAddr
	Addr   netip.Prefix
	// Gateway is the IPAM gateway (the bridge's or ptp host side's
	// address); it may be unset.
	Gateway netip.Addr
	// HostIf is the host side of a ptp or bridge attachment (a veth end in
	// the caller's namespace), "" for macvlan and ipvlan.
	HostIf string
	// Bridge is the bridge device of a bridge attachment.
	Bridge string
	// NetnsPath and ContainerID are those of the Config.
	NetnsPath   string
	ContainerID string
	// IPAMDir is host-local's data directory, shared by this process's
	// open attachments with the same Subnet (so that they get different
	// addresses) and removed by the Close of the last of them.
	IPAMDir string
	// Result is the plugin's ADD result, as JSON.
	Result json.RawMessage

	conf       map[string]any
	env        []string
	pluginPath string
	ipam       *ipamHold    // the IPAM data directory, shared with attachments on the same subnet
	bridge     *bridgeHold  // a bridge made by this process's attachments, shared with them
	forward    *forwardHold // ptp and bridge: this attachment's share of ip_forward=1

	closeOnce sync.Once
}

// Error is the error a plugin reported (CNI spec, "Error" result).
type Error struct {
	Plugin  string
	Command string
	Code    int
	Msg     string
	Details string
	// Stderr is what the plugin wrote to stderr, if anything.
	Stderr string
	// Err is why the run failed: the plugin's exit status
	// (*exec.ExitError), the context's error when the plugin was killed
	// because its context ended, or why it could not be started.
	Err error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("cni %s %s: %s", e.Plugin, e.Command, e.Msg)
	if e.Details != "" {
		s += ": " + e.Details
	}
	if e.Code != 0 {
		s += fmt.Sprintf(" (code %d)", e.Code)
	}
	return s
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Attach runs the plugin's ADD for cfg; the plugin is killed if ctx ends
// first. On failure it runs DEL and removes what ADD made; that DEL runs
// even if ctx has ended, and is bounded by a timeout of its own (a
// minute). On a kernel built without CONFIG_IPVLAN the ipvlan plugin's
// error is wrapped with [netenv.ErrNotSupported].
func Attach(ctx context.Context, cfg Config) (_ *Attachment, err error) {
	c := cfg
	switch c.Plugin {
	case "ptp", "bridge", "macvlan", "ipvlan":
	default:
		return nil, fmt.Errorf("cni attach: Plugin %q: must be ptp, bridge, macvlan or ipvlan", c.Plugin)
	}
	if c.NetnsPath == "" {
		return nil, errors.New("cni attach: NetnsPath: must be set")
	}
	if _, err := os.Stat(c.NetnsPath); err != nil {
		return nil, fmt.Errorf("cni attach: NetnsPath: %w", err)
	}
	if c.IfName == "" {
		c.IfName = "eth0"
	}
	if len(c.IfName) > 15 || strings.ContainsAny(c.IfName, "/ \t\n:") {
		return nil, fmt.Errorf("cni attach: IfName %q: not a valid interface name", c.IfName)
	}
	if c.ContainerID == "" {
		c.ContainerID = randomID()
	}
	if !c.Subnet.IsValid() {
		c.Subnet = netenv.RandomSubnet()
	}
	if !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 {
		return nil, fmt.Errorf("cni attach: Subnet %s: must be IPv4 with room for a gateway and a host", c.Subnet)
	}
	c.Subnet = c.Subnet.Masked()
	if c.Plugin == "macvlan" || c.Plugin == "ipvlan" {
		if c.Master == "" {
			return nil, fmt.Errorf("cni attach: Master: must be set for %s", c.Plugin)
		}
		if err := checkMaster(c.Master); err != nil {
			return nil, fmt.Errorf("cni attach: %w", err)
		}
	}
	if c.MTU < 0 {
		return nil, fmt.Errorf("cni attach: MTU %d: must not be negative", c.MTU)
	}
	if c.PluginDir == "" {
		c.PluginDir = DefaultPluginDir
	}
	a := &Attachment{
		Plugin:      c.Plugin,
		IfName:      c.IfName,
		NetnsPath:   c.NetnsPath,
		ContainerID: c.ContainerID,
		pluginPath:  filepath.Join(c.PluginDir, c.Plugin),
	}
	for _, p := range []string{a.pluginPath, filepath.Join(c.PluginDir, "host-local")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("cni attach: find plugin (install containernetworking-plugins): %w", err)
		}
	}

	// The plugins' DEL, which a failed ADD is followed by, deletes the
	// interface by name: it would take an existing one with it.
	if err := checkIfNameFree(c.NetnsPath, c.IfName); err != nil {
		return nil, fmt.Errorf("cni attach: %w", err)
	}

	a.ipam, err = holdIPAM(c.Subnet)
	if err != nil {
		return nil, fmt.Errorf("cni attach: %w", err)
	}
	if c.Plugin == "bridge" || c.Plugin == "ptp" {
		// Before ADD, which sets ip_forward=1 in this namespace.
		a.forward, err = holdForward()
		if err != nil {
			return nil, errors.Join(fmt.Errorf("cni attach: %w", err), a.ipam.release())
		}
	}
	if c.Plugin == "bridge" {
		if c.Bridge == "" {
			c.Bridge = netenv.RandomName("afxb")
		}
		a.Bridge = c.Bridge
		a.bridge, err = holdBridge(c.Bridge)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("cni attach: %w", err), a.ipam.release(), a.forward.release())
		}
	}
	a.IPAMDir = a.ipam.dir
	a.conf = netConf(c, a.ipam.dir)
	a.env = []string{
		"CNI_CONTAINERID=" + c.ContainerID,
		"CNI_NETNS=" + c.NetnsPath,
		"CNI_IFNAME=" + c.IfName,
		"CNI_PATH=" + c.PluginDir,
		"CNI_ARGS=",
		"PATH=" + os.Getenv("PATH"),
	}

	out, err := a.exec(ctx, "ADD", a.conf)
	if err != nil {
		var perr *Error
		if c.Plugin == "ipvlan" && errors.As(err, &perr) &&
			strings.Contains(perr.Msg+perr.Details, unix.EOPNOTSUPP.Error()) {
			err = fmt.Errorf("kernel built without CONFIG_IPVLAN: %w: %w", netenv.ErrNotSupported, err)
		}
		// The spec asks a runtime to DEL after a failed ADD.
		return nil, errors.Join(fmt.Errorf("cni attach %s: %w", c.NetnsPath, err), a.close(ctx))
	}
	a.Result = out
	if err := a.parse(out); err != nil {
		return nil, errors.Join(fmt.Errorf("cni attach %s: %w", c.NetnsPath, err), a.close(ctx))
	}
	return a, nil
}

func netConf(c Config, dataDir string) map[string]any {
	ipam := map[string]any{
		"type":    "host-local",
		"subnet":  c.Subnet.String(),
		"dataDir": dataDir,
	}
	// One network name for every plugin: host-local keeps the addresses
	// of one name apart from another's in the same data directory.
	conf := map[string]any{
		"cniVersion": Version,
		"name":       NetworkName,
		"type":       c.Plugin,
		"ipam":       ipam,
	}
	if c.MTU > 0 {
		conf["mtu"] = c.MTU
	}
	switch c.Plugin {
	case "ptp":
		conf["ipMasq"] = false
	case "bridge":
		conf["bridge"] = c.Bridge
		conf["isGateway"] = true
		conf["ipMasq"] = false
	case "macvlan":
		conf["master"] = c.Master
		conf["mode"] = orDefault(c.Mode, "bridge")
	case "ipvlan":
		conf["master"] = c.Master
		conf["mode"] = orDefault(c.Mode, "l2")
	}
	return conf
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// exec runs the plugin with CNI_COMMAND=cmd and conf on stdin, and returns
// its stdout.
func (a *Attachment) exec(ctx context.Context, cmd string, conf map[string]any) ([]byte, error) {
	in, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("cni %s %s: encode config: %w", a.Plugin, cmd, err)
	}
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, a.pluginPath)
	c.Env = append([]string{"CNI_COMMAND=" + cmd}, a.env...)
	c.Stdin = bytes.NewReader(in)
	c.Stdout, c.Stderr = &stdout, &stderr
	c.Dir = "/"
	c.WaitDelay = waitDelay
	runErr := c.Run()
	if runErr == nil {
		return stdout.Bytes(), nil
	}
	perr := &Error{Plugin: a.Plugin, Command: cmd, Stderr: strings.TrimSpace(stderr.String()), Err: runErr}
	var res struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if json.Unmarshal(stdout.Bytes(), &res) == nil && res.Msg != "" {
		perr.Code, perr.Msg, perr.Details = res.Code, res.Msg, res.Details
	} else if ctx.Err() != nil {
		// The run's error is "signal: killed", which does not say why.
		perr.Err = ctx.Err()
		perr.Msg = fmt.Sprintf("%v (%v)", ctx.Err(), runErr)
		perr.Details = perr.Stderr
	} else {
		perr.Msg = runErr.Error()
		if perr.Stderr != "" {
			perr.Details = perr.Stderr
		}
	}
	return nil, perr
}

// result is the part of a CNI 1.0 result this package reads.
type result struct {
	Interfaces []struct {
		Name    string `json:"name"`
		MAC     string `json:"mac"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Interface *int         `json:"interface"`
		Address   netip.Prefix `json:"address"`
		Gateway   netip.Addr   `json:"gateway"`
	} `json:"ips"`
}

func (a *Attachment) parse(out []byte) error {
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("decode %s result: %w", a.Plugin, err)
	}
	idx := -1
	for i, itf := range r.Interfaces {
		switch {
		case itf.Sandbox != "" && itf.Name == a.IfName:
			idx = i
			if mac, err := net.ParseMAC(itf.MAC); err == nil {
				a.MAC = mac
			}
		case itf.Sandbox == "" && itf.Name != a.Bridge && a.Plugin != "macvlan" && a.Plugin != "ipvlan":
			a.HostIf = itf.Name
		}
	}
	if idx < 0 {
		return fmt.Errorf("%s result names no interface %s in the namespace: %s", a.Plugin, a.IfName, out)
	}
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface == idx {
			if ip.Address.Addr().Is4() {
				a.Addr, a.Gateway = ip.Address, ip.Gateway
				break
			}
		}
	}
	if !a.Addr.IsValid() {
		return fmt.Errorf("%s result gives %s no IPv4 address: %s", a.Plugin, a.IfName, out)
	}
	return nil
}

// Close runs the plugin's DEL and removes what DEL leaves: the interface
// in the namespace if DEL failed, the bridge if
// an Attach made it and no other open attachment of this process is on
// it, the IPAM data directory if no other open attachment of this process
// has the same Subnet, and ip_forward's change once no
// other ptp or bridge attachment of this process in the same namespace
// needs it (see the package documentation). The plugin is killed if DEL
// takes longer than a minute. The first Close reports every failure;
// later ones return nil. Closes called at the same time wait for the
// first.
func (a *Attachment) Close() error { return a.close(context.Background()) }

// close is Close with the values of ctx; DEL runs even if ctx has ended,
// bounded by delTimeout.
func (a *Attachment) close(ctx context.Context) (err error) {
	a.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), delTimeout)
		defer cancel()
		var errs []error
		conf := a.conf
		if a.Result != nil {
			conf = make(map[string]any, len(a.conf)+1)
			for k, v := range a.conf {
				conf[k] = v
			}
			conf["prevResult"] = a.Result
		}
		if _, err := a.exec(ctx, "DEL", conf); err != nil {
			errs = append(errs, fmt.Errorf("cni detach %s: %w", a.NetnsPath, err))
			// A DEL that failed may have left the interface (the
			// plugins release the address before they delete it).
			// Attach found the name free, so the interface is ADD's.
			if err := removeLink(a.NetnsPath, a.IfName); err != nil {
				errs = append(errs, fmt.Errorf("cni detach: remove %s that DEL left: %w", a.IfName, err))
			}
		}
		if a.bridge != nil {
			if err := a.bridge.release(); err != nil {
				errs = append(errs, fmt.Errorf("cni detach: %w", err))
			}
		}
		if err := a.ipam.release(); err != nil {
			errs = append(errs, fmt.Errorf("cni detach: %w", err))
		}
		if a.forward != nil {
			if err := a.forward.release(); err != nil {
				errs = append(errs, fmt.Errorf("cni detach: %w", err))
			}
		}
		err = errors.Join(errs...)
	})
	return err
}

// checkIfNameFree refuses an interface name that the namespace at path
// already has.
func checkIfNameFree(path, ifname string) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("NetnsPath: %w", err)
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("NetnsPath %s: not a network namespace: %w", path, err)
	}
	defer nl.Close()
	if _, err := nl.LinkByName(ifname); err == nil {
		return fmt.Errorf("IfName %q: %s already has an interface of that name", ifname, path)
	}
	return nil
}

// removeLink deletes the interface ifname from the namespace at path, if
// both are still there.
func removeLink(path, ifname string) error {
	ns, err := netns.GetFromPath(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer nl.Close()
	l, err := nl.LinkByName(ifname)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// checkMaster refuses a master link that the calling thread's namespace,
// where the plugin runs, does not have: the macvlan plugin's error would
// not name it ("Link not found"), and neither would that of the DEL that
// follows a failed ADD.
func checkMaster(name string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		return fmt.Errorf("Master %q: no such link", name)
	case err != nil:
		return fmt.Errorf("Master %q: %w", name, err)
	}
	return nil
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return "afxdp-" + hex.EncodeToString(b[:])
}
