package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/internal/sys"
)

// Defaults for ServerOptions.
const (
	// DefaultSocketDir is where the device plugin puts its sockets, and
	// where DPDK's AF_XDP driver looks for them (use_cni=1).
	DefaultSocketDir = "/tmp/afxdp_dp"
	// SocketName is the socket's file name inside <SocketDir>/<device>/.
	SocketName = "afxdp.sock"
	// PinName is the XSKMAP's file name inside <PinDir>/<device>/, the
	// name DPDK's AF_XDP driver opens with use_pinned_map=1.
	PinName = "xsks_map"
	// pinTmpName is where the XSKMAP is pinned before it is renamed
	// over PinName, in the same directory. bpffs refuses names with a
	// dot.
	pinTmpName = PinName + "_new"
	// DefaultIdleTimeout is how long a connection that holds no
	// registration may stay silent.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultWriteTimeout is how long an answer may wait for the client to
	// make room for it.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxMessageSize bounds a request, in bytes.
	DefaultMaxMessageSize = 256
	// DefaultMaxConns bounds the connections served at once.
	DefaultMaxConns = 256
	// maxMaxMessageSize bounds ServerOptions.MaxMessageSize.
	maxMaxMessageSize = 64 << 10
)

// Device is one network interface the agent serves.
type Device struct {
	// Name is the interface's name. Clients ask for the device by this
	// name, and its socket is <SocketDir>/<Name>/afxdp.sock.
	Name string

	// Netns is the path of the network namespace holding the interface
	// (/var/run/netns/NAME, /proc/PID/ns/net); empty means the agent's
	// own. The program is attached from inside it.
	Netns string

	// Mode is the XDP attach mode. Default bpf.AttachAuto.
	Mode bpf.AttachMode

	// Replace detaches another XDP program found on the interface.
	Replace bool

	// Filter selects the frames redirected to AF_XDP sockets; the rest go
	// to the kernel's stack. Default: every frame.
	Filter bpf.Filter

	// MaxQueues is the number of XSKMAP entries. Default 64.
	MaxQueues int
}

