package bpf_test

import (
	"errors"
	"log"
	"net"

	"github.com/afxdp/afxdp/bpf"
)

// Steer UDP port 4789 on eth0 to AF_XDP sockets and leave all other traffic
// to the kernel. Needs root (CAP_BPF, CAP_NET_ADMIN).
func ExampleNewProgram() {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		log.Fatal(err)
	}
	prog, err := bpf.NewProgram(&bpf.ProgramOptions{
		Filter: bpf.Filter{IPProto: 17, DstPort: 4789}, // UDP over IPv4 or IPv6
	})
	if err != nil {
		log.Fatal(err)
	}
	defer prog.Close()

	att, err := prog.Attach(ifi.Index, nil) // driver mode, else generic
	if err != nil {
		log.Fatal(err)
	}
	defer att.Close()
	log.Printf("attached to %s in %s mode", ifi.Name, att.Mode())

	// xskFD is an AF_XDP socket bound to queue 0 of eth0 (see package xsk).
	var xskFD int
	if err := prog.Register(0, xskFD); err != nil {
		log.Fatal(err)
	}
	defer prog.Unregister(0)
}

// Find out who holds an interface's XDP hook before taking it over.
func ExampleProgram_Attach_busy() {
	prog, err := bpf.NewProgram(nil)
	if err != nil {
		log.Fatal(err)
	}
	defer prog.Close()

	const ifindex = 2
	att, err := prog.Attach(ifindex, &bpf.AttachOptions{Mode: bpf.AttachDriver})
	var busy *bpf.BusyError
	if errors.As(err, &busy) {
		log.Printf("program %d owns ifindex %d (%s mode); not replacing it", busy.ProgramID, busy.Ifindex, busy.Mode)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer att.Close()
}

func ExampleQueryXDP() {
	info, err := bpf.QueryXDP(1)
	if err != nil {
		log.Fatal(err)
	}
	if p := info.Driver; p.Attached() {
		log.Printf("driver mode: program %d (bpf_link %d; 0 means attached through netlink)", p.ID, p.LinkID)
	}
	if p := info.Generic; p.Attached() {
		log.Printf("generic mode: program %d", p.ID)
	}
}
