package agent

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

// podEnv is a pod as an orchestrator makes it: a namespace at
// /var/run/netns/<name> with one end of a veth pair in it, and the agent
// serving that end, pinning its map.
type podEnv struct {
	name   string // the namespace's name
	ns     *netenv.Netns
	veth   *netenv.Veth // veth.Peer is the served interface, in ns
	dev    string
	srv    *Server
	sock   string
	logs   *testenv.Buffer
	pinDir string
}

func newPodEnv(t *testing.T) *podEnv {
	t.Helper()
	testenv.RequirePrivileged(t)
	e := &podEnv{name: netenv.RandomName("afxpod"), logs: &testenv.Buffer{}, pinDir: testenv.MountBPFFS(t)}
	e.ns = testenv.NewNamedNetns(t, e.name)
	e.veth = testenv.NewVeth(t, &netenv.VethOptions{PeerNS: e.ns})
	e.dev = e.veth.Peer.Name
	var err error
	e.srv, err = NewServer(&ServerOptions{
		Devices: []Device{{
			Name:   e.dev,
			Netns:  e.ns.Path(),
			Filter: bpf.Filter{EtherType: 0x0800, IPProto: unix.IPPROTO_UDP, DstPort: testPort},
		}},
		SocketDir: socketDir(t),
		PinDir:    e.pinDir,
		Logger:    slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), e.logs), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.srv.Close(); err != nil {
			t.Error(err)
		}
	})
	e.sock = e.srv.SocketPath(e.dev)
	return e
}

// newPodVeth makes a veth pair whose end in ns is renamed to e.dev: the
// next pod's interface.
func (e *podEnv) newPodVeth(t *testing.T, ns *netenv.Netns) *netenv.Veth {
	t.Helper()
	v := testenv.NewVeth(t, &netenv.VethOptions{PeerNS: ns})
	testenv.RenameLink(t, &v.Peer, e.dev)
	return v
}

