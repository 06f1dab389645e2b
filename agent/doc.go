// Package agent lets an unprivileged container use AF_XDP: a privileged
// agent on the host owns the XDP side, and the container, holding only
// CAP_NET_RAW, asks it over a Unix socket for what it cannot do itself.
//
// # Roles
//
// The [Server] (run by cmd/afxdp-agent) loads the redirect program and its
// XSKMAP (package bpf) and attaches them to each interface it serves, then
// listens on one SOCK_SEQPACKET socket per interface,
// <SocketDir>/<device>/afxdp.sock (default /tmp/afxdp_dp, the device
// plugin's and DPDK's path). The [Client] (in the container) creates its
// UMEM and AF_XDP socket, binds it, and then either
//   - gets the XSKMAP's fd (/xsk_map_fd, the fd arrives by SCM_RIGHTS) and
//     puts its socket into the map itself — what DPDK's AF_XDP driver does.
//     Linux 6.5 and later let an unprivileged process update a map whose fd
//     it was given, even with kernel.unprivileged_bpf_disabled set (the
//     test suite checks this on the running kernel); or
//   - passes its socket's fd to the agent, which registers it
//     (/xsk_register, an afxdp extension) — for older kernels.
//
// [OpenSocket] (over a connected Client), [DialSocket] (which also dials
// and connects) and [OpenPinned] (from a map the server pinned) do the
// client's part in one call: they open an xsk.Socket with no XDP program
// of its own and register it, through the map fd when the kernel allows
// and through /xsk_register when it refuses (EPERM), for example because
// the server hands out read-only map fds ([ServerOptions.ReadOnlyMap]).
//
// # Protocol
//
// The protocol is the AF_XDP device plugin for Kubernetes' (handshake
// version 0.1): one text request per datagram, answered by one text
// response; arguments follow the command, separated by commas ("/connect,
// pod" and "/connect, pod" are both accepted; requests are written with
// ", ").
//
//	/connect, <pod>                      -> /host_ok | /host_nak (then hang-up)
//	/version                             -> 0.1
//	/xsk_map_fd, <device>                -> /fd_ack + XSKMAP fd | /fd_nak
//	/config_busy_poll, <usec>, <budget>  -> /config_busy_poll_ack | _nak   (AF_XDP socket fd attached)
//	/xsk_register, <device>, <queue>     -> /xsk_register_ack | _nak       (extension; socket fd attached)
//	/fin                                 -> /fin_ack (then hang-up)
//	anything else                        -> /nak;  a server fault -> /error
//
// Order is enforced as in the plugin: the first request must be /connect.
// The plugin hangs up without a word on any other first request; this
// server answers /nak and then hangs up. A malformed /connect, a pod that
// [ServerOptions.ValidatePod] refuses, or a peer whose UID is not in
// [ServerOptions.AllowedUIDs] (checked with SO_PEERCRED) gets /host_nak and
// the connection is closed: a refused peer never gets the map fd. After
// /host_ok any request in any order is served; a second /connect gets /nak.
// Malformed requests (too long, unknown, wrong arguments, a descriptor
// attached to a request that takes none, more than one descriptor) get /nak
// (or /config_busy_poll_nak and /xsk_register_nak when the descriptor is
// what is wrong) and the session goes on, where the plugin would sometimes
// hang up or answer twice. /xsk_map_fd and /xsk_register only name the
// device whose socket the client connected to; another device gets /fd_nak.
// Every descriptor received is closed once the request is answered.
//
// For /config_busy_poll the server sets SO_PREFER_BUSY_POLL=1,
// SO_BUSY_POLL=<usec> and SO_BUSY_POLL_BUDGET=<budget> on the socket, which
// must be an AF_XDP socket (values above the net.core sysctls need
// CAP_NET_ADMIN, hence the agent).
//
// # Lifetime of XSKMAP entries
//
// The kernel removes an AF_XDP socket from every XSKMAP when the socket is
// released (xsk_release -> xsk_delete_from_maps); the map entry holds no
// reference on the socket. So an entry a client wrote through the map fd
// lasts as long as its socket: a client that dies leaves no entry behind,
// with nothing for the agent to do (it cannot see those entries: XSKMAP
// lookups from user space are not supported). Entries made with
// /xsk_register are also removed by the agent when the connection that made
// them ends (by /fin, idle timeout or the client's death), unless another
// registration replaced them since; a client using that path keeps its
// connection open while it uses the socket.
//
// # Permissions
//
// Each device's directory and socket are owned and moded so that only the
// allowed users may connect (see [NewServer]); SO_PEERCRED is checked on
// every connection regardless.
package agent
