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
// [OpenSocket] (over a connected Client) and [DialSocket] (which also
// dials and connects) do the client's part in one call: they open an
// xsk.Socket with no XDP program of its own and register it, by default
// ([RegisterAuto]) through the map fd when the kernel allows and through
// /xsk_register when it refuses (EPERM or EACCES), for example because the
// server hands out read-only map fds ([ServerOptions.ReadOnlyMap]).
// [OpenPinned] does the same from a map the server pinned, with no
// connection, so through the map only: a refused update is its error.
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
//	/fin                                 -> /fin_ack (registrations removed first; then hang-up)
//	anything else                        -> /nak;  a server fault -> /error
//
// Order is enforced as in the plugin: the first request must be /connect.
// The plugin hangs up without a word on any other first request; this
// server answers /nak and then hangs up. A peer whose UID is not in
// [ServerOptions.AllowedUIDs] (checked with SO_PEERCRED when the connection
// is accepted) is answered /host_nak at once, before it sends anything,
// and hung up on: a request it sends reads that answer, or fails with EPIPE
// once the server has shut the connection ([Client] reads the answer then
// too). A malformed /connect or a pod that [ServerOptions.ValidatePod]
// refuses also gets /host_nak and the connection is closed: a refused peer
// never gets the map fd. After /host_ok any request in any order is
// served; a second /connect gets /nak. Malformed requests (too long,
// unknown, wrong arguments, a descriptor attached to a request that takes
// none, more than one descriptor) get /nak (or /config_busy_poll_nak and
// /xsk_register_nak when the descriptor is what is wrong) and the session
// goes on, where the plugin would sometimes hang up or answer twice.
// /xsk_map_fd and /xsk_register only name the device whose socket the
// client connected to; another device, or one whose interface is absent
// (see below), gets /fd_nak and /xsk_register_nak respectively.
// Every descriptor received is closed once the request is answered. When
// the server ends a connection, whatever the reason (a hang-up, an error,
// MaxConns, Close), it first discards what the client sent after the last
// request it answered and closes the descriptors that came with it, so
// that the client reads that answer and then the end of the connection,
// not a reset, and so that no descriptor the client sent is left for the
// kernel to close in a thread of the agent (closing a socket can block).
// For the same reason a Unix socket the client sends is shut for reading,
// emptied (its queued messages read, its pending connections accepted,
// and what they carry closed the same way) and only then closed; a client
// that sends its own end of its connection thereby ends it unanswered.
//
// /xsk_register is acknowledged only for an AF_XDP socket bound to the
// named queue of the device (checked with bind(2), see below), and only
// when no other live connection holds that queue: a queue is held by the
// connection that registered it while the entry is still its socket and
// its client has not hung up (a client that closes its connection and
// registers again on a new one finds the queue free at once).
//
// A connection silent for [ServerOptions.IdleTimeout] is closed, unless it
// holds a registration; an answer the client leaves unread for
// [ServerOptions.WriteTimeout] closes the connection too.
//
// For /config_busy_poll the server sets SO_PREFER_BUSY_POLL=1,
// SO_BUSY_POLL=<usec> and SO_BUSY_POLL_BUDGET=<budget> on the socket (values
// above the net.core sysctls need CAP_NET_ADMIN, hence the agent). It does
// so only for an AF_XDP socket bound to a queue, any queue, of the device
// whose socket the client connected to (checked with bind(2), see below,
// on each of the device's queues in turn), while its program is attached;
// any other socket gets /config_busy_poll_nak.
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
// them ends (by /fin, before /fin_ack is sent; an error or the client's
// death), unless they are no longer the socket registered: the agent keeps
// a second XSKMAP with the sockets it registered and compares the two
// entries with a small BPF program (run with BPF_PROG_TEST_RUN, never
// attached), so that it never removes an entry the kernel or another
// client put there since. A client using that path keeps its connection
// open while it uses the socket; the idle timeout does not end a
// connection whose registration holds.
//
// The kernel does not tell where an AF_XDP socket is bound (getsockname
// fails, and sock_diag needs CONFIG_XDP_SOCKETS_DIAG), so before it
// registers a socket, or sets its busy-poll options, the agent binds a
// probe socket to the queue with XDP_SHARED_UMEM on the client's UMEM,
// which the kernel allows only when the client's socket is bound to that
// device and queue, and closes it.
//
// # When the agent or the interface goes
//
// The server attaches its programs through bpf_links, so the kernel
// detaches them as soon as the agent's process ends, however it ends: an
// agent killed by SIGKILL or a crash stops the redirect at once, and every
// frame goes to the kernel's stack. What [Server.Close] would remove stays:
// the socket files (a client's dial fails with ECONNREFUSED) and the pins,
// which then hold maps no program reads. The next [NewServer] on the same
// directories takes both back (the pins only when it has the same
// PinDir: cmd/afxdp-agent started without -pin warns of the pins it finds
// and leaves them). It loads new programs with new, empty
// XSKMAPs, so no registration survives a restart: a client's connection
// ends with the old agent, its socket is in the old map, and it must
// register again (through a new connection, or by opening the new pin).
//
// After Close, as after a kill, the directories stay: the socket
// directory, and each device's directory in it and in the pin directory,
// empty once Close has removed the socket and the pin. A pod reaches its
// socket through a bind mount of its device's directory, and a mount holds
// the directory, not its path: had Close removed it, the next NewServer
// would make another one that the pod never sees. Kept, it is the one
// the next NewServer takes back, so a pod registers again through the
// mount it has. A pod started before the agent needs the device's
// directory already made (root's, mode 0700): NewServer takes it over.
//
// When a served interface goes away while the server runs (its network
// namespace deleted, the link deleted: a pod or a container restarted),
// the kernel detaches the program with it, and the server follows the
// interface. Each /xsk_map_fd, /xsk_register and /config_busy_poll first
// checks that the program is on the interface of the device's name in the
// device's namespace (the path opened anew: a new namespace at the same
// path is a new namespace). While there is no such interface, or no such
// namespace, the request gets /fd_nak, /xsk_register_nak or
// /config_busy_poll_nak, and the server logs why. Once there is one
// without the program, the server loads a new program with a new, empty
// XSKMAP for it, attaches it as at the start (Mode, Replace), pins its map
// in place of the old pin (pinned aside and renamed over it, so that a
// client opening the pin finds the old map or the new, never none), logs
// the re-attachment, and serves the request; requests that come
// meanwhile wait, and the program is attached once.
// Nothing of the old program carries over: it is detached and closed with
// its XSKMAP, whose entries are removed, and its registrations are
// forgotten (their sockets were bound to the interface that went, and the
// agent refuses to register them on the new one), so every queue of the
// new map is free, also while the connections that held queues of the
// old one stay open. A client that only opens the pin and never asks the
// agent finds the new map once [Server.Refresh] has run (cmd/afxdp-agent
// calls it every second) or a request has made the server follow; until
// then the pin holds the old map, which redirects nothing.
//
// # Permissions
//
// Each device's directory and socket are owned and moded as a first fence
// (see [NewServer]): to the one allowed user, to the group
// [ServerOptions.SocketGID], or open to all when several users are allowed
// and no group is given. What admits a client is its UID, which the server
// checks with SO_PEERCRED on every connection: only
// [ServerOptions.AllowedUIDs] are served, also among the group's members.
// The agent works as root in the socket
// directory, so it refuses one that another user could write to or
// redirect, and never follows a symbolic link when it sets a mode or an
// owner (see [ServerOptions.SocketDir]).
package agent