// ServerOptions configures [NewServer]. Every field but Devices has a
// default.
type ServerOptions struct {
	// Devices are the interfaces served; at least one.
	Devices []Device

	// SocketDir holds one directory per device with the socket in it.
	// Default /tmp/afxdp_dp. What is missing of it is created (mode
	// 0755), and removed again if NewServer fails. Since the agent
	// creates and chowns files in it as root, NewServer refuses a
	// SocketDir that is a symbolic link, or that belongs to another user
	// than root (or the agent's), or that group or others may write to;
	// the directories above it must belong to root and be writable by
	// nobody else unless sticky (as /tmp is). A
	// <SocketDir>/<device> left by an earlier run, or made before the
	// agent, is taken back and reused; a symbolic link there is refused.
	//
	// Close removes the sockets but keeps the directories, SocketDir and
	// each <SocketDir>/<device>, empty and with the owner and mode they
	// were served with: a pod reaches its socket through a bind mount of
	// its device's directory, and a mount holds the directory, not its
	// path, so that a directory removed and made again by the next start
	// would never be the pod's. For the same reason a pod started before
	// the agent needs the directory to be there: make it first (owned by
	// root, mode 0700, in a SocketDir as described above) and NewServer
	// takes it over.
	SocketDir string

	// AllowedUIDs are the user IDs that may use the sockets, checked with
	// SO_PEERCRED when a connection is accepted: another user is answered
	// /host_nak at once and hung up on. Default (empty): only root. Each
	// must be between 0 and 4294967294.
	AllowedUIDs []int

	// SocketGID, when not zero, is a group that owns each device's
	// directory and socket (modes 0750 and 0660, owner root): only its
	// members and root can open the socket. It admits nobody by itself:
	// of those, only the AllowedUIDs are served, and a member whose UID
	// is not among them is answered /host_nak. At most 4294967294.
	SocketGID int

	// IdleTimeout closes a connection silent for this long, unless it
	// holds a registration: a connection whose /xsk_register entries are
	// still in the XSKMAP is what keeps them, and lasts until the client
	// hangs up or sends /fin (or its socket goes, and the idle timeout
	// applies again). Default 30s; negative means never.
	IdleTimeout time.Duration

	// WriteTimeout closes a connection whose client leaves an answer
	// unread for this long (its receive queue full). Default 10s; it must
	// not be negative.
	WriteTimeout time.Duration

	// MaxMessageSize is the longest request accepted, in bytes; longer
	// ones are refused with /nak. Default 256; at most 65536.
	MaxMessageSize int

	// MaxConns bounds the connections served at once, over all devices:
	// one beyond it is closed as soon as it is accepted (the client reads
	// end of file, or a reset if it had sent something), so that clients
	// cannot take all of the agent's file descriptors. Default 256; it must not be negative.
	MaxConns int

	// PinDir, when set, pins each device's XSKMAP at
	// <PinDir>/<device>/xsks_map so that clients may open it by path. It
	// must be on a mounted bpffs (such as /sys/fs/bpf). Default: no pin.
	// What is missing of it is created (mode 0755), and removed again if
	// NewServer fails. As for SocketDir, the directories on the way must
	// belong to root (or the agent's user) and be writable by nobody else
	// unless sticky, and a symbolic link on the way must belong to root;
	// PinDir itself may be sticky and writable by all (the root of a bpffs
	// mounted without a mode is 1777), but <PinDir>/<device> must not be a
	// symbolic link, belong to another user or be writable by group or
	// others. Close removes the pins and keeps the directories, as it does
	// SocketDir's, for a pod that bind-mounts <PinDir>/<device>.
	PinDir string

	// ReadOnlyMap makes /xsk_map_fd send a read-only descriptor of the
	// XSKMAP. A client holding a writable one may put any socket at any
	// queue, or remove another client's; with a read-only one the kernel
	// refuses its updates (EPERM) and it must ask the agent with
	// /xsk_register. The agent registers only a socket bound to that queue
	// of the device, refuses a queue that another live connection holds,
	// and removes the entry when the connection ends. Clients using
	// OpenSocket with RegisterAuto fall back to that by themselves.
	// Default false: a writable descriptor, as the device plugin sends
	// (DPDK's AF_XDP driver needs it).
	ReadOnlyMap bool

	// ValidatePod decides whether a /connect's pod name is accepted, for
	// example by asking the kubelet which pods hold the device. Default:
	// every well-formed name. It may be called from several goroutines.
	ValidatePod func(pod string, peer PeerCred) bool

	// Logger receives the server's logs. Default: slog.Default().
	Logger *slog.Logger
}

// PeerCred is the connecting process as the kernel saw it (SO_PEERCRED).
type PeerCred struct {
	PID int
	UID int
	GID int
}

// Server is the privileged side: it owns each device's XDP program and
// XSKMAP and serves one SOCK_SEQPACKET socket per device, one goroutine per
// connection.
//
// Registrations made with /xsk_register belong to the connection that made
// them, which holds the queue while the entry is its socket and its client
// has not hung up: no other connection may register that queue meanwhile,
// and the idle timeout does not end the connection. The server removes the
// entry when the connection ends, by /fin, an error, the client's death or
// Close, before it discards what the client left queued, unless the entry
// is no longer that socket: the kernel drops an entry when its socket is
// released, and a client with a writable map fd may have replaced it.
// Entries written by a client itself through the map fd (/xsk_map_fd) are
// invisible to the server; they disappear when the client closes its
// socket or dies.
//
// A device whose interface goes away and comes back is served with a new
// program and a new, empty XSKMAP: see "When the agent or the interface
// goes" in the package documentation.
//
// Close stops the server. Its methods are safe for concurrent use.
type Server struct {
	opts    ServerOptions
	log     *slog.Logger
	devices map[string]*device

	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}
	wg     sync.WaitGroup

	// made lists the directories NewServer created, parents first: if it
	// fails, it removes them, and only them.
	made []string
}

