package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/internal/sys"
)

// The few system calls the agent makes on sockets, kept together here.

// scmMaxFD is the most descriptors the kernel passes in one message
// (SCM_MAX_FD in include/net/scm.h).
const scmMaxFD = 253

// oobSize is the size of the control buffer for received messages: room
// for every descriptor a message can carry, and for the sender's
// credentials, which come too once drain has set SO_PASSCRED (Server.Close
// drains a connection while its goroutine may still read it). Every
// request takes at most one descriptor, but the kernel does not leave the
// ones that do not fit in the buffer to the receiver: it drops them as
// recvmsg returns, in the receiving thread, where a lingering socket among
// them would block that thread (see closeReceived). Received, each is
// closed by closeReceived.
var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4*scmMaxFD)

// message is one received datagram.
type message struct {
	data      []byte
	fds       []int // descriptors received with it; the receiver closes them
	truncated bool  // the datagram was longer than the buffer
	ctrunc    bool  // control data was cut: a descriptor could not be installed (EMFILE)
}

// closeFDs closes every descriptor the message carried (see
// closeReceived, which logs to log unless it is nil).
func (m *message) closeFDs(log *slog.Logger) {
	for _, fd := range m.fds {
		closeReceived(fd, log)
	}
	m.fds = nil
}

// closeReceived closes a descriptor that the peer sent, so that the close
// cannot block. When it is the last reference to a socket with SO_LINGER
// set, close(2) waits until the socket's unsent data is gone, up to the
// linger time: a peer could send a TCP socket that cannot send, lingering
// for hours, close its own copy and so stall the goroutine that closes it,
// and Server.Close after it. Lingering is turned off first (which fails
// harmlessly on a descriptor that is not a socket, and changes nothing for
// an AF_XDP socket); close then returns at once and the kernel finishes
// the TCP close by itself. (A peer that keeps a copy and sets SO_LINGER
// again between the two calls, then closes its copy, can still win that
// race.)
//
// A Unix socket can hold such a socket out of reach of that setsockopt:
// in flight (SCM_RIGHTS) in its receive queue, or, for a listening socket,
// in the queue of a connection not yet accepted; and the socket can hold
// another Unix socket that holds one, to any depth. Closing the last
// reference to a Unix socket drops what it holds in the closing thread,
// where a lingering socket blocks. So closeReceived empties a Unix socket
// before it closes it (see reaper); it does at most maxReapSteps steps,
// and leaves what is left then, a nest only a peer out to stall the agent
// builds, to a goroutine of its own that nobody waits for (logged to log
// unless it is nil).
func closeReceived(fd int, log *slog.Logger) {
	if h := testHookCloseReceived.Load(); h != nil {
		(*h)(fd)
	}
	if !isUnixSocket(fd) {
		closeNoLinger(fd)
		return
	}
	r := &reaper{park: [2]int{-1, -1}, cur: -1, held: []int{fd}, log: log}
	if r.run(maxReapSteps) {
		return
	}
	if log != nil {
		log.Warn("closing the descriptors nested in a received Unix socket in the background: too many to close at once", "steps", maxReapSteps)
	}
	reaping.Add(1)
	go func() {
		defer reaping.Done()
		if !r.run(maxReapBackground) {
			if log != nil {
				log.Warn("closing the descriptors nested in a received Unix socket as they are: too many to empty", "steps", maxReapBackground)
			}
			r.abandon()
		}
	}()
}

// testHookCloseReceived, when set, is called by closeReceived first: tests
// use it to make a close take as long as they need, since no descriptor a
// client sends does any longer.
var testHookCloseReceived atomic.Pointer[func(fd int)]

// reaping counts the reapers that closeReceived left running in the
// background. Nothing in the agent waits for them; tests do.
var reaping sync.WaitGroup

// Bounds of the work closeReceived does (messages read, connections
// accepted, descriptors closed): in its caller's goroutine, and in all.
// The kernel holds a finite number of messages, so the second is only a
// guard against reading one socket forever.
const (
	maxReapSteps      = 4096
	maxReapBackground = 1 << 24
)

// closeNoLinger turns lingering off on fd, if it is a socket, and closes it.
func closeNoLinger(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{})
	unix.Close(fd)
}

// isUnixSocket reports whether fd is an AF_UNIX socket.
func isUnixSocket(fd int) bool {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && dom == unix.AF_UNIX
}

