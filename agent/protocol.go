package agent

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Protocol strings. The requests and responses up to RespError are those of
// the AF_XDP device plugin for Kubernetes (handshake version 0.1); the
// /xsk_register request and its two responses are an afxdp extension.
const (
	// ProtocolVersion is what the server answers to /version.
	ProtocolVersion = "0.1"

	ReqVersion = "/version"

	ReqConnect  = "/connect"  // "/connect, <pod name>"
	RespHostOK  = "/host_ok"  // the pod is known; the session is open
	RespHostNak = "/host_nak" // refused; the server closes the connection

	ReqXSKMapFD = "/xsk_map_fd" // "/xsk_map_fd, <device>"
	RespFDAck   = "/fd_ack"     // carries the XSKMAP fd (SCM_RIGHTS)
	RespFDNak   = "/fd_nak"     // unknown device; no fd

	ReqConfigBusyPoll = "/config_busy_poll" // "/config_busy_poll, <timeout>, <budget>" + socket fd
	RespBusyPollAck   = "/config_busy_poll_ack"
	RespBusyPollNak   = "/config_busy_poll_nak"

	ReqFin     = "/fin"
	RespFinAck = "/fin_ack" // the server closes the connection after it

	RespNak   = "/nak"   // malformed, unknown or out-of-order request
	RespError = "/error" // the server failed

	ReqXSKRegister     = "/xsk_register" // afxdp extension: "/xsk_register, <device>, <queue>" + socket fd
	RespXSKRegisterAck = "/xsk_register_ack"
	RespXSKRegisterNak = "/xsk_register_nak"
)

const (
	argSeparator        = ","  // what ParseRequest splits on
	encodedArgSeparator = ", " // what Encode writes
)

// Op is the kind of a request.
type Op int

// Requests a client may send.
const (
	OpUnknown        Op = iota
	OpConnect           // /connect, <pod>
	OpVersion           // /version
	OpXSKMapFD          // /xsk_map_fd, <device>
	OpConfigBusyPoll    // /config_busy_poll, <timeout>, <budget> (fd attached)
	OpFin               // /fin
	OpXSKRegister       // /xsk_register, <device>, <queue> (fd attached; afxdp extension)
)

var opNames = [...]string{
	OpUnknown:        "",
	OpConnect:        ReqConnect,
	OpVersion:        ReqVersion,
	OpXSKMapFD:       ReqXSKMapFD,
	OpConfigBusyPoll: ReqConfigBusyPoll,
	OpFin:            ReqFin,
	OpXSKRegister:    ReqXSKRegister,
}

// nargs is the number of arguments each request takes.
var nargs = [...]int{
	OpConnect:        1,
	OpVersion:        0,
	OpXSKMapFD:       1,
	OpConfigBusyPoll: 2,
	OpFin:            0,
	OpXSKRegister:    2,
}