// device is a served interface with its program and listener.
type device struct {
	Device
	ln       *net.UnixListener
	sockPath string
	pinPath  string

	// mu is held for reading while a request uses cur, and for writing
	// while cur is replaced (see Server.follow).
	mu  sync.RWMutex
	cur *incarnation // the program on the interface; not nil once set up

	noteMu   sync.Mutex
	unserved bool // Refresh found the device not served, and logged it

	served bool // NewServer set it up in full, and logged so
}

// NewServer loads and attaches a program on every device, then listens on
// <SocketDir>/<device>/afxdp.sock and serves in the background until Close.
//
// File permissions are a first fence; the UID check is the real one. Each
// device's directory and socket are made:
//   - with SocketGID set: group SocketGID, modes 0750 and 0660;
//   - else with exactly one allowed non-root UID: owned by it, 0700 and 0600;
//   - else with only root allowed: 0700 and 0600, owned by root;
//   - else (several UIDs, no group): 0755 and 0666, anyone may connect and
//     SO_PEERCRED alone refuses the users not allowed.
//
// The socket directory is checked first (see ServerOptions.SocketDir), and
// each device's directory stays root's alone until its socket has its
// owner and mode.
//
// A container reaches its socket through a bind mount of the device's
// directory (the device plugin mounts it at /tmp/afxdp.sock in the pod),
// which therefore outlives the server: see ServerOptions.SocketDir.
//
// A NewServer that fails undoes what it did: it detaches what it attached,
// removes its sockets and pins, and removes the directories it created
// (of SocketDir, PinDir and the devices'), but no directory that was there
// before it.
func NewServer(opts *ServerOptions) (_ *Server, err error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new agent server: %w", err)
	}
	s := &Server{
		opts:    o,
		log:     o.Logger,
		devices: make(map[string]*device),
		conns:   make(map[*conn]struct{}),
	}
	defer func() {
		if err != nil {
			s.close()
			s.unmake()
		}
	}()
	sdfd, err := openSocketDir(o.SocketDir, &s.made)
	if err != nil {
		return nil, fmt.Errorf("new agent server: %w", err)
	}
	defer unix.Close(sdfd)
	for _, dc := range o.Devices {
		d := &device{Device: dc}
		s.devices[dc.Name] = d
		if err := s.setupDevice(d, sdfd); err != nil {
			return nil, fmt.Errorf("new agent server: device %s: %w", dc.Name, err)
		}
	}
	for _, d := range s.devices {
		s.wg.Add(1)
		go s.accept(d)
	}
	s.made = nil // needed only if NewServer fails
	return s, nil
}

