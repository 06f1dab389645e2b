package agent

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Sentinels that a *ResponseError matches with errors.Is.
var (
	// ErrRefused: the server answered /host_nak (UID not allowed, pod
	// not valid) and closed the connection.
	ErrRefused = errors.New("refused by agent")
	// ErrRejected: the server refused the request (/nak or the request's
	// own *_nak).
	ErrRejected = errors.New("request rejected by agent")
	// ErrServerFault: the server answered /error.
	ErrServerFault = errors.New("agent failed")
)

// ResponseError is an answer other than the one a request hoped for.
type ResponseError struct {
	Request  string // the request's command, such as "/xsk_map_fd"
	Response string // what the server answered
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("%s: agent answered %q", e.Request, clip(e.Response))
}

// Unwrap returns ErrRefused, ErrServerFault or ErrRejected.
func (e *ResponseError) Unwrap() error {
	switch e.Response {
	case RespHostNak:
		return ErrRefused
	case RespError:
		return ErrServerFault
	}
	return ErrRejected
}

// Client is the unprivileged side of the protocol. Each method sends one
// request and waits for its answer; methods may be called from several
// goroutines, one request at a time on the wire.
//
// A request whose send or receive fails (a timeout, say) leaves the
// connection out of step: its answer may still come, and would be read as
// the answer to the next request. So the Client is broken from then on:
// every later request fails with an error that matches net.ErrClosed (and
// the first failure). The connection stays open until Close, since the
// agent keeps the registrations made through it as long as it is open.
type Client struct {
	mu      sync.Mutex
	c       *net.UnixConn
	timeout time.Duration
	closed  bool
	broken  error // the failure that broke the connection, or nil
}

// DefaultClientTimeout bounds each request's round trip.
const DefaultClientTimeout = 10 * time.Second

// Dial connects to the agent's socket at path (for example
// /tmp/afxdp_dp/eth0/afxdp.sock). The next call must be Connect.
func Dial(path string) (*Client, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("dial agent: %w", err)
	}
	return &Client{c: c, timeout: DefaultClientTimeout}, nil
}

// SetTimeout sets how long each request may take; zero or negative means
// no limit.
func (c *Client) SetTimeout(d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
}

// roundTrip sends req (with fd attached if fd >= 0) and returns the answer
// and the descriptor that came with it, or -1. The caller owns that
// descriptor.
func (c *Client) roundTrip(req Request, fd int) (string, int, error) {
	msg, err := req.Encode()
	if err != nil {
		return "", -1, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", -1, fmt.Errorf("%s: %w", req.Op, net.ErrClosed)
	}
	if c.broken != nil {
		return "", -1, fmt.Errorf("%s: %w: connection out of step after an earlier failure: %w", req.Op, net.ErrClosed, c.broken)
	}
	if c.timeout > 0 {
		c.c.SetDeadline(time.Now().Add(c.timeout))
	} else {
		c.c.SetDeadline(time.Time{})
	}
	buf := make([]byte, 512)
	oob := make([]byte, oobSize)
	if err := writeMessage(c.c, string(msg), fd); err != nil {
		c.broken = fmt.Errorf("%s: send: %w", req.Op, err)
		// An agent that refuses the peer answers /host_nak as soon as it
		// accepts the connection and hangs up, so the request may find
		// the connection shut: read what the agent said.
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			if m, rerr := readMessage(c.c, buf, oob, nil); rerr == nil {
				m.closeFDs(nil)
				if string(m.data) == RespHostNak {
					return RespHostNak, -1, nil
				}
			}
		}
		return "", -1, c.broken
	}
	m, err := readMessage(c.c, buf, oob, nil)
	if err != nil {
		c.broken = fmt.Errorf("%s: receive: %w", req.Op, err)
		return "", -1, c.broken
	}
	rfd := -1
	if len(m.fds) > 0 {
		rfd = m.fds[0]
		m.fds = m.fds[1:]
	}
	m.closeFDs(nil) // any beyond the first
	return string(m.data), rfd, nil
}

// expect runs a request that carries no descriptor back and wants ok.
func (c *Client) expect(req Request, fd int, ok string) error {
	resp, rfd, err := c.roundTrip(req, fd)
	if rfd >= 0 {
		unix.Close(rfd)
	}
	if err != nil {
		return err
	}
	if resp != ok {
		return &ResponseError{Request: req.Op.String(), Response: resp}
	}
	return nil
}

