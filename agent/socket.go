package agent

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
	"github.com/afxdp/afxdp/xsk"
)

// Registration is how a socket gets into the agent's XSKMAP.
type Registration int

const (
	// RegisterAuto writes the socket into the map through the map fd the
	// agent sends, and falls back to RegisterAgent when the kernel refuses
	// the update (EPERM or EACCES: a kernel before 6.5 with
	// kernel.unprivileged_bpf_disabled set, or an agent that hands out
	// read-only map fds, see ServerOptions.ReadOnlyMap).
	RegisterAuto Registration = iota
	// RegisterMapFD only writes the map through the map fd (what DPDK's
	// AF_XDP driver does).
	RegisterMapFD
	// RegisterAgent only asks the agent to register the socket
	// (/xsk_register, an afxdp extension of the protocol).
	RegisterAgent
)

func (r Registration) String() string {
	switch r {
	case RegisterAuto:
		return "auto"
	case RegisterMapFD:
		return "map-fd"
	case RegisterAgent:
		return "agent"
	}
	return fmt.Sprintf("Registration(%d)", int(r))
}

// DefaultSocketFrames is the UMEM size, in frames, of a socket opened by
// [OpenSocket] when its options leave NumFrames unset: 2048 frames of 2048
// bytes, 4 MiB. A process without CAP_IPC_LOCK has its UMEM charged against
// RLIMIT_MEMLOCK, which containers commonly get at 8 MiB and cannot raise;
// xsk's own default (8 MiB) would not fit next to anything else locked.
const DefaultSocketFrames = 2048

// SocketOptions configures [OpenSocket]. A nil *SocketOptions means every
// default.
type SocketOptions struct {
	// XSK configures the AF_XDP socket. XSKMap and NoXDP must be unset:
	// OpenSocket sets them. Default: xsk's defaults, except NumFrames
	// DefaultSocketFrames.
	XSK *xsk.Options
	// Registration says how the socket enters the XSKMAP. Default
	// RegisterAuto.
	Registration Registration
}

// Socket is an AF_XDP socket whose XDP side belongs to an agent. It embeds
// the *xsk.Socket, so the receive and transmit calls are xsk's.
type Socket struct {
	*xsk.Socket

	reg       Registration
	xskmap    *ebpf.Map
	client    *Client
	ownClient bool
}

// Registration reports how the socket was registered: RegisterMapFD or
// RegisterAgent.
func (s *Socket) Registration() Registration { return s.reg }

// Client returns the agent connection the socket was opened through, or nil
// for a socket opened from a pinned map.
func (s *Socket) Client() *Client { return s.client }

// Close closes the AF_XDP socket (the kernel then drops its XSKMAP entry),
// the map and, for a socket from [DialSocket], the agent connection. A
// socket registered by the agent needs its connection until the socket is
// closed; the agent removes the entry when the connection ends. A second
// Close returns nil.
func (s *Socket) Close() error {
	var errs []error
	if s.Socket != nil {
		errs = append(errs, s.Socket.Close())
	}
	if s.xskmap != nil {
		errs = append(errs, sys.CloseObject(s.xskmap))
		s.xskmap = nil
	}
	if s.ownClient && s.client != nil {
		errs = append(errs, s.client.Close())
		s.ownClient = false
	}
	return errors.Join(errs...)
}