func (o *ServerOptions) withDefaults() (ServerOptions, error) {
	var r ServerOptions
	if o != nil {
		r = *o
	}
	if len(r.Devices) == 0 {
		return r, errors.New("Devices: at least one device is needed")
	}
	seen := map[string]bool{}
	for i, d := range r.Devices {
		if _, err := parseName("device", d.Name); err != nil || len(d.Name) >= unix.IFNAMSIZ {
			return r, fmt.Errorf("Devices[%d].Name %q: not an interface name", i, d.Name)
		}
		if seen[d.Name] {
			return r, fmt.Errorf("Devices[%d].Name %q: listed twice", i, d.Name)
		}
		seen[d.Name] = true
		if d.MaxQueues < 0 {
			return r, fmt.Errorf("Devices[%d].MaxQueues %d: must not be negative", i, d.MaxQueues)
		}
	}
	if r.SocketDir == "" {
		r.SocketDir = DefaultSocketDir
	}
	if len(r.AllowedUIDs) == 0 {
		r.AllowedUIDs = []int{0}
	}
	// IDs are 32 bits, and 4294967295 is (uid_t)-1, no user: a larger
	// value would be truncated into another user's or group's when the
	// socket is chowned. Compared as int64 so that this compiles where
	// int is 32 bits.
	for i, u := range r.AllowedUIDs {
		if u < 0 || int64(u) >= math.MaxUint32 {
			return r, fmt.Errorf("AllowedUIDs[%d] %d: must be between 0 and %d", i, u, uint32(math.MaxUint32-1))
		}
	}
	if r.SocketGID < 0 || int64(r.SocketGID) >= math.MaxUint32 {
		return r, fmt.Errorf("SocketGID %d: must be between 0 and %d", r.SocketGID, uint32(math.MaxUint32-1))
	}
	if r.IdleTimeout == 0 {
		r.IdleTimeout = DefaultIdleTimeout
	}
	switch {
	case r.WriteTimeout == 0:
		r.WriteTimeout = DefaultWriteTimeout
	case r.WriteTimeout < 0:
		return r, fmt.Errorf("WriteTimeout %v: must not be negative", r.WriteTimeout)
	}
	switch {
	case r.MaxMessageSize == 0:
		r.MaxMessageSize = DefaultMaxMessageSize
	case r.MaxMessageSize < len(ReqConfigBusyPoll) || r.MaxMessageSize > maxMaxMessageSize:
		return r, fmt.Errorf("MaxMessageSize %d: must be between %d and %d", r.MaxMessageSize, len(ReqConfigBusyPoll), maxMaxMessageSize)
	}
	switch {
	case r.MaxConns == 0:
		r.MaxConns = DefaultMaxConns
	case r.MaxConns < 0:
		return r, fmt.Errorf("MaxConns %d: must not be negative", r.MaxConns)
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	return r, nil
}

// setupDevice loads, attaches, pins and listens for one device, whose
// directory it makes in the socket directory open as sdfd.
func (s *Server) setupDevice(d *device, sdfd int) error {
	in, err := s.newIncarnation(d)
	if err != nil {
		return err
	}
	d.cur = in
	if s.opts.PinDir != "" {
		if err := d.pin(s.opts.PinDir, in, &s.made); err != nil {
			return err
		}
	}
	if err := s.listen(d, sdfd); err != nil {
		return err
	}
	s.log.Info("serving device", "device", d.Name, "ifindex", in.ifindex, "xdp_mode", in.att.Mode().String(),
		"filter", d.Filter.String(), "socket", d.sockPath, "pinned", d.pinPath)
	d.served = true
	return nil
}

// listen makes the device's directory and socket. The directory stays the
// agent's alone (root, 0700) until the socket in it has its owner and
// mode, and only then is handed to its owner: an allowed user who owns the
// directory cannot swap the socket for a symbolic link to something the
// agent would then chown. Nothing is changed through a path that could
// lead elsewhere: the directory is worked on through its descriptor, and
// the socket with calls that do not follow a symbolic link.
func (s *Server) listen(d *device, sdfd int) error {
	mode, sockMode, uid, gid := s.permissions()
	path := filepath.Join(s.opts.SocketDir, d.Name)
	dir, err := openDeviceDir(sdfd, d.Name, path, &s.made)
	if err != nil {
		return err
	}
	defer dir.Close()
	d.sockPath = filepath.Join(path, SocketName)
	// A socket file left by an agent that died is in the way.
	if err := dir.removeStale(SocketName); err != nil {
		return err
	}
	// The path leads where the descriptor does: every directory on it
	// belongs to root and is writable by nobody else (openSocketDir).
	d.ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: d.sockPath, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	d.ln.SetUnlinkOnClose(true)
	if err := dir.setEntry(SocketName, sockMode, uid, gid); err != nil {
		return err
	}
	return dir.handOver(mode, uid, gid)
}

// permissions returns the modes of a device's directory and socket and
// their owner; see NewServer.
func (s *Server) permissions() (dir, sock os.FileMode, uid, gid int) {
	nonRoot := slices.DeleteFunc(slices.Clone(s.opts.AllowedUIDs), func(u int) bool { return u == 0 })
	slices.Sort(nonRoot)
	nonRoot = slices.Compact(nonRoot)
	switch {
	case s.opts.SocketGID != 0:
		return 0o750, 0o660, 0, s.opts.SocketGID
	case len(nonRoot) == 0:
		return 0o700, 0o600, 0, 0
	case len(nonRoot) == 1:
		return 0o700, 0o600, nonRoot[0], 0
	default:
		return 0o755, 0o666, 0, 0
	}
}

// pin pins a clone of in's XSKMAP at <dir>/<device>/xsks_map, in place of
// the pin there (an earlier run's, or in's predecessor's). The
// directories are checked as the socket directory is (see
// ServerOptions.PinDir): another user must not be able to unlink or
// replace the pin, nor lead the agent to remove another's. The
// directories it creates are appended to made (if not nil).
func (d *device) pin(dir string, in *incarnation, made *[]string) error {
	pfd, err := openPinDir(dir, made)
	if err != nil {
		return fmt.Errorf("pin xskmap: %w", err)
	}
	defer unix.Close(pfd)
	pdir := filepath.Join(dir, d.Name)
	dfd, err := openPinDeviceDir(pfd, d.Name, pdir, made)
	if err != nil {
		return fmt.Errorf("pin xskmap: %w", err)
	}
	defer unix.Close(dfd)
	m, err := in.prog.XSKMap().Clone()
	if err != nil {
		return fmt.Errorf("pin xskmap: %w", err)
	}
	defer sys.CloseObject(m)
	path := filepath.Join(pdir, PinName)
	// The map is pinned at a temporary name first and renamed over the
	// pin there (one left by an agent that died, or the map of a program
	// that went with its interface), so that a client opening the path
	// meanwhile finds the old map or the new one, never nothing.
	tmp := filepath.Join(pdir, pinTmpName)
	// A temporary pin left by an agent that died half-way.
	if err := removeStaleAt(dfd, pinTmpName, tmp); err != nil {
		return fmt.Errorf("pin xskmap: %w", err)
	}
	// The path leads where dfd does: every directory on it belongs to
	// root and is writable by nobody else, or is sticky and not the last.
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin xskmap at %s: %w", tmp, err)
	}
	if err := renameAt(dfd, pinTmpName, PinName, path); err != nil {
		return errors.Join(fmt.Errorf("pin xskmap: %w", err), removeStaleAt(dfd, pinTmpName, tmp))
	}
	d.pinPath = path
	return nil
}

