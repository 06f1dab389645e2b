package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/container"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// serve runs the agent with args until the returned stop is called.
func serve(t *testing.T, args []string) (*agent.Server, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *agent.Server, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- run(ctx, args, &logs, func(s *agent.Server) { ready <- s }) }()
	select {
	case s := <-ready:
		stopped := false
		stop := func() error {
			if stopped {
				return nil
			}
			stopped = true
			cancel()
			return <-done
		}
		t.Cleanup(func() { stop() })
		return s, stop
	case err := <-done:
		cancel()
		t.Fatalf("agent failed: %v\n%s", err, logs.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("agent not ready")
	}
	return nil, nil
}

func TestRunFlags(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	dir := t.TempDir()
	pinDir := testenv.MountBPFFS(t)

	srv, stop := serve(t, []string{"-iface", v.Host.Name, "-socket-dir", dir, "-allow-uid", "0",
		"-mode", "generic", "-filter-ethertype", "0x0800", "-filter-ipproto", "17", "-filter-port", "4789",
		"-filter-addr", "192.0.2.10", "-pin", "-pin-dir", pinDir, "-log-level", "debug"})
	sock := filepath.Join(dir, v.Host.Name, agent.SocketName)
	if srv.SocketPath(v.Host.Name) != sock {
		t.Fatalf("socket at %q", srv.SocketPath(v.Host.Name))
	}
	if f := srv.Program(v.Host.Name).Filter(); f != (bpf.Filter{EtherType: 0x0800, IPProto: 17, DstPort: 4789, DstAddr: netip.MustParseAddr("192.0.2.10")}) {
		t.Errorf("filter %v", f)
	}
	info, err := bpf.QueryXDP(v.Host.Index)
	if err != nil || info.Generic.ID != srv.Program(v.Host.Name).ID() {
		t.Fatalf("program not attached in generic mode: %+v, %v", info, err)
	}
	c, err := agent.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect("pod"); err != nil {
		t.Fatal(err)
	}
	m, err := c.XSKMap(v.Host.Name)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	c.Close()
	pin := filepath.Join(pinDir, v.Host.Name, agent.PinName)
	pm, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatalf("open pinned map: %v", err)
	}
	pm.Close()

	if err := stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after shutdown: %v", err)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin left after shutdown: %v", err)
	}
	if info, err := bpf.QueryXDP(v.Host.Index); err != nil || info.Attached() {
		t.Errorf("program left attached: %+v, %v", info, err)
	}
}

