// Package oci builds a single-layer OCI container image around one statically
// linked executable, without a container engine, using go-containerregistry.
//
// The image holds the executable (mode 0755, owned by root) at its entrypoint
// path and nothing else: no shell, no libc, no /etc. It runs as the unprivileged
// numeric user [DefaultUser] (65534:65534, "nobody" on most distributions), so
// that a runtime grants it only the capabilities it is given explicitly (for
// AF_XDP: CAP_NET_RAW as an ambient capability; see internal/runc).
//
// Images are reproducible: the layer's timestamps and the config's creation
// time are the Unix epoch, so the same binary and options give the same
// digest. [WriteLayout] stores an image in an OCI image layout directory;
// [WriteTarball] writes the archive that `docker load` and `podman load` read.
//
// The binary must be static: [CheckStatic] reads its ELF program headers and
// refuses one with a PT_INTERP (a dynamic loader), which could not start in an
// image that has no loader. Go programs built with CGO_ENABLED=0 are static.
package oci