// openXSK opens an AF_XDP socket on queue 0 of e.dev in ns, with no
// program of its own, closed at cleanup.
func (e *podEnv) openXSK(t *testing.T, ns *netenv.Netns) *xsk.Socket {
	t.Helper()
	var s *xsk.Socket
	err := ns.Do(func() error {
		o := *smallXSK
		o.NoXDP = true
		var err error
		s, err = xsk.Open(e.dev, 0, &o)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ids are the kernel's IDs of what a device's incarnation holds: programs
// and maps.
type ids struct{ prog, check, xsks, twin uint32 }

func (e *podEnv) ids(t *testing.T) ids {
	t.Helper()
	d := e.srv.devices[e.dev]
	d.mu.RLock()
	defer d.mu.RUnlock()
	in := d.cur
	progID := func(p *ebpf.Program) uint32 {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		return uint32(id)
	}
	return ids{prog: progID(in.prog.Prog()), xsks: mapID(t, in.prog.XSKMap()), twin: mapID(t, in.reg.twin), check: progID(in.reg.check)}
}

// wantGone waits until the kernel has released every object of old.
func wantGone(t *testing.T, old ids) {
	t.Helper()
	gone := func(open func() (io.Closer, error)) bool {
		c, err := open()
		if err == nil {
			c.Close()
		}
		return errors.Is(err, os.ErrNotExist)
	}
	for what, open := range map[string]func() (io.Closer, error){
		"old program":            func() (io.Closer, error) { return ebpf.NewProgramFromID(ebpf.ProgramID(old.prog)) },
		"old registration check": func() (io.Closer, error) { return ebpf.NewProgramFromID(ebpf.ProgramID(old.check)) },
		"old xskmap":             func() (io.Closer, error) { return ebpf.NewMapFromID(ebpf.MapID(old.xsks)) },
		"old registration map":   func() (io.Closer, error) { return ebpf.NewMapFromID(ebpf.MapID(old.twin)) },
	} {
		testenv.WaitFor(t, what+" to be released by the kernel", func() bool { return gone(open) })
	}
}

// mapID returns the kernel's ID of m.
func mapID(t *testing.T, m *ebpf.Map) uint32 {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return uint32(id)
}

// pinnedMapID returns the ID of the map pinned for e.dev.
func (e *podEnv) pinnedMapID(t *testing.T) uint32 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(e.srv.PinPath(e.dev), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.CloseObject(m)
	return mapID(t, m)
}

// wantRefused checks that the map fd is refused while the interface is
// absent, and that the server's log says why.
func (e *podEnv) wantRefused(t *testing.T, c *Client, why string) {
	t.Helper()
	if m, err := c.XSKMap(e.dev); !errors.Is(err, ErrRejected) {
		if m != nil {
			m.Close()
		}
		t.Fatalf("XSKMap with the interface absent = %v, want ErrRejected", err)
	}
	var line string
	for l := range strings.Lines(e.logs.String()) {
		if strings.Contains(l, "refused map fd") {
			line = l
		}
	}
	if !strings.Contains(line, why) || !strings.Contains(line, e.ns.Path()) {
		t.Errorf("the refusal's log line %q does not say %q in %s", line, why, e.ns.Path())
	}
}

// TestFollowLink: a pod's interface is deleted and one of the same name is
// made in the same namespace (a container restarted in its pod). While it
// is absent the agent refuses the map and logs why; once it is back, a
// request finds the program gone with the old interface, and the agent
// attaches a new program with a new XSKMAP to the new interface, pins that
// in place of the old, and serves it: frames sent to the new interface
// reach a socket registered through the same agent socket. Concurrent
// requests attach once. The connection that held queue 0 in the old map
// holds nothing in the new one, and its socket, bound to the vanished
// interface, cannot be registered there. Nothing of the old program stays.
func TestFollowLink(t *testing.T) {
	e := newPodEnv(t)
	fds := fdCount(t)
	old := e.ids(t)
	if got := e.pinnedMapID(t); got != old.xsks {
		t.Fatalf("pinned map %d, want the served map %d", got, old.xsks)
	}

	// The first container registers queue 0 and receives.
	c0 := connect(t, e.sock, "pod-0")
	s0 := e.openXSK(t, e.ns)
	if err := c0.Register(e.dev, 0, s0.FD()); err != nil {
		t.Fatalf("Register: %v", err)
	}
	receiveUDP(t, e.veth.Host, e.veth.Peer.IP(), s0, 3)

	// The interface goes; the connection stays.
	if err := e.veth.Close(); err != nil {
		t.Fatal(err)
	}
	e.wantRefused(t, c0, "interface absent")

	// An interface of the same name is back. Several connections ask at
	// once: one attaches, all get the new map.
	v2 := e.newPodVeth(t, e.ns)
	const n = 8
	mapIDs := make([]uint32, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		c := connect(t, e.sock, "pod-1")
		wg.Go(func() {
			m, err := c.XSKMap(e.dev)
			if err != nil {
				errs[i] = err
				return
			}
			defer m.Close()
			info, err := m.Info()
			if err != nil {
				errs[i] = err
				return
			}
			id, _ := info.ID()
			mapIDs[i] = uint32(id)
			errs[i] = c.Close()
		})
	}
	wg.Wait()
	cur := e.ids(t)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("connection %d: XSKMap after the interface came back: %v", i, errs[i])
		}
		if mapIDs[i] != cur.xsks {
			t.Errorf("connection %d got map %d, want the new map %d", i, mapIDs[i], cur.xsks)
		}
	}
	if cur.xsks == old.xsks || cur.prog == old.prog {
		t.Fatalf("program %d map %d: not new (old program %d map %d)", cur.prog, cur.xsks, old.prog, old.xsks)
	}
	if k := strings.Count(e.logs.String(), "re-attached device"); k != 1 {
		t.Errorf("%d re-attachments logged, want 1", k)
	}
	if got := e.pinnedMapID(t); got != cur.xsks {
		t.Errorf("pinned map %d after the re-attach, want the new map %d (old %d)", got, cur.xsks, old.xsks)
	}
	var info bpf.XDPInfo
	var attached bool
	err := e.ns.Do(func() error {
		l, err := e.ns.Handle().LinkByName(e.dev)
		if err != nil {
			return err
		}
		info, err = bpf.QueryXDP(l.Attrs().Index)
		attached = info.Driver.ID == cur.prog || info.Generic.ID == cur.prog
		return err
	})
	if err != nil || !attached {
		t.Fatalf("new program %d not on the new interface: %+v, %v", cur.prog, info, err)
	}

	// The old connection's socket is bound to the interface that went:
	// the new map is not for it.
	if err := c0.Register(e.dev, 0, s0.FD()); !errors.Is(err, ErrRejected) {
		t.Errorf("Register of a socket bound to the vanished interface = %v, want ErrRejected", err)
	}
	// Its queue is free for the next container, on the same agent socket,
	// though the old connection is still open.
	c1 := connect(t, e.sock, "pod-1")
	s1 := e.openXSK(t, e.ns)
	if err := c1.Register(e.dev, 0, s1.FD()); err != nil {
		t.Fatalf("Register on the new interface: %v", err)
	}
	receiveUDP(t, v2.Host, v2.Peer.IP(), s1, 5)
	// The old connection's end takes nothing of the new map with it.
	if err := c0.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the old connection to end", func() bool { return e.srv.Conns() == 1 })
	receiveUDP(t, v2.Host, v2.Peer.IP(), s1, 5)

	// Nothing of the old incarnation is left: not in the kernel (s0, still
	// open, was in the old map), not in the agent's descriptors.
	wantGone(t, old)
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	s0.Close()
	s1.Close()
	testenv.WaitFor(t, "the connections to end", func() bool { return e.srv.Conns() == 0 })
	if after := fdCount(t); after != fds {
		t.Errorf("%d descriptors open, %d before the interface went", after, fds)
	}
}

// TestFollowNetns: the pod's namespace is deleted, and a new one is made at
// the same path with an interface of the same name (a pod restarted under
// its name). While the namespace is absent the agent refuses the map and
// logs why; once it is back, Refresh, with no client asking, attaches a
// new program in the new namespace and pins its map in place of the old,
// and a client that opens only the pin receives what is sent to the new
// interface.
func TestFollowNetns(t *testing.T) {
	e := newPodEnv(t)
	old := e.ids(t)
	c := connect(t, e.sock, "pod-0")
	s0 := e.openXSK(t, e.ns)
	m, err := c.XSKMap(e.dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Update(uint32(0), uint32(s0.FD()), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	receiveUDP(t, e.veth.Host, e.veth.Peer.IP(), s0, 3)

	if err := e.veth.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.ns.Close(); err != nil {
		t.Fatal(err)
	}
	e.wantRefused(t, c, "no such file or directory")
	if err := e.srv.Refresh(); err == nil || !strings.Contains(err.Error(), e.ns.Path()) {
		t.Errorf("Refresh with the namespace gone = %v, want an error naming %s", err, e.ns.Path())
	}

	ns2 := testenv.NewNamedNetns(t, e.name)
	v2 := e.newPodVeth(t, ns2)
	if err := e.srv.Refresh(); err != nil {
		t.Fatalf("Refresh with the interface back: %v", err)
	}
	cur := e.ids(t)
	if cur.xsks == old.xsks {
		t.Fatalf("map %d not replaced", cur.xsks)
	}
	if got := e.pinnedMapID(t); got != cur.xsks {
		t.Fatalf("pinned map %d after Refresh, want the new map %d (old %d)", got, cur.xsks, old.xsks)
	}
	var s1 *Socket
	err = ns2.Do(func() error {
		var err error
		s1, err = OpenPinned(e.srv.PinPath(e.dev), e.dev, 0, smallXSK)
		return err
	})
	if err != nil {
		t.Fatalf("OpenPinned on the new interface: %v", err)
	}
	defer s1.Close()
	receiveUDP(t, v2.Host, v2.Peer.IP(), s1.Socket, 5)

	// The client's old map fd reaches the old map only.
	s0.Close()
	m.Close()
	wantGone(t, old)
	receiveUDP(t, v2.Host, v2.Peer.IP(), s1.Socket, 2)
}

// TestFollowRepinsAtomically: each time the server follows the interface
// (here its program is detached, and Refresh attaches a new one), it pins
// the new map in place of the old while clients open the pin. Every open
// finds a map, the old or the new: the new map is pinned aside and renamed
// over the old pin, so there is no moment without one. Once Refresh has
// returned the pin is the new map, and no temporary pin is left.
func TestFollowRepinsAtomically(t *testing.T) {
	testenv.RequirePrivileged(t)
	pinDir := testenv.MountBPFFS(t)
	e := newTestEnv(t, func(o *ServerOptions) { o.PinDir = pinDir })
	pin := e.srv.PinPath(e.dev)
	d := e.srv.devices[e.dev]
	stop := make(chan struct{})
	var opens atomic.Int64
	var mu sync.Mutex
	var failed []error
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, err := ebpf.LoadPinnedMap(pin, nil)
				if err != nil {
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
					continue
				}
				// Through CloseObject, as the agent closes its own: a
				// plain Close through the last reference can close a
				// later open's descriptor (see sys.CloseObject).
				sys.CloseObject(m)
				opens.Add(1)
			}
		})
	}
	const follows = 50
	for range follows {
		d.mu.RLock()
		in := d.cur
		d.mu.RUnlock()
		if err := in.att.Close(); err != nil {
			t.Fatal(err)
		}
		if err := e.srv.Refresh(); err != nil {
			t.Fatalf("Refresh with the program detached: %v", err)
		}
		if d.cur == in {
			t.Fatal("Refresh did not follow: the old program is still the device's")
		}
		if got, want := (&podEnv{srv: e.srv, dev: e.dev}).pinnedMapID(t), mapID(t, e.srv.xskMap(e.dev)); got != want {
			t.Fatalf("pinned map %d after Refresh, want the new map %d", got, want)
		}
	}
	close(stop)
	wg.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d opens of the pin failed during %d re-pins, the first: %v", len(failed), int(opens.Load())+len(failed), follows, failed[0])
	}
	if opens.Load() == 0 {
		t.Error("no open of the pin succeeded")
	}
	wantOnlyPin(t, filepath.Dir(pin))
}