// reaper closes received descriptors, emptying each Unix socket before it
// closes it: it shuts the socket for reading, so that nothing more can be
// queued in it (a peer's send fails with EPIPE, a connect with
// ECONNREFUSED), then reads every message queued and accepts every
// pending connection. The descriptors it finds that way are parked, in
// flight, in a socket pair of its own, rather than kept open, so that a
// wide nest costs no more open descriptors than a narrow one; it takes
// them back, a message at a time, once the socket it empties is closed.
// Only when the park is full does it hold them open.
type reaper struct {
	park      [2]int // datagram socket pair: [1] sends to [0]; -1 until needed
	cur       int    // the Unix socket being emptied, shut for reading, or -1
	listening bool   // cur is a listening socket
	stream    bool   // cur is a stream socket
	held      []int  // descriptors to close, taken out of the park or not parked
	buf       []byte // what is read, discarded
	oob       []byte
	log       *slog.Logger
}

// run closes every descriptor the reaper has, in at most steps steps. It
// reports whether it is done; when it is, it has closed its park too.
func (r *reaper) run(steps int) bool {
	for ; steps != 0; steps-- {
		switch {
		case r.cur >= 0:
			if !r.next() {
				unix.Close(r.cur)
				r.cur = -1
			}
		case len(r.held) > 0:
			fd := r.held[len(r.held)-1]
			r.held = r.held[:len(r.held)-1]
			if isUnixSocket(fd) {
				r.empty(fd)
			} else {
				closeNoLinger(fd)
			}
		case r.park[0] >= 0:
			if !r.unpark() {
				unix.Close(r.park[0])
				unix.Close(r.park[1])
				r.park = [2]int{-1, -1}
			}
		default:
			return true
		}
	}
	return false
}

// empty makes the Unix socket fd the one being emptied, and shuts it for
// reading.
func (r *reaper) empty(fd int) {
	r.cur = fd
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	r.listening = err == nil && acc != 0
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	r.stream = err == nil && typ == unix.SOCK_STREAM
	unix.Shutdown(fd, unix.SHUT_RD)
	if r.listening {
		return
	}
	// With the sender's credentials, every message comes with a control
	// message, even an empty datagram, which then does not read like the
	// end of a sequenced-packet socket (see drain). The peer may have set
	// options that add other control messages ahead of the descriptors:
	// those that do not fit then are dropped as recvmsg returns, in this
	// thread. Out-of-band data (on a stream) is read in line: read past,
	// it is dropped, descriptors and all.
	for _, o := range []struct{ opt, val int }{
		{unix.SO_PASSCRED, 1},
		{unix.SO_OOBINLINE, 1},
		{unix.SO_TIMESTAMP, 0}, // and SO_TIMESTAMPNS
		{unix.SO_TIMESTAMPING_OLD, 0},
		{unix.SO_TIMESTAMPING_NEW, 0},
		{unix.SO_PASSPIDFD, 0},
		{unix.SO_PASSSEC, 0},
	} {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.val)
	}
	r.buffers()
}

// buffers allocates the buffers the reaper reads into, once.
func (r *reaper) buffers() {
	if r.buf == nil {
		r.buf = make([]byte, 16<<10)
		r.oob = make([]byte, oobSize+512) // room for what could not be turned off
	}
}

// next takes one message, or one pending connection, out of the socket
// being emptied and parks the descriptors that came with it. It returns
// false when there is none left.
func (r *reaper) next() bool {
	if r.listening {
		fd, _, err := unix.Accept4(r.cur, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			r.stow([]int{fd})
			return true
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
			return true
		}
		return false // EAGAIN, or EINVAL once shut for reading
	}
	n, oobn, _, _, err := unix.Recvmsg(r.cur, r.buf, r.oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	var fds []int
	if oobn > 0 {
		fds = parseRights(r.oob[:oobn])
		r.stow(fds)
	}
	switch {
	case errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.EINTR):
		// A reset is reported once, ahead of what is still queued.
		return true
	case err != nil: // EAGAIN: empty
		return false
	case r.stream:
		// The end of a stream reads nothing but the credentials.
		return n > 0 || len(fds) > 0
	}
	// Nothing read is the end of a sequenced-packet socket; a datagram
	// socket reads EAGAIN at its end.
	return n > 0 || oobn > 0
}

// stow parks fds, or holds them when the park is full.
func (r *reaper) stow(fds []int) {
	if len(fds) == 0 {
		return
	}
	if r.park[0] < 0 {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			r.park = p
		}
	}
	if r.park[0] >= 0 && unix.Sendmsg(r.park[1], []byte{0}, unix.UnixRights(fds...), nil, unix.MSG_DONTWAIT) == nil {
		for _, fd := range fds {
			unix.Close(fd) // the parked copy holds it
		}
		return
	}
	r.held = append(r.held, fds...)
}

