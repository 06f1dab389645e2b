package cni_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/afxdp/afxdp/internal/cni"
)

// Wire the named namespace c1 to the host with a veth pair, as a pod gets it
// from the ptp plugin.
func Example() {
	a, err := cni.Attach(context.Background(), cni.Config{
		Plugin:    "ptp",
		Subnet:    netip.MustParsePrefix("10.79.2.0/24"),
		NetnsPath: "/var/run/netns/c1",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	fmt.Printf("%s in c1 has %s; host side %s, gateway %s\n", a.IfName, a.Addr, a.HostIf, a.Gateway)
}
