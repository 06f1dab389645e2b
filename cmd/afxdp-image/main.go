// Command afxdp-image builds an OCI container image from one statically
// linked executable, without Docker: a single layer holding the binary
// (mode 0755, owned by root) at the entrypoint path, run as the non-root
// numeric user 65534:65534 ("nobody") unless --user says otherwise (a UID
// and GID of at most 2147483647, as runc requires; a UID alone runs with
// the GID of the same number). The entrypoint may not be under /proc, /sys
// or /dev, which runtimes mount over the image's.
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
// (--bind SRC:DST, or SRC:DST:ro for a read-only one, such as the agent's
// socket directory; not onto the entrypoint or a directory above it, which
// would hide it) and arguments after the entrypoint (--run-arg). The
// bundle directory must not exist or be empty:
//
//	afxdp-image --binary /tmp/sender --tag afxdp/sender:dev --bundle /tmp/sender-bundle \
//	    --netns /var/run/netns/c1 --bind /tmp/afxdp_dp/eth0:/tmp/afxdp_dp/eth0 \
//	    --run-arg=-dst --run-arg=10.79.2.1
//	runc run --bundle /tmp/sender-bundle sender1
//
// --oci-layout must name a missing or empty directory, or an OCI image
// layout already (a directory holding an oci-layout file), to which the
// image is added; any other directory is refused. --oci-layout, --tar and
// --bundle must name three different paths. --arch, when given, must
// be a Go architecture (GOARCH) and the one of the binary's ELF header.
//
// Every flag is checked before anything is written. A new layout is made
// empty first, and the image added to it after the other outputs are
// staged; the tarball and the bundle are made under temporary names beside
// their destinations (which may be inside the layout directory) and
// renamed into place once every output is ready. If a step fails, the run
// removes what it made (its temporary files, the directories it created,
// the layout directory if it created it, or the layout's files if the
// directory was there, empty) and leaves a bundle directory that was
// there, empty, as it was. Only an image added to an --oci-layout that
// already existed stays, if a rename after it fails.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/afxdp/afxdp/internal/oci"
	"github.com/afxdp/afxdp/internal/runc"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0) // -h: the usage is what was asked for
		}
		fmt.Fprintln(os.Stderr, "afxdp-image:", err)
		os.Exit(1)
	}
}