// abandon closes every descriptor the reaper has as it is, which may
// block: for what run could not finish.
func (r *reaper) abandon() {
	for _, fd := range append(r.held, r.cur, r.park[0], r.park[1]) {
		if fd >= 0 {
			closeNoLinger(fd)
		}
	}
	*r = reaper{park: [2]int{-1, -1}, cur: -1}
}

// unpark takes one message's descriptors out of the park, to close next.
// It returns false when the park is empty.
func (r *reaper) unpark() bool {
	r.buffers()
	n, oobn, _, _, err := unix.Recvmsg(r.park[0], r.buf[:1], r.oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if oobn > 0 {
		r.held = append(r.held, parseRights(r.oob[:oobn])...)
	}
	return err == nil && (n > 0 || oobn > 0) || errors.Is(err, unix.EINTR)
}

// readMessage reads one datagram into buf and oob. Descriptors are received
// with close-on-exec set (the net package passes MSG_CMSG_CLOEXEC).
func readMessage(c *net.UnixConn, buf, oob []byte, log *slog.Logger) (message, error) {
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	m := message{
		truncated: flags&unix.MSG_TRUNC != 0,
		ctrunc:    flags&unix.MSG_CTRUNC != 0,
	}
	if n > 0 {
		m.data = buf[:n]
	}
	if oobn > 0 {
		m.fds = parseRights(oob[:oobn])
	}
	if errors.Is(err, io.EOF) && n == 0 && !peerClosed(c) {
		// SOCK_SEQPACKET reads zero bytes both at the end of the stream
		// and for an empty datagram, and the net package calls both
		// io.EOF; only the first leaves the socket hung up.
		err = nil
	}
	if err != nil {
		m.closeFDs(log)
		return message{}, err
	}
	return m, nil
}

// peerClosed reports whether the peer of c has closed its end.
func peerClosed(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	closed := true
	rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(pfd, 0)
		closed = err != nil || n > 0 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
	})
	return closed
}

// parseRights returns every descriptor in SCM_RIGHTS control messages.
func parseRights(oob []byte) []int {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range cmsgs {
		if cmsgs[i].Header.Level != unix.SOL_SOCKET || cmsgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		r, err := unix.ParseUnixRights(&cmsgs[i])
		if err == nil {
			fds = append(fds, r...)
		}
	}
	return fds
}

// writeMessage sends msg, with fd attached when fd >= 0.
func writeMessage(c *net.UnixConn, msg string, fd int) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err := c.WriteMsgUnix([]byte(msg), oob, nil)
	return err
}

// maxDrain bounds the datagrams hangUp discards. The peer cannot queue
// more than its send buffer holds, a few hundred requests.
const maxDrain = 4096

// hangUp ends the connection so that the peer reads every answer sent
// before it, and so that closing it cannot block. Closing a Unix socket
// whose receive queue is not empty makes the peer's next read fail with
// ECONNRESET, ahead of the answers still queued for it, and drops the
// descriptors that came with what is queued in the closing thread, where
// a lingering socket among them blocks it (see closeReceived). So hangUp
// first shuts the socket for reading (the peer's later sends fail with
// EPIPE), discards what the peer had queued, closing the descriptors that
// came with it, and then closes the socket. Every path that closes a
// client's connection goes through it.
func hangUp(c *net.UnixConn, log *slog.Logger) error {
	c.CloseRead()
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { drain(int(fd), log) })
	}
	return c.Close()
}

// drain discards the datagrams queued on the socket fd, which is shut for
// reading, until it reads the end of the stream. A read at the end returns
// nothing, as an empty datagram does; so drain sets SO_PASSCRED first, and
// every datagram then comes with the sender's credentials: only the end
// comes with no data and no control message.
func drain(fd int, log *slog.Logger) {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	buf := make([]byte, 1) // the rest of a longer datagram is discarded
	oob := make([]byte, oobSize)
	for range maxDrain {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if oobn > 0 {
			for _, rfd := range parseRights(oob[:oobn]) {
				closeReceived(rfd, log)
			}
		}
		switch {
		case errors.Is(err, unix.ECONNRESET):
			// A reset (the peer closed with answers unread) is reported
			// once, ahead of what is still queued.
			continue
		case err != nil, n == 0 && oobn == 0:
			return
		}
	}
}