func TestRunConfigFile(t *testing.T) {
	v := testenv.NewVeth(t, nil)
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "agent.json")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{
		"socket_dir": %q,
		"allowed_uids": [0, 1000],
		"idle_timeout": "5s",
		"devices": [{"name": %q, "netns": %q, "mode": "auto", "max_queues": 4,
		             "filter": {"ethertype": 34525, "ipproto": 17, "dst_port": 9, "dst_addr": "fd00::9"}}]
	}`, dir, v.Peer.Name, v.Peer.NS.Path())), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srv, stop := serve(t, []string{"-config", cfg})
	if got := srv.Program(v.Peer.Name).MaxQueues(); got != 4 {
		t.Errorf("MaxQueues %d", got)
	}
	if f := srv.Program(v.Peer.Name).Filter(); f != (bpf.Filter{EtherType: 0x86DD, IPProto: 17, DstPort: 9, DstAddr: netip.MustParseAddr("fd00::9")}) {
		t.Errorf("filter %v", f)
	}
	// The program went onto the peer, inside its namespace.
	err = v.Peer.Do(func() error {
		info, err := bpf.QueryXDP(v.Peer.Index)
		if err != nil {
			return err
		}
		if !info.Attached() {
			return errors.New("nothing attached")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("program not on the peer: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestRunErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no interface"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"-iface", "x", "-mode", "turbo"}, "mode \"turbo\""},
		{[]string{"-iface", "x", "-allow-uid", "root"}, "-allow-uid"},
		{[]string{"-iface", "x", "-filter-ethertype", "ip"}, "-filter-ethertype"},
		{[]string{"-iface", "x", "-filter-addr", "10.0.0.256"}, "-filter-addr"},
		{[]string{"-iface", "x", "-filter-ethertype", "0x86dd", "-filter-addr", "10.0.0.1"}, "Filter.DstAddr 10.0.0.1: an IPv4 address needs EtherType 0x0800"},
		{[]string{"-iface", "x", "-filter-addr", "0.0.0.0"}, "Filter.DstAddr 0.0.0.0: the unspecified address"},
		{[]string{"-iface", "x", "-log-level", "loud"}, "-log-level"},
		{[]string{"-config", "/nonexistent/agent.json"}, "read config"},
		{[]string{"-nosuchflag"}, "not defined"},
		{[]string{"-iface", "x", "-max-conns", "-1"}, "MaxConns -1"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, &out, nil)
		if err == nil || !strings.Contains(err.Error()+out.String(), tc.want) {
			t.Errorf("run(%q) = %v (%s), want %q", tc.args, err, out.String(), tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"devices": [{"name": "x"}], "bogus": 1}`), 0o600)
	if err := run(context.Background(), []string{"-config", bad}, &bytes.Buffer{}, nil); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown config field: %v", err)
	}
	// A bad value in a device entry names the file, the entry and the
	// field, whichever field it is.
	for _, tc := range []struct{ entry, want string }{
		{`{"name": "y", "filter": {"dst_addr": "10.0.0"}}`, `filter.dst_addr: ParseAddr("10.0.0")`},
		{`{"name": "y", "mode": "turbo"}`, `mode "turbo"`},
	} {
		os.WriteFile(bad, []byte(`{"devices": [{"name": "x"}, `+tc.entry+`]}`), 0o600)
		err := run(context.Background(), []string{"-config", bad}, &bytes.Buffer{}, nil)
		if want := "config " + bad + ": devices[1] (y): " + tc.want; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config device %s: %v, want %q", tc.entry, err, want)
		}
	}
	// So does a bad idle_timeout, which a JSON type error would not
	// reach.
	for _, v := range []string{`"30 parsecs"`, `true`} {
		os.WriteFile(bad, []byte(`{"idle_timeout": `+v+`, "devices": [{"name": "x"}]}`), 0o600)
		err := run(context.Background(), []string{"-config", bad}, &bytes.Buffer{}, nil)
		if want := "config " + bad + ": idle_timeout: duration " + v; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config idle_timeout %s: %v, want %q", v, err, want)
		}
	}
	// The device flags shape -iface interfaces only: beside a config
	// with devices and no -iface, they are refused, not dropped (a
	// filter dropped silently redirects every frame).
	good := filepath.Join(t.TempDir(), "agent.json")
	os.WriteFile(good, []byte(`{"devices": [{"name": "x"}]}`), 0o600)
	for _, f := range [][]string{{"-netns", "/var/run/netns/x"}, {"-mode", "generic"}, {"-replace"}, {"-max-queues", "4"},
		{"-filter-ethertype", "0x0800"}, {"-filter-ipproto", "17"}, {"-filter-port", "4789"}, {"-filter-addr", "10.0.0.1"}} {
		err := run(context.Background(), append([]string{"-config", good}, f...), &bytes.Buffer{}, nil)
		if want := f[0] + " applies to -iface interfaces only"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run(-config, %q) = %v, want %q", f, err, want)
		}
	}
}

// TestStalePinWarned: an agent killed while it pinned its maps leaves the
// pins behind (see TestAgentKilled), and only a start with -pin takes them
// back. Started without -pin, the agent says at start which pin it found
// at <pin-dir>/<interface>/xsks_map (a pod that opens it gets a map no
// program reads) and how to remove it, and leaves it: it cannot tell an
// earlier run's pin from another agent's.
func TestStalePinWarned(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	pinDir := testenv.MountBPFFS(t)
	pin := filepath.Join(pinDir, v.Host.Name, agent.PinName)
	if err := os.Mkdir(filepath.Dir(pin), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Pin(pin)
	m.Close()
	if err != nil {
		t.Fatal(err)
	}

	args := []string{"-iface", v.Host.Name, "-socket-dir", t.TempDir(), "-pin-dir", pinDir}
	logs := runOnce(t, args)
	if !strings.Contains(logs, "stale pin") || !strings.Contains(logs, "rm "+pin) {
		t.Errorf("no warning of the stale pin %s in the logs:\n%s", pin, logs)
	}
	if _, err := os.Lstat(pin); err != nil {
		t.Errorf("the stale pin: %v; want it left in place", err)
	}

	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	if logs := runOnce(t, args); strings.Contains(logs, "stale pin") {
		t.Errorf("a warning with no pin left:\n%s", logs)
	}
}

// runOnce runs the agent with args until it serves, stops it, and returns
// its logs.
func runOnce(t *testing.T, args []string) string {
	t.Helper()
	logs := &testenv.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, logs, func(*agent.Server) { cancel() }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent: %v\n%s", err, logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("agent still running 10 s after it was stopped\n%s", logs)
	}
	return logs.String()
}