// wantOnlyPin checks that the device's pin directory dir holds the pin
// and nothing else.
func wantOnlyPin(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != PinName {
		var names []string
		for _, de := range ents {
			names = append(names, de.Name())
		}
		t.Errorf("pin directory holds %q, want only %s", names, PinName)
	}
}

// TestPinTemporaryNeverLeft: the map is pinned at a temporary name and
// renamed over the pin. When the rename fails (a directory is where the
// pin goes), NewServer fails naming it and removes the temporary pin; a
// temporary pin left by an agent that died half-way is replaced, and gone
// once the server pins.
func TestPinTemporaryNeverLeft(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir string)
		want  string // in NewServer's error; "" when it succeeds
	}{
		{"directory_at_pin", func(t *testing.T, dir string) { mkdir(t, dir, PinName, 0o755) }, "renameat: is a directory"},
		{"stale_temporary_pin", func(t *testing.T, dir string) {
			m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if err := m.Pin(filepath.Join(dir, pinTmpName)); err != nil {
				t.Fatal(err)
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := testenv.NewVeth(t, nil)
			mnt := testenv.MountBPFFS(t)
			dir := mkdir(t, mnt, v.Host.Name, 0o755)
			tc.plant(t, dir)
			srv, err := NewServer(&ServerOptions{
				Devices:   []Device{{Name: v.Host.Name}},
				SocketDir: socketDir(t),
				PinDir:    mnt,
				Logger:    testLogger(t),
			})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer srv.Close()
			} else if err == nil {
				srv.Close()
				t.Fatalf("NewServer succeeded, want an error saying %q", tc.want)
			} else if want := filepath.Join(dir, PinName); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewServer = %v, want an error naming %s: %s", err, want, tc.want)
			}
			wantOnlyPin(t, dir)
		})
	}
}