// peerCred returns the credentials the peer had when it connected.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("read peer credentials: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("read peer credentials: %w", os.NewSyscallError("getsockopt SO_PEERCRED", serr))
	}
	return cred, nil
}

// errNotXSK says a descriptor is not an AF_XDP socket.
var errNotXSK = errors.New("not an AF_XDP socket")

// checkXSK fails unless fd is an AF_XDP socket.
func checkXSK(fd int) error {
	dom, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_DOMAIN", err)
	}
	if dom != unix.AF_XDP {
		return fmt.Errorf("%w (address family %d)", errNotXSK, dom)
	}
	return nil
}

// setBusyPoll sets SO_PREFER_BUSY_POLL=1, SO_BUSY_POLL=timeout and
// SO_BUSY_POLL_BUDGET=budget on the socket fd. Values above the sysctls
// net.core.busy_poll and the default budget need CAP_NET_ADMIN, which is why
// a container asks the agent to do it.
func setBusyPoll(fd, timeout, budget int) error {
	opts := []struct {
		name string
		opt  int
		val  int
	}{
		{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1},
		{"SO_BUSY_POLL", unix.SO_BUSY_POLL, timeout},
		{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, budget},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.val); err != nil {
			return fmt.Errorf("set busy poll: %w", os.NewSyscallError("setsockopt "+o.name, err))
		}
	}
	return nil
}

// checkBound fails unless the AF_XDP socket fd is bound to queue of the
// interface ifindex, which lives in the network namespace netns ("" for
// the agent's).
//
// The kernel does not say where an AF_XDP socket is bound: getsockname
// fails with EOPNOTSUPP, and sock_diag needs CONFIG_XDP_SOCKETS_DIAG,
// which many kernels lack. bind(2) tells, though. checkBound binds a probe
// socket, with an RX ring and no fill or completion ring, to queue of
// ifindex with XDP_SHARED_UMEM on fd's UMEM. The kernel lets the probe
// share fd's buffer pool only if fd is bound to that very device and
// queue; it answers EBADF if fd is not bound at all, and EINVAL if fd is
// bound elsewhere (a UMEM shared across queues needs the probe's own fill
// and completion rings). The probe is in no XSKMAP, so it receives
// nothing, and it is closed at once.
func checkBound(netns string, ifindex, queue, fd int) error {
	var probe int
	err := inNetns(netns, func() error {
		var err error
		probe, err = sys.XSKSocket()
		return err
	})
	if err != nil {
		return fmt.Errorf("check socket binding: create probe: %w", err)
	}
	defer unix.Close(probe)
	if err := sys.SetRingSize(probe, unix.XDP_RX_RING, 1); err != nil {
		return fmt.Errorf("check socket binding: set up probe: %w", err)
	}
	err = sys.BindShared(probe, ifindex, queue, fd)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EBADF):
		return fmt.Errorf("check socket is bound to ifindex %d queue %d: %w: %w", ifindex, queue, errNotBound, err)
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("check socket is bound to ifindex %d queue %d: %w: %w", ifindex, queue, errBoundElsewhere, err)
	}
	return fmt.Errorf("check socket is bound to ifindex %d queue %d: %w", ifindex, queue, err)
}

// boundQueue returns the queue of the interface ifindex, in the network
// namespace netns ("" for the agent's), that the AF_XDP socket fd is bound
// to. It asks checkBound about each of the interface's queues in turn, with
// a new probe for each: an error wrapping errNotBound when fd is not bound,
// errBoundElsewhere when it is bound to none of them (another interface, or
// the same index in another namespace).
func boundQueue(netns string, ifindex, fd int) (int, error) {
	var q sys.LinkQueues
	err := inNetns(netns, func() error {
		var err error
		q, err = sys.QueryLinkQueues(ifindex)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("check socket binding: count the queues of ifindex %d: %w", ifindex, err)
	}
	n := max(q.RX, q.TX, 1)
	for queue := range n {
		err := checkBound(netns, ifindex, queue, fd)
		switch {
		case err == nil:
			return queue, nil
		case errors.Is(err, errNotBound):
			return 0, fmt.Errorf("check socket is bound to a queue of ifindex %d: %w", ifindex, errNotBound)
		case !errors.Is(err, errBoundElsewhere):
			return 0, err
		}
	}
	return 0, fmt.Errorf("check socket is bound to a queue of ifindex %d (0 to %d): %w", ifindex, n-1, errBoundElsewhere)
}

// Why checkBound refused a socket.
var (
	errNotBound       = errors.New("socket not bound")
	errBoundElsewhere = errors.New("socket bound to another interface or queue")
)