// inNetns runs fn inside the network namespace at path ("" = the current).
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	return sys.InNetnsPath(path, fn)
}

// SocketPath returns the socket of device, or "" if it is not served.
func (s *Server) SocketPath(device string) string {
	if d := s.devices[device]; d != nil {
		return d.sockPath
	}
	return ""
}

// PinPath returns where device's XSKMAP is pinned, or "".
func (s *Server) PinPath(device string) string {
	if d := s.devices[device]; d != nil {
		return d.pinPath
	}
	return ""
}

// Program returns device's XDP program, or nil. It belongs to the server.
// Once the interface has gone and one of the same name is back, the server
// serves it with a new program, and closes the one returned before.
func (s *Server) Program(device string) *bpf.Program {
	if d := s.devices[device]; d != nil {
		d.mu.RLock()
		defer d.mu.RUnlock()
		return d.cur.prog
	}
	return nil
}

// Conns returns the number of connections being served.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) accept(d *device) {
	defer s.wg.Done()
	for {
		c, err := d.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off rather than spin.
			s.log.Error("accept failed", "device", d.Name, "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		cn := &conn{s: s, d: d, c: c}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			hangUp(c, s.log)
			return
		}
		if len(s.conns) >= s.opts.MaxConns {
			s.mu.Unlock()
			hangUp(c, s.log)
			s.log.Warn("refused connection: too many", "device", d.Name, "max", s.opts.MaxConns)
			continue
		}
		s.conns[cn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go cn.serve()
	}
}

