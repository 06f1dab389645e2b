// Command afxdp-image builds an OCI container image from one statically
// linked executable, without Docker: a single layer holding the binary
// (mode 0755, owned by root) at the entrypoint path, run as the non-root
// numeric user 65534:65534 ("nobody") unless --user says otherwise.
//
// It needs no privileges and no container engine. The binary must be static
// (for Go: CGO_ENABLED=0); a dynamically linked one is refused. The output is
// an OCI image layout directory (--oci-layout, for runc bundles, skopeo,
// podman) and/or a tarball that `docker load` and `podman load` read (--tar).
//
//	CGO_ENABLED=0 go build -o /tmp/sender ./examples/sender
//	go run ./cmd/afxdp-image --binary /tmp/sender --tag afxdp/sender:dev \
//	    --oci-layout /tmp/sender-oci --tar /tmp/sender.tar
//	docker load -i /tmp/sender.tar
//
// With --bundle it also unpacks the image into a runc bundle (rootfs/ and
// config.json: the image's user, only CAP_NET_RAW, read-only rootfs),
// optionally joining a network namespace (--netns), with bind mounts
// (--bind SRC:DST, such as the agent's socket directory) and arguments
// after the entrypoint (--run-arg):
//
//	afxdp-image --binary /tmp/sender --tag afxdp/sender:dev --bundle /tmp/sender-bundle \
//	    --netns /var/run/netns/c1 --bind /tmp/afxdp_dp/eth0:/tmp/afxdp_dp/eth0 \
//	    --run-arg=-dst --run-arg=10.79.2.1
//	runc run --bundle /tmp/sender-bundle sender1
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/afxdp/afxdp/internal/oci"
	"github.com/afxdp/afxdp/internal/runc"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "afxdp-image:", err)
		os.Exit(1)
	}
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("afxdp-image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		binary     = fs.String("binary", "", "statically linked executable to put in the image (required)")
		entrypoint = fs.String("entrypoint", "", `absolute path of the binary inside the image, run as the entrypoint (default "/" + the binary's name)`)
		tag        = fs.String("tag", "", "image name and tag, e.g. afxdp/sender:dev (required for --tar; the ref name in --oci-layout)")
		layoutDir  = fs.String("oci-layout", "", "write (or add to) an OCI image layout directory")
		tarFile    = fs.String("tar", "", "write a tarball for `docker load` / `podman load`")
		user       = fs.String("user", oci.DefaultUser, "numeric UID[:GID] to run as; root is refused")
		arch       = fs.String("arch", "", "image architecture (default: from the binary's ELF header)")
		bundleDir  = fs.String("bundle", "", "unpack the image into this runc bundle directory (must not exist or be empty)")
		netnsPath  = fs.String("netns", "", "for --bundle: network namespace the container joins (default: a new one)")
		labels     multi
		envs       multi
		argv       multi
		binds      multi
		runArgs    multi
	)
	fs.Var(&binds, "bind", "for --bundle: bind mount SRC:DST (repeatable)")
	fs.Var(&runArgs, "run-arg", "for --bundle: argument after the entrypoint, replacing the image's (repeatable)")
	fs.Var(&labels, "label", "image label KEY=VALUE (repeatable)")
	fs.Var(&envs, "env", "environment variable KEY=VALUE (repeatable)")
	fs.Var(&argv, "arg", "argument appended to the entrypoint (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *binary == "" {
		return errors.New("--binary: required")
	}
	if *layoutDir == "" && *tarFile == "" && *bundleDir == "" {
		return errors.New("nothing to write: give --oci-layout DIR, --tar FILE and/or --bundle DIR")
	}
	if *bundleDir == "" && (*netnsPath != "" || len(binds) > 0 || len(runArgs) > 0) {
		return errors.New("--netns, --bind and --run-arg need --bundle")
	}
	var spec runc.SpecOptions
	spec.NetnsPath = *netnsPath
	for _, b := range binds {
		src, dst, ok := strings.Cut(b, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("--bind %q: must be SRC:DST", b)
		}
		spec.Binds = append(spec.Binds, runc.Bind{Source: src, Destination: dst})
	}
	if *tarFile != "" && *tag == "" {
		return errors.New("--tar needs --tag: docker load names the image by it")
	}
	lm := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q: must be KEY=VALUE", l)
		}
		lm[k] = v
	}

	img, err := oci.Build(&oci.Options{
		Binary:       *binary,
		Entrypoint:   *entrypoint,
		Args:         argv,
		User:         *user,
		Env:          envs,
		Labels:       lm,
		Architecture: *arch,
	})
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("compute digest: %w", err)
	}
	if *layoutDir != "" {
		if err := oci.WriteLayout(*layoutDir, img, *tag); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s to OCI layout %s\n", digest, *layoutDir)
	}
	if *tarFile != "" {
		if err := oci.WriteTarball(*tarFile, img, *tag); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s as %s to %s\n", digest, *tag, *tarFile)
	}
	if *bundleDir != "" {
		b, err := runc.UnpackImage(img, *bundleDir)
		if err != nil {
			return err
		}
		if len(runArgs) > 0 {
			spec.Args = append(append([]string{}, b.Image.Entrypoint...), runArgs...)
		}
		if err := b.WriteConfig(&spec); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unpacked %s into runc bundle %s\n", digest, *bundleDir)
	}
	return nil
}
