package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/app"
	"github.com/afxdp/afxdp/internal/cni"
	"github.com/afxdp/afxdp/internal/netenv"
	"github.com/afxdp/afxdp/internal/oci"
	"github.com/afxdp/afxdp/internal/packet"
	"github.com/afxdp/afxdp/internal/pktgen"
	"github.com/afxdp/afxdp/internal/runc"
	"github.com/afxdp/afxdp/internal/testenv"
	"github.com/afxdp/afxdp/xsk"
)

const (
	imageTag = "afxdp/sender:e2e"
	// imageUID is the image's user (oci.DefaultUser).
	imageUID = 65534
	// replyPort is the sender's source port: the agent's program in the
	// container redirects only UDP to it, so ARP reaches the stack.
	replyPort = 7778
	// sent is how many frames each container sends, and sendRate their
	// rate in packets per second.
	sent     = 20_000
	sendRate = 100_000
	sendSize = 128
)

// requireTools fails (in CI) or skips without runc and the CNI plugins.
func requireTools(t *testing.T) {
	t.Helper()
	testenv.RequirePrivileged(t)
	var missing []string
	if _, err := exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc")
	}
	for _, p := range []string{"ptp", "macvlan", "host-local"} {
		if _, err := os.Stat(filepath.Join(cni.DefaultPluginDir, p)); err != nil {
			missing = append(missing, "CNI plugin "+p)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv(testenv.RequireEnv) == "1" {
		t.Fatalf("missing %s (run .ci/deps.sh)", strings.Join(missing, ", "))
	}
	t.Skipf("missing %s (apt-get install runc containernetworking-plugins)", strings.Join(missing, ", "))
}

// buildImage builds examples/sender with CGO_ENABLED=0, packs it into an
// image with internal/oci (what cmd/afxdp-image does), writes an OCI layout
// and unpacks it into a runc bundle.
func buildImage(t *testing.T) *runc.Bundle {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "sender")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/afxdp/afxdp/examples/sender")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sender: %v\n%s", err, out)
	}
	img, err := oci.Build(&oci.Options{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "layout")
	if err := oci.WriteLayout(layout, img, imageTag); err != nil {
		t.Fatal(err)
	}
	b, err := runc.Unpack(layout, imageTag, filepath.Join(dir, "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	if got := strings.Join(b.Image.Entrypoint, " "); got != "/sender" || b.Image.User != oci.DefaultUser {
		t.Fatalf("image entrypoint %q user %q", got, b.Image.User)
	}
	return b
}

// counter receives on s until it has seen want sequence numbers or stop is
// closed and the socket stays idle, checking that each frame is intact,
// from src to dst, and later in sequence than the one before. Sequence
// numbers skipped are counted in missing: on a loaded machine the receiver
// can be off its CPU for longer than its ring lasts, and the kernel then
// drops frames, which the socket's counters must account for.
type counter struct {
	got, bytes uint64
	missing    uint64 // sequence numbers skipped
	err        error
	done       chan struct{}
}

func count(s *xsk.Socket, src, dst netip.Addr, want uint64, stop <-chan struct{}) *counter {
	c := &counter{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		descs := make([]xsk.Desc, 64)
		idle := time.Time{}
		for c.got+c.missing < want {
			n, err := s.Receive(descs)
			if err != nil {
				c.err = err
				return
			}
			if n == 0 {
				select {
				case <-stop:
					if idle.IsZero() {
						idle = time.Now()
					} else if time.Since(idle) > time.Second {
						return
					}
				default:
				}
				s.Wait(xsk.Readable, 10*time.Millisecond)
				continue
			}
			idle = time.Time{}
			for i := range descs[:n] {
				f := s.Frame(descs[i])
				p, err := packet.Parse(f)
				if err == nil && (p.SrcIP != src || p.DstIP != dst || len(f) != sendSize) {
					err = fmt.Errorf("%s -> %s, %d bytes", p.SrcIP, p.DstIP, len(f))
				}
				if err == nil {
					next := c.got + c.missing
					if seq, ok := packet.CheckPayload(p.Payload); !ok || seq < next || seq >= want {
						err = fmt.Errorf("sequence number %d, expected %d or later (intact: %v)", seq, next, ok)
					} else {
						c.missing += seq - next
					}
				}
				if err != nil {
					c.err = fmt.Errorf("frame %d: %w", c.got, err)
					return
				}
				c.got++
				c.bytes += uint64(len(f))
			}
			s.Release(descs[:n])
		}
	}()
	return c
}

// TestSenderImage runs the examples/sender image with runc, as its
// unprivileged user with only CAP_NET_RAW, in a network namespace that a
// CNI plugin wired, with the agent serving the container's eth0 and its
// socket directory bind-mounted at the default path. A receiver on the
// other side of the link counts and checks every frame. In the threaded
// case the receiving end's NAPI poll runs in a kernel thread, which falls
// behind the sender as a softirq deferred to ksoftirqd does on a busy
// machine, so that veth's own ring overflows and those drops are counted
// too.
func TestSenderImage(t *testing.T) {
	requireTools(t)
	b := buildImage(t)

	for _, tc := range []struct {
		name     string
		threaded bool
	}{{"ptp", false}, {"ptp_threaded", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NewNamedNetns(t, netenv.RandomName("afxe"))
			a, err := cni.Attach(context.Background(), cni.Config{Plugin: "ptp", NetnsPath: ns.Path()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := a.Close(); err != nil {
					t.Error(err)
				}
			})
			// The receiver is on the host end of the ptp veth, whose
			// address is the container's gateway; the container's eth0
			// is the other end.
			if tc.threaded {
				host := linkEndpoint(t, nil, a.HostIf)
				if err := app.SetVethThreadedNAPI(host, true); err != nil {
					t.Fatal(err)
				}
			}
			var recv *xsk.Socket
			openReceiver(t, &recv, a.HostIf, func(fn func() error) error { return fn() })
			runSender(t, b, ns, a, recv, a.Gateway, linkEndpoint(t, ns, a.IfName))
		})
	}

	t.Run("macvlan", func(t *testing.T) {
		ns := testenv.NewNamedNetns(t, netenv.RandomName("afxe"))
		subnet := netenv.RandomSubnet()
		// The master is a veth end here; its peer, in another namespace,
		// is the container's neighbour on the link and the receiver.
		v := testenv.NewVeth(t, &netenv.VethOptions{NoAddr: true})
		b4 := subnet.Addr().As4()
		b4[3] = 254
		peer := netip.AddrFrom4(b4)
		h := v.Peer.NS.Handle()
		l, err := h.LinkByName(v.Peer.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: peer.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Fatal(err)
		}
		a, err := cni.Attach(context.Background(), cni.Config{
			Plugin: "macvlan", Master: v.Host.Name, Subnet: subnet, NetnsPath: ns.Path(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := a.Close(); err != nil {
				t.Error(err)
			}
		})
		var recv *xsk.Socket
		openReceiver(t, &recv, v.Peer.Name, v.Peer.Do)
		// The macvlan sends through its master, v.Host.
		runSender(t, b, ns, a, recv, peer, v.Host)
	})
}

// linkEndpoint is the interface named name in ns (nil: this process's
// namespace), for reading its counters.
func linkEndpoint(t *testing.T, ns *netenv.Netns, name string) netenv.Endpoint {
	t.Helper()
	byName := netlink.LinkByName
	if ns != nil {
		byName = ns.Handle().LinkByName
	}
	l, err := byName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return netenv.Endpoint{Name: name, Index: l.Attrs().Index, NS: ns}
}

// openReceiver opens an AF_XDP socket, with its own program, on ifname
// inside the namespace that do enters.
func openReceiver(t *testing.T, s **xsk.Socket, ifname string, do func(func() error) error) {
	t.Helper()
	err := do(func() error {
		var err error
		*s, err = xsk.Open(ifname, 0, &xsk.Options{NumFrames: 4096, Filter: udpFilter})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := (*s).Close(); err != nil {
			t.Error(err)
		}
	})
}

// runSender serves the container's eth0 with an agent, runs the sender in
// the container towards dst and checks that recv got every frame, or that
// a counter says where it was dropped: recv's socket, or veth's ring in
// front of it. via is the veth end that transmits to recv's interface:
// when the receiving end's NAPI poll falls behind (deferred to ksoftirqd
// on a busy machine), veth drops what its 256-frame XDP ring has no room
// for and counts it in via's tx_dropped; those frames never reach the
// socket.
func runSender(t *testing.T, b *runc.Bundle, ns *netenv.Netns, a *cni.Attachment, recv *xsk.Socket, dst netip.Addr, via netenv.Endpoint) {
	t.Helper()
	dir := socketDir(t)
	srv, err := agent.NewServer(&agent.ServerOptions{
		Devices: []agent.Device{{Name: a.IfName, Netns: ns.Path(),
			Filter: bpf.Filter{EtherType: 0x0800, IPProto: unix.IPPROTO_UDP, DstPort: replyPort}}},
		SocketDir:   dir,
		AllowedUIDs: []int{imageUID},
		Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	err = b.WriteConfig(&runc.SpecOptions{
		Args: []string{"/sender", "-dev", a.IfName, "-dst", dst.String(), "-dst-port", strconv.Itoa(port),
			"-src-port", strconv.Itoa(replyPort), "-count", strconv.Itoa(sent), "-rate", strconv.Itoa(sendRate),
			"-size", strconv.Itoa(sendSize)},
		NetnsPath: ns.Path(),
		// The device plugin's layout: <dir>/<device>/afxdp.sock, here at
		// the sender's default path.
		Binds: []runc.Bind{{Source: filepath.Dir(srv.SocketPath(a.IfName)),
			Destination: filepath.Join(agent.DefaultSocketDir, a.IfName)}},
	})
	if err != nil {
		t.Fatal(err)
	}

	via0, err := pktgen.ReadCounters(via)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(stop) })
	c := count(recv, a.Addr.Addr(), dst, sent, stop)
	res, err := runc.Run(context.Background(), b.Dir, &runc.RunOptions{Timeout: 30 * time.Second})
	once.Do(func() { close(stop) })
	<-c.done
	if err != nil {
		t.Fatal(runFailure(res, err))
	}
	out := string(res.Stdout)
	t.Logf("sender in the container said:\n%s", out)
	if c.err != nil {
		t.Fatal(c.err)
	}
	// Every frame arrived, or the receiving socket or veth counted its
	// drop.
	st, err := recv.Stats()
	if err != nil {
		t.Fatal(err)
	}
	via1, err := pktgen.ReadCounters(via)
	if err != nil {
		t.Fatal(err)
	}
	overflow := via1.TxDropped - via0.TxDropped
	// Drops at the end of the stream leave no gap behind them, so they
	// show in the counters but not in missing.
	if dropped := st.RxDropped + st.RxRingFull + overflow; c.got+dropped != sent || c.missing > dropped {
		t.Fatalf("receiver got %d frames and saw %d missing; its socket dropped %d (rx_dropped %d, rx_ring_full %d) and veth's ring overflowed by %d (%s tx_dropped); want received and dropped to add up to the %d sent",
			c.got, c.missing, st.RxDropped+st.RxRingFull, st.RxDropped, st.RxRingFull, overflow, via.Name, sent)
	}
	if c.got < sent {
		t.Logf("the receiver fell behind: of %d frames, %d dropped by its socket and %d by veth's full ring, and counted",
			sent, st.RxDropped+st.RxRingFull, overflow)
	}
	for _, want := range []string{
		"socket registered by " + autoRegistration(t).String(),
		fmt.Sprintf("sent %d packets, %d bytes", sent, sent*sendSize),
		fmt.Sprintf("stats: tx_packets=%d tx_bytes=%d", sent, sent*sendSize),
		fmt.Sprintf("completed=%d", sent),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sender's output lacks %q", want)
		}
	}
	testenv.WaitFor(t, "the agent to drop the connection", func() bool { return srv.Conns() == 0 })
}

// runFailure describes a failed runc.Run: with the container's output when
// runc ran, and without it when Run returned no result (runc not found, a
// bad ID or timeout).
func runFailure(res *runc.Result, err error) string {
	if res == nil {
		return err.Error()
	}
	return fmt.Sprintf("%v\nstdout:\n%s\nstderr:\n%s", err, res.Stdout, res.Stderr)
}

// A run that never started has no result to print.
func TestRunFailureWithoutResult(t *testing.T) {
	err := errors.New("run container afxdp-x: find runc: not found")
	if got := runFailure(nil, err); got != err.Error() {
		t.Errorf("runFailure(nil, %v) = %q", err, got)
	}
	got := runFailure(&runc.Result{Stdout: []byte("out"), Stderr: []byte("err")}, err)
	if !strings.Contains(got, "stdout:\nout") || !strings.Contains(got, "stderr:\nerr") {
		t.Errorf("runFailure with a result = %q, want its output", got)
	}
}