// Close stops accepting, ends every connection (removing the XSKMAP
// entries they registered), detaches and releases the programs, unpins the
// maps and removes the sockets. It keeps the directories: SocketDir, each
// <SocketDir>/<device> and <PinDir>/<device> stay, empty (see
// ServerOptions.SocketDir). A second Close returns nil.
func (s *Server) Close() error { return s.close() }

// close does the work of Close, and undoes what a NewServer that fails
// has set up, before unmake removes the directories it made.
func (s *Server) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	var errs []error
	for _, d := range s.devices {
		if d.ln != nil {
			if err := d.ln.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close listener of %s: %w", d.Name, err))
			}
			// The listener unlinks its socket and ignores a failure:
			// a directory a non-root user owns (one AllowedUIDs
			// entry) needs CAP_DAC_OVERRIDE for that.
			if _, err := os.Lstat(d.sockPath); err == nil {
				s.log.Warn("socket left behind: the next start removes it", "device", d.Name, "socket", d.sockPath)
			}
		}
	}
	for _, c := range conns {
		// Not Close: what the client has queued could block it.
		hangUp(c.c, s.log)
	}
	s.wg.Wait()
	for _, d := range s.devices {
		// The device's directories stay: a pod bind-mounts them, and a
		// mount holds the directory, not its path, so that one made
		// anew by the next start would never be the pod's.
		if d.pinPath != "" {
			if err := os.Remove(d.pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("unpin xskmap of %s: %w", d.Name, err))
			}
		}
		if d.cur != nil {
			if err := d.cur.close(); err != nil {
				errs = append(errs, fmt.Errorf("device %s: %w", d.Name, err))
			}
		}
		if d.served {
			s.log.Info("stopped serving device", "device", d.Name)
		}
	}
	return errors.Join(errs...)
}

// unmake removes the directories NewServer created, the last made first,
// once a failed NewServer has closed what it set up in them. A directory
// that is not empty (someone else put something there meanwhile) is left,
// with a warning.
func (s *Server) unmake() {
	for _, dir := range slices.Backward(s.made) {
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("directory left behind", "dir", dir, "err", err)
		}
	}
	s.made = nil
}

// conn is one client connection.
type conn struct {
	s    *Server
	d    *device
	c    *net.UnixConn
	peer PeerCred
	pod  string
	log  *slog.Logger
}

func (c *conn) serve() {
	defer c.s.wg.Done()
	defer func() {
		// The queues go first: hangUp may take a while closing the
		// descriptors the client left queued, and a client that
		// reconnects meanwhile must find them free.
		c.d.release(c)
		hangUp(c.c, c.log)
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	}()
	c.log = c.s.log.With("device", c.d.Name)
	// The peer is checked before anything is read: one that is refused
	// costs the server one answer, whatever it sends and however slowly.
	cred, err := peerCred(c.c)
	if err == nil {
		c.peer = PeerCred{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}
		c.log = c.log.With("pid", c.peer.PID, "uid", c.peer.UID)
		if !slices.Contains(c.s.opts.AllowedUIDs, c.peer.UID) {
			err = errors.New("uid not allowed")
		}
	}
	if err != nil {
		c.log.Warn("refused peer", "err", err)
		if err := c.write(RespHostNak, -1); err != nil {
			c.log.Info("write failed", "response", RespHostNak, "err", err)
		}
		return
	}

	buf := make([]byte, c.s.opts.MaxMessageSize+1)
	oob := make([]byte, oobSize)
	connected := false
	for {
		if c.s.opts.IdleTimeout > 0 {
			c.c.SetReadDeadline(time.Now().Add(c.s.opts.IdleTimeout))
		}
		m, err := readMessage(c.c, buf, oob, c.log)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if c.d.holding(c) {
				continue // the connection is what keeps the registrations
			}
			c.log.Info("closing idle connection", "idle_timeout", c.s.opts.IdleTimeout)
			return
		}
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				c.log.Info("connection ended", "err", err)
			}
			return
		}
		resp, fd, keep := c.handle(&m, &connected)
		m.closeFDs(c.log)
		err = c.write(resp, fd)
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil {
			c.log.Info("write failed", "response", resp, "err", err)
			return
		}
		if !keep {
			return
		}
	}
}