// writeLayout is oci.WriteLayout, a variable so that a test can make this
// late step fail after the others have written.
var writeLayout = oci.WriteLayout

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func run(args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("afxdp-image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		binary     = fs.String("binary", "", "statically linked executable to put in the image (required)")
		entrypoint = fs.String("entrypoint", "", `absolute path of the binary inside the image, run as the entrypoint, not under /proc, /sys or /dev (default "/" + the binary's name)`)
		tag        = fs.String("tag", "", "image name and tag, e.g. afxdp/sender:dev (required for --tar; the ref name in --oci-layout)")
		layoutDir  = fs.String("oci-layout", "", "write an OCI image layout into this missing or empty directory, or add to the layout there")
		tarFile    = fs.String("tar", "", "write a `file`: a tarball for docker load or podman load")
		user       = fs.String("user", oci.DefaultUser, "numeric UID[:GID] to run as, each at most 2147483647 (runc's limit; GID default: the UID); root is refused")
		arch       = fs.String("arch", "", "image architecture, a GOARCH that must match the binary's ELF header (default: from the binary's ELF header)")
		bundleDir  = fs.String("bundle", "", "unpack the image into this runc bundle directory (must not exist or be empty)")
		netnsPath  = fs.String("netns", "", "for --bundle: network namespace the container joins (default: a new one)")
		labels     multi
		envs       multi
		argv       multi
		binds      multi
		runArgs    multi
	)
	fs.Var(&binds, "bind", "for --bundle: bind mount SRC:DST, or SRC:DST:ro for a read-only one, both absolute, DST not the entrypoint or a directory above it (repeatable)")
	fs.Var(&runArgs, "run-arg", "for --bundle: argument after the entrypoint, replacing the image's (repeatable)")
	fs.Var(&labels, "label", "image label KEY=VALUE (repeatable)")
	fs.Var(&envs, "env", "environment variable KEY=VALUE (repeatable)")
	fs.Var(&argv, "arg", "argument appended to the entrypoint (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// Check every flag before anything is written.
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
	if *netnsPath != "" && !filepath.IsAbs(*netnsPath) {
		return fmt.Errorf("--netns %q: must be an absolute path", *netnsPath)
	}
	spec.NetnsPath = *netnsPath
	for _, b := range binds {
		src, dst, ok := strings.Cut(b, ":")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("--bind %q: must be SRC:DST or SRC:DST:ro", b)
		}
		// A third field is an option, as in docker run -v; without this
		// cut, "ro" would end up in the mount's path.
		dst, opt, hasOpt := strings.Cut(dst, ":")
		if hasOpt && opt != "ro" && opt != "rw" {
			return fmt.Errorf("--bind %q: option %q: want ro or rw", b, opt)
		}
		if !filepath.IsAbs(src) || !filepath.IsAbs(dst) || filepath.Clean(dst) == "/" {
			return fmt.Errorf("--bind %q: SRC and DST must be absolute paths, DST not /", b)
		}
		spec.Binds = append(spec.Binds, runc.Bind{Source: src, Destination: dst, ReadOnly: opt == "ro"})
	}
	if *tarFile != "" && *tag == "" {
		return errors.New("--tar needs --tag: docker load names the image by it")
	}
	if *tag != "" {
		if _, err := name.NewTag(*tag); err != nil {
			return fmt.Errorf("--tag %q: %w", *tag, err)
		}
	}
	if *arch != "" {
		if !oci.KnownArch(*arch) {
			return fmt.Errorf("--arch %q: not a Go architecture (GOARCH) of Linux", *arch)
		}
		binArch, err := oci.CheckStatic(*binary)
		if err != nil {
			return fmt.Errorf("--binary %q: %w", *binary, err)
		}
		if *arch != binArch {
			return fmt.Errorf("--arch %q: the binary %s is %s (its ELF header)", *arch, *binary, binArch)
		}
	}
	if err := distinctOutputs([][2]string{{"--oci-layout", *layoutDir}, {"--tar", *tarFile}, {"--bundle", *bundleDir}}); err != nil {
		return err
	}
	if *layoutDir != "" {
		if err := oci.CheckLayoutDir(*layoutDir); err != nil {
			return fmt.Errorf("--oci-layout: %w", err)
		}
	}
	if *tarFile != "" {
		if fi, err := os.Stat(*tarFile); err == nil && fi.IsDir() {
			return fmt.Errorf("--tar %q: is a directory", *tarFile)
		}
	}
	lm := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q: must be KEY=VALUE", l)
		}
		lm[k] = v
	}
	var bundleExists bool
	if *bundleDir != "" {
		if bundleExists, err = checkBundleDir(*bundleDir); err != nil {
			return err
		}
	}
	// Build checks the rest (the binary, --entrypoint, --user, --env) and
	// writes nothing.
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
	// A bind mount onto the entrypoint, or onto a directory above it,
	// hides the binary: runc would fail to start the container.
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("read image config: %w", err)
	}
	ep := cf.Config.Entrypoint[0]
	for i, b := range spec.Binds {
		if dst := filepath.Clean(b.Destination); ep == dst || strings.HasPrefix(ep, dst+"/") {
			return fmt.Errorf("--bind %q: DST %s would hide the entrypoint %s", binds[i], dst, ep)
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("compute digest: %w", err)
	}

	// From here on, a failure removes what this run made (see stage.go).
	var made undo
	defer func() {
		if err != nil {
			err = errors.Join(err, made.run())
		}
	}()
	// A new layout is made first, empty, so that the staging entries of
	// a --tar or --bundle inside its directory do not make it look like
	// a directory of other files; the image is added to it last.
	if *layoutDir != "" {
		top, err := runc.FirstMissing(*layoutDir)
		if err != nil {
			return fmt.Errorf("--oci-layout %q: %w", *layoutDir, err)
		}
		if top != "" {
			made.add(func() error { return os.RemoveAll(top) })
		}
		created, err := oci.InitLayout(*layoutDir)
		if err != nil {
			return fmt.Errorf("--oci-layout: %w", err)
		}
		if created && top == "" {
			// The directory was there, empty: take out what the
			// layout put in it.
			made.add(func() error { return removeLayoutFiles(*layoutDir) })
		}
	}
	var tarTmp string
	if *tarFile != "" {
		tarTmp, err = unique(filepath.Dir(*tarFile), "."+filepath.Base(*tarFile)+".afxdp-image-", mkfile)
		if err != nil {
			return fmt.Errorf("--tar %q: %w", *tarFile, err)
		}
		made.add(func() error { return os.RemoveAll(tarTmp) })
		if err := oci.WriteTarball(tarTmp, img, *tag); err != nil {
			return fmt.Errorf("--tar %q: %w", *tarFile, err)
		}
	}
	var bundle *stagedBundle
	if *bundleDir != "" {
		bundle, err = stageBundle(&made, img, *bundleDir, bundleExists, &spec, runArgs)
		if err != nil {
			return err
		}
	}
	// The image last but for the renames: an image added to a layout
	// that was there before is not taken out again.
	if *layoutDir != "" {
		if err := writeLayout(*layoutDir, img, *tag); err != nil {
			return fmt.Errorf("--oci-layout: %w", err)
		}
	}
	if bundle != nil {
		if err := bundle.commit(&made); err != nil {
			return err
		}
	}
	if *tarFile != "" {
		if err := os.Rename(tarTmp, *tarFile); err != nil {
			return fmt.Errorf("--tar %q: %w", *tarFile, err)
		}
	}

	if *layoutDir != "" {
		fmt.Fprintf(stdout, "wrote %s to OCI layout %s\n", digest, *layoutDir)
	}
	if *tarFile != "" {
		fmt.Fprintf(stdout, "wrote %s as %s to %s\n", digest, *tag, *tarFile)
	}
	if *bundleDir != "" {
		fmt.Fprintf(stdout, "unpacked %s into runc bundle %s\n", digest, *bundleDir)
	}
	return nil
}
