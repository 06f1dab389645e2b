// Package bpf owns the XDP side of afxdp: the program that steers frames to
// AF_XDP sockets, the XSKMAP it looks sockets up in, and attaching it to an
// interface.
//
// An AF_XDP socket receives nothing by itself. A frame reaches it only when
// an XDP program on the socket's interface returns a redirect into an
// XSKMAP entry holding the socket. [NewProgram] creates such a map, keyed by
// receive queue index, and loads a program that, for every frame,
//
//  1. reads the frame's receive queue index,
//  2. checks the frame against an optional [Filter] (EtherType, IP
//     protocol, UDP/TCP destination port, IP destination address) and
//     passes non-matching or too short frames to the kernel's network stack (XDP_PASS), and
//  3. calls bpf_redirect_map(xskmap, queue, XDP_PASS), which redirects to
//     the queue's socket, or passes the frame on when the queue has none.
//
// So an interface keeps working (ARP, SSH, ...) while sockets take the
// frames they asked for. [Program.Register] puts a bound socket into the map
// for its queue; [Program.Attach] attaches the program to an interface
// through a bpf_link, so that the kernel detaches it when the process exits,
// and refuses, with a [*BusyError], to displace a program someone else
// attached unless told to. [QueryXDP] reports what an interface has
// attached.
//
// The program is assembled in Go (github.com/cilium/ebpf/asm), so building
// afxdp needs no C compiler, and each filter gets a program with only its
// own checks.
//
// Loading programs and maps needs CAP_BPF (or CAP_SYS_ADMIN); attaching
// needs CAP_NET_ADMIN; finding out whether a program is held by a bpf_link
// needs CAP_SYS_ADMIN. XDP through bpf_link needs Linux 5.9 or later.
package bpf