// write sends one answer, giving up after WriteTimeout.
func (c *conn) write(resp string, fd int) error {
	c.c.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout))
	return writeMessage(c.c, resp, fd)
}

// handle answers one message: the response, a descriptor to send with it
// (or -1), and whether to keep the connection. It never closes m's fds.
// The descriptor is the caller's to close once sent: a duplicate, so that
// the server may replace the device's map meanwhile (see Server.follow)
// without the number coming to name another file.
func (c *conn) handle(m *message, connected *bool) (resp string, fd int, keep bool) {
	fd = -1
	// The buffer has room for one byte more than MaxMessageSize, so
	// that a request of that one byte too many is not taken for a whole
	// one; MSG_TRUNC tells only of longer ones.
	if m.truncated || len(m.data) > c.s.opts.MaxMessageSize {
		c.log.Warn("refused request: too long", "max", c.s.opts.MaxMessageSize)
		return RespNak, fd, *connected
	}
	if m.ctrunc {
		c.log.Warn("refused request: descriptors lost: the agent has no room for them (RLIMIT_NOFILE)")
		return RespNak, fd, *connected
	}
	req, perr := ParseRequest(m.data)

	if !*connected {
		// The plugin insists on /connect first; it closes silently on
		// anything else, we answer /nak and close.
		if req.Op != OpConnect {
			c.log.Warn("refused request before /connect", "request", clip(string(m.data)))
			return RespNak, fd, false
		}
		if perr != nil || len(m.fds) != 0 {
			c.log.Warn("refused /connect", "err", perr, "fds", len(m.fds))
			return RespHostNak, fd, false
		}
		if v := c.s.opts.ValidatePod; v != nil && !v(req.Pod, c.peer) {
			c.log.Warn("refused pod", "pod", req.Pod)
			return RespHostNak, fd, false
		}
		c.pod = req.Pod
		c.log = c.log.With("pod", req.Pod)
		c.log.Info("client connected")
		*connected = true
		return RespHostOK, fd, true
	}

	if perr != nil {
		c.log.Warn("bad request", "err", perr)
		switch {
		case req.Op == OpConfigBusyPoll && len(m.fds) != 1:
			return RespBusyPollNak, fd, true
		case req.Op == OpXSKRegister && len(m.fds) != 1:
			return RespXSKRegisterNak, fd, true
		}
		return RespNak, fd, true
	}
	if !req.Op.WantsFD() && len(m.fds) != 0 {
		c.log.Warn("refused request: unexpected descriptor", "request", req.Op.String())
		return RespNak, fd, true
	}
	switch req.Op {
	case OpVersion:
		return ProtocolVersion, fd, true
	case OpConnect:
		return RespNak, fd, true // already connected
	case OpFin:
		// The registrations go before the answer, so that a client
		// that has read /fin_ack finds its entries out of the map and
		// its queues free for the next connection.
		c.d.release(c)
		c.log.Info("client finished")
		return RespFinAck, fd, false
	case OpXSKMapFD:
		if req.Device != c.d.Name {
			c.log.Warn("refused map fd: device not served on this socket", "asked", req.Device)
			return RespFDNak, fd, true
		}
		readOnly := false
		err := c.s.use(c.d, func(in *incarnation) error {
			src := in.prog.XSKMap().FD()
			if readOnly = in.roFD >= 0; readOnly {
				src = in.roFD
			}
			var err error
			fd, err = unix.FcntlInt(uintptr(src), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				fd = -1
				return fmt.Errorf("duplicate xskmap fd: %w", os.NewSyscallError("fcntl", err))
			}
			return nil
		})
		if err != nil {
			c.log.Error("refused map fd", "err", err)
			return RespFDNak, fd, true
		}
		if readOnly {
			c.log.Info("sending read-only xskmap fd")
		} else {
			c.log.Info("sending xskmap fd")
		}
		return RespFDAck, fd, true
	case OpConfigBusyPoll:
		if len(m.fds) != 1 {
			c.log.Warn("refused busy poll: need exactly one descriptor", "fds", len(m.fds))
			return RespBusyPollNak, fd, true
		}
		queue, err := c.checkBusyPoll(m.fds[0])
		if err != nil {
			c.log.Warn("refused busy poll: the socket must be bound to a queue of this device", "err", err)
			return RespBusyPollNak, fd, true
		}
		if err := setBusyPoll(m.fds[0], req.Timeout, req.Budget); err != nil {
			c.log.Warn("busy poll failed", "queue", queue, "err", err)
			return RespBusyPollNak, fd, true
		}
		c.log.Info("configured busy poll", "queue", queue, "timeout_us", req.Timeout, "budget", req.Budget)
		return RespBusyPollAck, fd, true
	case OpXSKRegister:
		if err := c.register(req, m.fds); err != nil {
			c.log.Warn("refused register", "queue", req.Queue, "err", err)
			return RespXSKRegisterNak, fd, true
		}
		c.log.Info("registered socket", "queue", req.Queue)
		return RespXSKRegisterAck, fd, true
	}
	return RespError, fd, true // unreachable: every Op is handled
}

