// Package e2e holds end-to-end tests of the container fast path: the
// privileged agent (package agent) serving an unprivileged workload that
// holds only CAP_NET_RAW — a child process in its own namespaces
// (internal/container), and the examples/sender binary packed into an OCI
// image (internal/oci), run by runc (internal/runc) in a network namespace
// wired by a CNI plugin (internal/cni). The package has no code outside its
// tests.
package e2e