// Connect opens the session for pod (the plugin's clients send the pod's
// host name). A refusal matches ErrRefused; the server then closes the
// connection.
func (c *Client) Connect(pod string) error {
	return c.expect(Request{Op: OpConnect, Pod: pod}, -1, RespHostOK)
}

// Version returns the server's protocol version, "0.1".
func (c *Client) Version() (string, error) {
	resp, rfd, err := c.roundTrip(Request{Op: OpVersion}, -1)
	if rfd >= 0 {
		unix.Close(rfd)
	}
	if err != nil {
		return "", err
	}
	switch resp {
	case RespNak, RespError, RespHostNak:
		return "", &ResponseError{Request: ReqVersion, Response: resp}
	}
	return resp, nil
}

// XSKMapFD asks for device's XSKMAP and returns its descriptor, which the
// caller owns and closes. The caller may put its own AF_XDP socket into the
// map (key: queue index, value: socket fd) where the kernel lets an
// unprivileged process update a map it was given (Linux 6.5 and later, even
// with kernel.unprivileged_bpf_disabled set); otherwise it uses Register.
func (c *Client) XSKMapFD(device string) (int, error) {
	resp, rfd, err := c.roundTrip(Request{Op: OpXSKMapFD, Device: device}, -1)
	if err != nil {
		return -1, err
	}
	if resp != RespFDAck || rfd < 0 {
		if rfd >= 0 {
			unix.Close(rfd)
		}
		err := error(&ResponseError{Request: ReqXSKMapFD, Response: resp})
		if resp == RespFDNak {
			// The protocol does not say why; these are the reasons.
			err = fmt.Errorf("device %s: %w (an agent socket serves one device, and only while the agent's program is attached to it)", device, err)
		}
		return -1, err
	}
	return rfd, nil
}

// XSKMap is XSKMapFD wrapped in an *ebpf.Map, which the caller closes.
func (c *Client) XSKMap(device string) (*ebpf.Map, error) {
	fd, err := c.XSKMapFD(device)
	if err != nil {
		return nil, err
	}
	m, err := ebpf.NewMapFromFD(fd) // takes fd, closes it on failure
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ReqXSKMapFD, err)
	}
	return m, nil
}

// ConfigBusyPoll asks the agent to set SO_PREFER_BUSY_POLL, SO_BUSY_POLL
// (timeout, microseconds) and SO_BUSY_POLL_BUDGET (budget, packets) on the
// AF_XDP socket sockFD, which must be bound to a queue of the device
// served on this connection's socket (the agent refuses any other with
// ErrRejected). The descriptor is passed, not consumed.
func (c *Client) ConfigBusyPoll(sockFD, timeout, budget int) error {
	if sockFD < 0 {
		return fmt.Errorf("%s: invalid socket fd %d", ReqConfigBusyPoll, sockFD)
	}
	return c.expect(Request{Op: OpConfigBusyPoll, Timeout: timeout, Budget: budget}, sockFD, RespBusyPollAck)
}

// Register asks the agent to put the AF_XDP socket sockFD, bound to queue
// of device, into the XSKMAP (an afxdp extension of the protocol, for
// kernels that refuse the map update from an unprivileged process). The
// agent refuses a socket that is not bound to that queue of device, and a
// queue that another connection holds. The registration lasts until this
// Client is closed or its connection ends some other way, however long
// the connection stays silent; the kernel also drops it when the socket
// is closed.
func (c *Client) Register(device string, queue, sockFD int) error {
	if sockFD < 0 {
		return fmt.Errorf("%s: invalid socket fd %d", ReqXSKRegister, sockFD)
	}
	return c.expect(Request{Op: OpXSKRegister, Device: device, Queue: queue}, sockFD, RespXSKRegisterAck)
}

// Close sends /fin, waits for /fin_ack and closes the connection. The
// agent removes the registrations made through this Client before it
// answers, so they are gone when Close has read /fin_ack. A server
// that already hung up (after a refusal, say) is not an error; an answer
// other than /fin_ack is. A broken Client (see Client) sends nothing and
// only closes the connection, the failure having been reported by the
// call that met it. A second Close returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	closed, broken := c.closed, c.broken != nil
	c.mu.Unlock()
	if closed {
		return nil
	}
	var err error
	if !broken {
		err = c.expect(Request{Op: OpFin}, -1, RespFinAck)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	var re *ResponseError
	if errors.As(err, &re) && !errors.Is(err, ErrRefused) {
		errs = append(errs, err)
	}
	if cerr := c.c.Close(); cerr != nil {
		errs = append(errs, cerr)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close agent connection: %w", err)
	}
	return nil
}