// TestConfigTrailingData: the config file is one JSON object. What follows
// it (a second object pasted below the first, a stray brace left by an
// edit) is refused, not dropped: dropped, its settings would be silently
// ignored.
func TestConfigTrailingData(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "agent.json")
	for _, tail := range []string{"\n{\"pin\": true}\n", "}", "\n\"read_only_map\": true"} {
		if err := os.WriteFile(cfg, []byte(`{"devices": [{"name": "x"}]}`+tail), 0o600); err != nil {
			t.Fatal(err)
		}
		err := run(context.Background(), []string{"-config", cfg, "-socket-dir", t.TempDir()}, &bytes.Buffer{}, nil)
		if want := "parse config " + cfg + ": data after the JSON object at offset 28"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config followed by %q: %v, want %q", tail, err, want)
		}
	}
	// White space after the object is no data.
	if err := os.WriteFile(cfg, []byte("{\"devices\": [{\"name\": \"x\"}]}\n\t \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"-config", cfg, "-socket-dir", t.TempDir()}, &bytes.Buffer{}, nil)
	if err == nil || strings.Contains(err.Error(), "parse config") {
		t.Errorf("config followed by white space: %v, want it read (and device x not found)", err)
	}
}

// TestPinDirNotBPFFSMakesNothing: a -pin-dir that is not on a bpffs is
// refused before any of its missing directories is made: a mistyped path
// must not leave a tree of root's directories behind.
func TestPinDirNotBPFFSMakesNothing(t *testing.T) {
	base := t.TempDir() // tmpfs or disk, not a bpffs
	pinDir := filepath.Join(base, "a", "b")
	var logs bytes.Buffer
	err := run(context.Background(), []string{"-iface", "x", "-socket-dir", t.TempDir(), "-pin", "-pin-dir", pinDir}, &logs, nil)
	if want := "pin dir " + pinDir + ": not on a bpffs"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("run = %v, want %q\n%s", err, want, logs.String())
	}
	if _, err := os.Lstat(filepath.Join(base, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the refusal: %v, want it not made", filepath.Join(base, "a"), err)
	}
}

// TestRunFailedMakesNothing: an agent that fails to start, on an
// interface that is missing or on a filter the program refuses, leaves
// none of the socket and pin directories it made: a mistyped -iface must
// not leave an empty /tmp/afxdp_dp behind.
func TestRunFailedMakesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-iface", "afxdp-none"}, "device afxdp-none"},
		{[]string{"-iface", "afxdp-none", "-filter-ethertype", "0x86dd", "-filter-addr", "10.0.0.1"}, "Filter.DstAddr 10.0.0.1"},
	} {
		base := t.TempDir()
		mnt := testenv.MountBPFFS(t)
		args := append([]string{"-socket-dir", filepath.Join(base, "a", "b"), "-pin", "-pin-dir", filepath.Join(mnt, "p")}, tc.args...)
		var logs bytes.Buffer
		if err := run(context.Background(), args, &logs, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want %q\n%s", args, err, tc.want, logs.String())
		}
		for _, d := range []string{filepath.Join(base, "a"), filepath.Join(mnt, "p")} {
			if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("run(%q): %s left behind: %v", args, d, err)
			}
		}
	}
}

// TestReadyLogsEffectiveUIDs: without -allow-uid only root may connect,
// and the start-up log says so rather than listing no UID at all.
func TestReadyLogsEffectiveUIDs(t *testing.T) {
	testenv.RequirePrivileged(t)
	v := testenv.NewVeth(t, nil)
	logs := runOnce(t, []string{"-iface", v.Host.Name, "-socket-dir", t.TempDir()})
	if !strings.Contains(logs, "allowed_uids=[0]") {
		t.Errorf("start-up log without -allow-uid does not list UID 0:\n%s", logs)
	}
}

