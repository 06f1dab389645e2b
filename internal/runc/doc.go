// Package runc turns an OCI image into a runtime bundle and runs it with the
// runc command-line tool, the way a container engine would but with nothing
// in between: the fast path's containers are tested under the real runtime.
//
// [Unpack] flattens an image from an OCI image layout (see internal/oci) into
// DIR/rootfs, applying whiteouts, through an [os.Root] so that no entry can
// write outside the rootfs. [Bundle.WriteConfig] writes DIR/config.json, an
// OCI runtime spec that runc 1.1 accepts: the image's entrypoint, user and
// environment, a read-only rootfs, /proc, a tmpfs /dev, read-only /sys, new
// PID, IPC, UTS and mount namespaces, and either a new network namespace or
// an existing one named by path (as a CNI-wired /var/run/netns/NAME).
//
// Capabilities: the process runs as the image's non-root UID with only the
// capabilities it is given, by default CAP_NET_RAW, which AF_XDP and AF_PACKET
// sockets need. For a non-root process to keep a capability across execve it
// must be an ambient capability, and the kernel raises an ambient capability
// only if it is also permitted and inheritable (capabilities(7)); so each
// capability goes in all five sets (bounding, effective, permitted,
// inheritable, ambient). no_new_privs is set; it does not drop ambient
// capabilities. The tests check that the process's CapEff is exactly
// CAP_NET_RAW and that it can open AF_PACKET and AF_XDP sockets.
//
// [Run] runs `runc run --bundle DIR ID` in the foreground with stdio captured,
// kills the container when the context or timeout expires, and always ends
// with `runc delete --force ID`, then removes the empty cgroup directories
// runc made for the ID if runc was killed before it recorded the
// container (runc cannot delete those). The runc binary is Debian's runc package
// (1.1); crun 1.8 fails on this machine's hybrid cgroup layout.
package runc