// checkBusyPoll fails unless fd is an AF_XDP socket bound to a queue of
// this connection's device, and returns the queue. The options need the
// agent's CAP_NET_ADMIN: it sets them on the sockets of the device it
// serves, not on any socket a client holds. That the program is still
// attached proves the interface at the index is this device's.
func (c *conn) checkBusyPoll(fd int) (queue int, err error) {
	if err := checkXSK(fd); err != nil {
		return 0, err
	}
	err = c.s.use(c.d, func(in *incarnation) error {
		queue, err = boundQueue(c.d.Netns, in.ifindex, fd)
		return err
	})
	return queue, err
}

// register puts the client's socket into the XSKMAP at req.Queue. The
// socket must be bound to that queue of this device, and no other
// connection may hold the queue.
func (c *conn) register(req Request, fds []int) error {
	if len(fds) != 1 {
		return fmt.Errorf("need exactly one descriptor, got %d", len(fds))
	}
	if req.Device != c.d.Name {
		return fmt.Errorf("device %s is not served on this socket", req.Device)
	}
	if err := checkXSK(fds[0]); err != nil {
		return err
	}
	return c.s.use(c.d, func(in *incarnation) error {
		if req.Queue >= in.prog.MaxQueues() {
			return fmt.Errorf("queue %d: out of range: the XSKMAP holds queues 0 to %d", req.Queue, in.prog.MaxQueues()-1)
		}
		if err := checkBound(c.d.Netns, in.ifindex, req.Queue, fds[0]); err != nil {
			return err
		}
		return in.reg.register(c, req.Queue, fds[0])
	})
}

// release forgets c's registrations and removes those it still holds from
// the XSKMAP. Registrations made in an incarnation that has since been
// replaced went with it.
func (d *device) release(c *conn) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	d.cur.reg.release(c)
}

// holding reports whether c holds a queue of the device's XSKMAP.
func (d *device) holding(c *conn) bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cur.reg.holding(c)
}

// xskMap is here so that the package's tests can reach a device's map.
func (s *Server) xskMap(device string) *ebpf.Map { return s.Program(device).XSKMap() }
