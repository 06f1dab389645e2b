// Command hello is the test payload of internal/oci and internal/runc: a tiny
// program that, built with CGO_ENABLED=0, is static. It prints a greeting,
// its user, its effective capabilities, the network interfaces it sees, and
// whether it may open an AF_PACKET and an AF_XDP socket (both need
// CAP_NET_RAW) and register a 4 MiB AF_XDP UMEM (RLIMIT_MEMLOCK or
// CAP_IPC_LOCK), one "key: value" line each. With the argument "sleep" it then
// sleeps for an hour (to test timeouts).
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

func main() {
	fmt.Println("hello from a static afxdp test binary")
	fmt.Printf("uid: %d gid: %d\n", os.Getuid(), os.Getgid())
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
				fmt.Printf("capeff: %s\n", strings.TrimSpace(v))
			}
		}
	} else {
		fmt.Printf("capeff: error %v\n", err)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		fmt.Printf("interfaces: error %v\n", err)
	} else {
		var names []string
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		fmt.Printf("interfaces: %s\n", strings.Join(names, ","))
	}
	fmt.Printf("af_packet: %s\n", trySocket(syscall.AF_PACKET, syscall.SOCK_RAW))
	fmt.Printf("af_xdp: %s\n", trySocket(44 /* AF_XDP */, syscall.SOCK_RAW))
	fmt.Printf("umem_4m: %s\n", tryUMEM(4<<20))
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		time.Sleep(time.Hour)
	}
}

func trySocket(family, typ int) string {
	fd, err := syscall.Socket(family, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return "error " + err.Error()
	}
	syscall.Close(fd)
	return "ok"
}