// TestRunFollowsInterface: a pod's interface goes and an interface of the
// same name comes back in the same namespace. With no client asking, the
// agent pins a new map in place of the old within a few seconds, and a
// socket put into it through the pin receives what is sent to the new
// interface: the map is the new program's, attached to it.
func TestRunFollowsInterface(t *testing.T) {
	pod := testenv.NewNamedNetns(t, netenv.RandomName("afxpod"))
	v1 := testenv.NewVeth(t, &netenv.VethOptions{HostNS: pod})
	dev := v1.Host.Name
	pinDir := testenv.MountBPFFS(t)
	serve(t, []string{"-iface", dev, "-netns", pod.Path(), "-socket-dir", t.TempDir(),
		"-pin", "-pin-dir", pinDir, "-filter-ipproto", "17", "-filter-port", fmt.Sprint(crashPort)})
	pin := filepath.Join(pinDir, dev, agent.PinName)
	// pinned returns the ID of the map pinned, or 0.
	pinned := func() ebpf.MapID {
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			return 0
		}
		defer m.Close()
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		return id
	}
	old := pinned()
	if old == 0 {
		t.Fatalf("no map pinned at %s", pin)
	}

	if err := v1.Close(); err != nil {
		t.Fatal(err)
	}
	v2 := testenv.NewVeth(t, &netenv.VethOptions{HostNS: pod})
	testenv.RenameLink(t, &v2.Host, dev)

	deadline := time.Now().Add(10 * time.Second)
	for got := pinned(); got == 0 || got == old; got = pinned() {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the interface came back, the pin holds map %d (old %d)", got, old)
		}
		time.Sleep(50 * time.Millisecond)
	}
	small := &xsk.Options{NumFrames: 256, RxRingSize: 128, TxRingSize: 128, FillRingSize: 128, CompletionRingSize: 128}
	var sock *agent.Socket
	err := pod.Do(func() error {
		var err error
		sock, err = agent.OpenPinned(pin, dev, 0, small)
		return err
	})
	if err != nil {
		t.Fatalf("open a socket through the new pin: %v", err)
	}
	defer sock.Close()
	if !receives(t, v2, sock.Socket) {
		t.Error("the socket put in the new pin's map received nothing sent to the new interface")
	}
}

// TestNeedsPrivilege: a refused permission says that the agent needs root
// and which capabilities the process lacks, and still matches the errno;
// with the capabilities, or for another error, the error is left alone.
func TestNeedsPrivilege(t *testing.T) {
	denied := fmt.Errorf("new agent server: create socket directory /run/x: %w", os.NewSyscallError("mkdirat", unix.EACCES))
	all := ^uint64(0)
	for _, tc := range []struct {
		name string
		err  error
		caps uint64
		want string // "" means err unchanged
	}{
		{"no_caps", denied, 0, "needs root: this process lacks CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON, CAP_NET_RAW, CAP_CHOWN, CAP_FOWNER (of "},
		{"eperm", fmt.Errorf("map create: %w", unix.EPERM), 0, "needs root: this process lacks CAP_NET_ADMIN,"},
		{"sys_admin_for_perfmon", denied, all &^ (1 << unix.CAP_PERFMON), ""},
		{"no_perfmon_no_sys_admin", denied, all &^ (1<<unix.CAP_PERFMON | 1<<unix.CAP_SYS_ADMIN), "lacks CAP_PERFMON ("},
		{"all_caps", denied, all, ""},
		{"other_error", errors.New("no such device"), 0, ""},
	} {
		got := needsPrivilege(tc.err, tc.caps)
		if tc.want == "" {
			if got != tc.err {
				t.Errorf("%s: needsPrivilege = %v, want the error unchanged", tc.name, got)
			}
			continue
		}
		if !strings.Contains(got.Error(), tc.want) || !strings.HasSuffix(got.Error(), tc.err.Error()) || !errors.Is(got, errors.Unwrap(tc.err)) {
			t.Errorf("%s: needsPrivilege = %v, want it to contain %q and wrap %v", tc.name, got, tc.want, tc.err)
		}
	}
}

// TestRunNotRoot runs the real command as an unprivileged user: it fails
// saying that it needs root, not with a bare "permission denied".
func TestRunNotRoot(t *testing.T) {
	testenv.RequirePrivileged(t)
	sd := filepath.Join(testenv.SharedDir(t, "afxdp-agent-nonroot-"), "sd")
	var out bytes.Buffer
	p, err := container.Start(&container.Options{
		Path: container.Executable(t), Args: []string{"-iface", "lo", "-socket-dir", sd},
		Env: []string{agentMainEnv + "=1"}, ShareNamespaces: true, Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = p.Wait()
	want := "afxdp-agent: needs root: this process lacks CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON, CAP_NET_RAW, CAP_CHOWN, CAP_FOWNER (of "
	if err == nil || !strings.HasPrefix(out.String(), want) || !strings.Contains(out.String(), "mkdirat: permission denied") {
		t.Errorf("agent as UID %d: %v, said %q; want it to fail with %q... mkdirat: permission denied", container.Nobody, err, out.String(), want)
	}
	if _, err := os.Lstat(sd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after the refusal: %v, want it not made", sd, err)
	}
}