// String returns the request's command, such as "/connect".
func (o Op) String() string {
	if o > OpUnknown && int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// WantsFD reports whether the request carries a file descriptor.
func (o Op) WantsFD() bool { return o == OpConfigBusyPoll || o == OpXSKRegister }

// Request is one decoded request. Only the fields of its Op are set.
type Request struct {
	Op      Op
	Pod     string // OpConnect
	Device  string // OpXSKMapFD, OpXSKRegister
	Timeout int    // OpConfigBusyPoll: SO_BUSY_POLL, microseconds
	Budget  int    // OpConfigBusyPoll: SO_BUSY_POLL_BUDGET, packets
	Queue   int    // OpXSKRegister: receive queue index
}

// Limits on arguments.
const (
	// MaxNameLen bounds pod and device names. A pod name is a host name
	// (RFC 1123 label, 63 bytes); a device name is an interface name.
	MaxNameLen = 63
	// MaxBusyPollTimeout is the largest SO_BUSY_POLL accepted, in
	// microseconds (one second).
	MaxBusyPollTimeout = 1_000_000
	// MaxBusyPollBudget is the largest SO_BUSY_POLL_BUDGET the kernel takes.
	MaxBusyPollBudget = 65535
	// MaxQueue is the largest queue index accepted in a request.
	MaxQueue = 4095
)

// ErrBadRequest is what a malformed request's error matches with errors.Is.
var ErrBadRequest = errors.New("bad request")

// ParseRequest decodes one request message.
//
// The wire format is the device plugin's: the command, then its arguments,
// separated by commas. Spaces around the separators are ignored, so both
// "/connect, pod" (the plugin's Go client) and "/connect,pod" (DPDK's AF_XDP
// driver) are accepted; trailing NUL bytes, which C clients may send, are
// ignored too. Names may hold letters, digits, '-', '_' and '.'.
//
// On error the returned Request still has its Op set when the command was
// recognised, so that a server can answer with the command's own refusal;
// the error wraps ErrBadRequest.
func ParseRequest(msg []byte) (Request, error) {
	s := strings.TrimRight(string(msg), "\x00")
	fields := strings.Split(s, argSeparator)
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	req := Request{Op: lookupOp(fields[0])}
	if req.Op == OpUnknown {
		return Request{}, fmt.Errorf("%w: unknown command %q", ErrBadRequest, clip(fields[0]))
	}
	args := fields[1:]
	if len(args) != nargs[req.Op] {
		return req, fmt.Errorf("%w: %s takes %d argument(s), got %d", ErrBadRequest, req.Op, nargs[req.Op], len(args))
	}
	var err error
	switch req.Op {
	case OpConnect:
		req.Pod, err = parseName("pod name", args[0])
	case OpXSKMapFD:
		req.Device, err = parseName("device", args[0])
	case OpConfigBusyPoll:
		req.Timeout, err = parseInt("timeout", args[0], MaxBusyPollTimeout)
		if err == nil {
			req.Budget, err = parseInt("budget", args[1], MaxBusyPollBudget)
		}
	case OpXSKRegister:
		req.Device, err = parseName("device", args[0])
		if err == nil {
			req.Queue, err = parseInt("queue", args[1], MaxQueue)
		}
	}
	if err != nil {
		return req, fmt.Errorf("%w: %s: %w", ErrBadRequest, req.Op, err)
	}
	return req, nil
}

func lookupOp(cmd string) Op {
	for op, name := range opNames {
		if op != int(OpUnknown) && name == cmd {
			return Op(op)
		}
	}
	return OpUnknown
}

// Encode returns the request in the wire format, with ", " between fields
// as the device plugin's Go client writes it. It fails on values that
// ParseRequest would refuse.
func (r Request) Encode() ([]byte, error) {
	var args []string
	want := Request{Op: r.Op} // the fields of r.Op, what the server must read
	switch r.Op {
	case OpConnect:
		args = []string{r.Pod}
		want.Pod = r.Pod
	case OpVersion, OpFin:
	case OpXSKMapFD:
		args = []string{r.Device}
		want.Device = r.Device
	case OpConfigBusyPoll:
		args = []string{strconv.Itoa(r.Timeout), strconv.Itoa(r.Budget)}
		want.Timeout, want.Budget = r.Timeout, r.Budget
	case OpXSKRegister:
		args = []string{r.Device, strconv.Itoa(r.Queue)}
		want.Device, want.Queue = r.Device, r.Queue
	default:
		return nil, fmt.Errorf("encode request: unknown op %d", int(r.Op))
	}
	b := []byte(r.Op.String())
	for _, a := range args {
		b = append(b, encodedArgSeparator...)
		b = append(b, a...)
	}
	back, err := ParseRequest(b)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if back != want {
		// ParseRequest trims spaces and NULs: a name with them would
		// reach the server as another.
		return nil, fmt.Errorf("encode request: %w: %s: an argument has spaces or NUL bytes around it", ErrBadRequest, r.Op)
	}
	return b, nil
}

func parseName(what, s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty %s", what)
	}
	if len(s) > MaxNameLen {
		return "", fmt.Errorf("%s of %d bytes: longer than %d", what, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", fmt.Errorf("%s %q: byte %#02x not allowed", what, clip(s), c)
		}
	}
	if s == "." || s == ".." {
		return "", fmt.Errorf("%s %q not allowed", what, s)
	}
	return s, nil
}

func parseInt(what, s string, max int) (int, error) {
	// Digits only: no sign, no spaces inside, no base prefixes.
	if s == "" || len(s) > 10 {
		return 0, fmt.Errorf("%s %q: not a number", what, clip(s))
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%s %q: not a number", what, clip(s))
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v > max {
		return 0, fmt.Errorf("%s %s: must be between 0 and %d", what, s, max)
	}
	return v, nil
}

// clip shortens s for error messages.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
