package runc_test

import (
	"context"
	"fmt"
	"log"

	"github.com/afxdp/afxdp/internal/runc"
)

// Run an image from an OCI layout (made by cmd/afxdp-image) inside the named
// network namespace "c1", with CAP_NET_RAW only.
func Example() {
	b, err := runc.Unpack("/tmp/sender-oci", "afxdp/sender:dev", "/tmp/sender-bundle")
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	if err := b.WriteConfig(&runc.SpecOptions{NetnsPath: "/var/run/netns/c1"}); err != nil {
		log.Fatal(err)
	}
	res, err := runc.Run(context.Background(), b.Dir, nil)
	if err != nil {
		log.Fatalf("%v\n%s", err, res.Stderr)
	}
	fmt.Printf("%s", res.Stdout)
}
