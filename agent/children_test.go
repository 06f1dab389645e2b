package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	xskpkg "github.com/afxdp/afxdp/xsk"
)

// children are the functions a re-executed test binary runs as an
// unprivileged "container" (see internal/container). They read their
// parameters from the environment and report on stdout.
var children = map[string]func() int{
	"hold":    childHold,
	"refused": childRefused,
}

// childHold plays a workload with CAP_NET_RAW: it makes an AF_XDP socket
// bound to queue 0 of AGENT_DEVICE, connects to the agent, puts the socket
// into the XSKMAP (AGENT_MODE "register": through /xsk_register; "mapfd":
// itself, through the map fd), prints "ready" and waits to be killed,
// holding its connection.
func childHold() int {
	fail := func(format string, args ...any) int {
		fmt.Printf("error: "+format+"\n", args...)
		return 1
	}
	dev := os.Getenv("AGENT_DEVICE")
	o := *smallXSK
	o.NoXDP = true
	sock, err := xskpkg.Open(dev, 0, &o)
	if err != nil {
		return fail("open AF_XDP socket: %v", err)
	}
	defer sock.Close()
	xsk := sock.FD()
	c, err := Dial(os.Getenv("AGENT_SOCKET"))
	if err != nil {
		return fail("%v", err)
	}
	if err := c.Connect("child-pod"); err != nil {
		return fail("%v", err)
	}
	m, err := c.XSKMap(dev)
	if err != nil {
		return fail("%v", err)
	}
	switch os.Getenv("AGENT_MODE") {
	case "register":
		if err := c.Register(dev, 0, xsk); err != nil {
			return fail("%v", err)
		}
	case "mapfd":
		if err := m.Update(uint32(0), uint32(xsk), ebpf.UpdateAny); err != nil {
			fmt.Printf("update refused: %v\n", err)
			return 3
		}
	}
	fmt.Println("ready")
	select {} // until killed
}

// childRefused connects with a UID the agent does not allow and reports
// what it got, without sending anything: the answer, how many descriptors
// came with it, and whether the agent then hung up. A request sent after
// the answer fails: the agent shut the connection.
func childRefused() int {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: os.Getenv("AGENT_SOCKET"), Net: "unixpacket"})
	if err != nil {
		fmt.Printf("dial: %v\n", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 128)
	oob := make([]byte, oobSize)
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		fmt.Printf("read: %v\n", err)
		return 1
	}
	resp, fds := string(buf[:n]), parseRights(oob[:oobn])
	_, _, _, _, err = c.ReadMsgUnix(buf, oob)
	hangup := errors.Is(err, io.EOF)
	_, err = c.Write([]byte("/connect, child-pod"))
	fmt.Printf("resp=%s fds=%d hangup=%v send_after=%v\n", resp, len(fds), hangup, errors.Is(err, syscall.EPIPE))
	return 0
}

// readLine reads one line of a child's output.
func readLine(r *bufio.Reader) string {
	s, _ := r.ReadString('\n')
	return s
}
