// Package sys is the one place where afxdp talks to the kernel: AF_XDP
// socket options, ring and UMEM mappings, wakeups and polling (xsk.go),
// rtnetlink queries of XDP attachment (netlink.go), network namespace
// switches (netns.go) and the CPUs the process may run on (cpu.go).
//
// Errors wrap the errno in an *os.SyscallError naming the call, so that
// errors.Is(err, unix.EBUSY) and friends work for callers. The hot-path
// calls (Kick, WakeRx) allocate nothing.
package sys
