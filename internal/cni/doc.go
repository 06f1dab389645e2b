// Package cni wires a network namespace the way container orchestrators do:
// by running the CNI reference plugins (Debian's containernetworking-plugins,
// in /usr/lib/cni) as the CNI specification 1.0 says, so that the fast path is
// tested on the same interfaces a Kubernetes pod would get.
//
// [Attach] writes a network configuration for one of the ptp, bridge, macvlan
// or ipvlan plugins with host-local IPAM (in a private data directory) and
// executes the plugin with CNI_COMMAND=ADD; [Attachment.Close] executes DEL
// with the ADD's result as prevResult and then removes what DEL leaves
// behind: the bridge device, the IPAM directory, and net.ipv4.ip_forward=1,
// which the bridge and ptp plugins set (Close restores the value it had).
//
// The plugins are executed directly rather than through libcni: the protocol
// is a process with six environment variables, the configuration on stdin
// and a JSON result or error on stdout, and libcni's invoke package would
// pull OpenTelemetry into the module for tracing this package does not use.
// Executing them directly also keeps the plugin's structured error
// (code, msg, details), from which a kernel without ipvlan is recognised and
// reported as [netenv.ErrNotSupported].
//
// Attach and Close need CAP_NET_ADMIN and CAP_SYS_ADMIN (the plugins enter the
// namespace). Restoring ip_forward is not coordinated between attachments:
// overlapping attachments that both found it 0 may turn it off under one
// another.
package cni
