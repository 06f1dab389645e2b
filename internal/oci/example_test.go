package oci_test

import (
	"log"

	"github.com/afxdp/afxdp/internal/oci"
)

// Package a static binary as an image, both as an OCI layout and as a
// tarball for docker load.
func Example() {
	img, err := oci.Build(&oci.Options{Binary: "/tmp/sender", Entrypoint: "/sender"})
	if err != nil {
		log.Fatal(err)
	}
	if err := oci.WriteLayout("/tmp/sender-oci", img, "afxdp/sender:dev"); err != nil {
		log.Fatal(err)
	}
	if err := oci.WriteTarball("/tmp/sender.tar", img, "afxdp/sender:dev"); err != nil {
		log.Fatal(err)
	}
}
