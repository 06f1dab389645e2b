// Package cni wires a network namespace the way container orchestrators do:
// by running the CNI reference plugins (Debian's containernetworking-plugins,
// in /usr/lib/cni) as the CNI specification 1.0 says, so that the fast path is
// tested on the same interfaces a Kubernetes pod would get.
//
// [Attach] writes a network configuration for one of the ptp, bridge, macvlan
// or ipvlan plugins with host-local IPAM (in a data directory that this
// process's attachments with the same subnet share, so that each gets its
// own address) and executes the plugin with CNI_COMMAND=ADD;
// [Attachment.Close] executes DEL with the ADD's result as prevResult and
// then removes what DEL leaves behind: the interface, if DEL failed (the
// plugins give back the address first and stop there), the bridge device
// (if an Attach made it and no other open attachment of this process is on
// it), the IPAM directory (if no other open attachment of this process has
// the subnet), and net.ipv4.ip_forward=1, which the bridge and ptp plugins
// set and never unset.
//
// The plugins are executed directly rather than through libcni: the protocol
// is a process with six environment variables, the configuration on stdin
// and a JSON result or error on stdout, and libcni's invoke package would
// pull OpenTelemetry into the module for tracing this package does not use.
// Executing them directly also keeps the plugin's structured error
// (code, msg, details), from which a kernel without ipvlan is recognised and
// reported as [netenv.ErrNotSupported].
//
// ip_forward belongs to the caller's network namespace (the one the plugins
// run in), not to one attachment: every veth that ptp or bridge gives a
// container there routes through it. So this process counts its open ptp
// and bridge attachments per namespace. The first Attach in a namespace
// saves the value; the Close of the last one still open there writes it
// back, in that namespace, if the value differs then; Closes before that
// leave it at 1. A test that found forwarding off thus finds it off again,
// and no attachment loses forwarding while it is open. The count is only
// this process's: another process attaching in the same namespace is not
// seen, and a change made by someone else while attachments are open is
// overwritten by the last Close.
//
// Attach and Close need CAP_NET_ADMIN and CAP_SYS_ADMIN (the plugins enter the
// namespace). Call Close from the namespace Attach was called in: DEL runs
// there.
package cni
