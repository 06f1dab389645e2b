package agent_test

import (
	"fmt"
	"log"

	"golang.org/x/sys/unix"

	"github.com/afxdp/afxdp/agent"
	"github.com/afxdp/afxdp/bpf"
	"github.com/afxdp/afxdp/xsk"
)

// The privileged side: serve eth1, redirecting UDP port 4789, to UID 1000.
func ExampleNewServer() {
	srv, err := agent.NewServer(&agent.ServerOptions{
		Devices: []agent.Device{{
			Name:   "eth1",
			Filter: bpf.Filter{EtherType: 0x0800, IPProto: unix.IPPROTO_UDP, DstPort: 4789},
		}},
		AllowedUIDs: []int{1000},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	fmt.Println("serving", srv.SocketPath("eth1"))
}

// The container's side: get the XSKMAP and put a bound AF_XDP socket into it,
// or have the agent do it where the kernel refuses.
func ExampleClient() {
	c, err := agent.Dial("/tmp/afxdp_dp/eth1/afxdp.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect("my-pod"); err != nil {
		log.Fatal(err)
	}
	xskFD := 7 // an AF_XDP socket bound to queue 0 of eth1
	m, err := c.XSKMap("eth1")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), uint32(xskFD)); err != nil {
		// An older kernel: let the agent register the socket.
		if err := c.Register("eth1", 0, xskFD); err != nil {
			log.Fatal(err)
		}
	}
	if err := c.ConfigBusyPoll(xskFD, 20, 64); err != nil {
		log.Fatal(err)
	}
}

// The container's side in one call: an AF_XDP socket on queue 0 of eth1
// whose XDP side is the agent's. No program is loaded here; CAP_NET_RAW is
// all it needs.
func ExampleDialSocket() {
	sock, err := agent.DialSocket("/tmp/afxdp_dp/eth1/afxdp.sock", "my-pod", "eth1", 0, &agent.SocketOptions{
		XSK: &xsk.Options{NumFrames: 1024}, // 2 MiB of RLIMIT_MEMLOCK
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sock.Close()
	fmt.Println("registered by", sock.Registration())
	descs := make([]xsk.Desc, 64)
	n, _ := sock.Receive(descs)
	sock.Release(descs[:n])
}
