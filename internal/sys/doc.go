// Package sys is where afxdp talks to the kernel: AF_XDP socket options,
// ring and UMEM mappings, wakeups and polling (xsk.go), rtnetlink queries
// of XDP attachment and queue counts (netlink.go, netlink_link.go), the
// drivers' XDP features from the netdev generic netlink family
// (genetlink.go), socket drop counters (sockopt.go), network namespace
// switches (netns.go) and the CPUs the process may run on (cpu.go). The
// BPF system calls are cilium/ebpf's; close.go closes its objects safely. The agent keeps its few socket calls
// in agent/sys_linux.go, and internal/baseline its packet rings.
//
// Errors wrap the errno in an *os.SyscallError naming the call, so that
// errors.Is(err, unix.EBUSY) and friends work for callers. The hot-path
// calls (Kick, WakeRx) allocate nothing.
package sys
