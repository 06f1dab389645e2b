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
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/afxdp/afxdp/internal/oci"
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
		labels     multi
		envs       multi
		argv       multi
	)
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
	if *layoutDir == "" && *tarFile == "" {
		return errors.New("nothing to write: give --oci-layout DIR and/or --tar FILE")
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
	return nil
}