// OpenSocket opens an AF_XDP socket on queue of device through c, a client
// that has connected (Client.Connect), and loads no XDP program: it opens
// the socket with xsk.Options.NoXDP, asks for device's XSKMAP
// (/xsk_map_fd) and writes the socket into it at queue. When the kernel
// refuses that write and opts allow it (RegisterAuto), it hands the socket
// to the agent with /xsk_register instead. (The socket is opened once,
// before either: a UMEM's memory leaves RLIMIT_MEMLOCK only some time after
// its socket is closed, so opening a second one after a refusal could fail
// with ENOBUFS.) A registration made by the agent lasts as long as c's
// connection, however long it stays silent, so c must stay open while the
// socket is used; an entry written through the map fd lasts until the
// socket is closed.
//
// It must run in the network namespace of device (a container's own), with
// CAP_NET_RAW. The returned socket's Close does not close c.
func OpenSocket(c *Client, device string, queue int, opts *SocketOptions) (_ *Socket, err error) {
	var o SocketOptions
	if opts != nil {
		o = *opts
	}
	var xo xsk.Options
	if o.XSK != nil {
		xo = *o.XSK
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("open socket on %s queue %d through agent: %w", device, queue, err)
		}
	}()
	if xo.XSKMap != nil || xo.NoXDP {
		return nil, errors.New("XSK: XSKMap and NoXDP must be unset: the agent owns the XDP side")
	}
	if o.Registration < RegisterAuto || o.Registration > RegisterAgent {
		return nil, fmt.Errorf("Registration %d: unknown", int(o.Registration))
	}
	if c == nil {
		return nil, errors.New("no agent client")
	}
	if xo.NumFrames == 0 {
		xo.NumFrames = DefaultSocketFrames
	}
	xo.NoXDP = true
	sock, err := xsk.Open(device, queue, &xo)
	if err != nil {
		return nil, err
	}
	s := &Socket{Socket: sock, client: c}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	var mapErr error
	if o.Registration != RegisterAgent {
		if s.xskmap, err = c.XSKMap(device); err != nil {
			return nil, err
		}
		if s.xskmap.Type() != ebpf.XSKMap || uint32(queue) >= s.xskmap.MaxEntries() {
			return nil, fmt.Errorf("%s: the agent sent a %s of %d entries, want an XSKMap beyond queue %d",
				ReqXSKMapFD, s.xskmap.Type(), s.xskmap.MaxEntries(), queue)
		}
		mapErr = s.xskmap.Update(uint32(queue), uint32(sock.FD()), ebpf.UpdateAny)
		if mapErr == nil {
			s.reg = RegisterMapFD
			return s, nil
		}
		mapErr = fmt.Errorf("register in xskmap: %w", mapErr)
		if o.Registration == RegisterMapFD || !updateRefused(mapErr) {
			return nil, mapErr
		}
		sys.CloseObject(s.xskmap)
		s.xskmap = nil
	}
	if err := c.Register(device, queue, sock.FD()); err != nil {
		return nil, errors.Join(mapErr, err)
	}
	s.reg = RegisterAgent
	return s, nil
}

// updateRefused reports whether err is the kernel refusing a map update.
func updateRefused(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

// DialSocket connects to the agent's socket at path as pod and opens a
// socket on queue of device with [OpenSocket]. The returned socket owns the
// connection: its Close closes both. An empty pod means the host name (what
// the device plugin's clients send).
func DialSocket(path, pod, device string, queue int, opts *SocketOptions) (_ *Socket, err error) {
	if pod == "" {
		if pod, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("dial agent: pod name: %w", err)
		}
	}
	c, err := Dial(path)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(pod); err != nil {
		c.Close()
		return nil, fmt.Errorf("dial agent: %w", err)
	}
	s, err := OpenSocket(c, device, queue, opts)
	if err != nil {
		c.Close()
		return nil, err
	}
	s.ownClient = true
	return s, nil
}

// OpenPinned opens an AF_XDP socket on queue of device and writes it into
// the XSKMAP pinned at pinPath (an agent's <PinDir>/<device>/xsks_map, see
// ServerOptions.PinDir), with no agent connection and no program loading.
// Opening the pin needs read and write access to it, and the update is
// subject to the same kernel rules as RegisterMapFD. opts.XSKMap and
// opts.NoXDP must be unset; NumFrames defaults to DefaultSocketFrames.
func OpenPinned(pinPath, device string, queue int, opts *xsk.Options) (*Socket, error) {
	var xo xsk.Options
	if opts != nil {
		xo = *opts
	}
	fail := func(err error) (*Socket, error) {
		return nil, fmt.Errorf("open socket on %s queue %d with pinned map: %w", device, queue, err)
	}
	if xo.XSKMap != nil || xo.NoXDP {
		return fail(errors.New("XSKMap and NoXDP must be unset: the pinned map is used"))
	}
	if xo.NumFrames == 0 {
		xo.NumFrames = DefaultSocketFrames
	}
	m, err := ebpf.LoadPinnedMap(pinPath, nil)
	if err != nil {
		return fail(fmt.Errorf("pinned map %s: %w", pinPath, err))
	}
	xo.XSKMap = m
	sock, err := xsk.Open(device, queue, &xo)
	if err != nil {
		sys.CloseObject(m)
		return fail(err)
	}
	return &Socket{Socket: sock, reg: RegisterMapFD, xskmap: m}, nil
}
