package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/afxdp/afxdp/internal/oci"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", bin, "../../internal/oci/testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	layout := filepath.Join(dir, "layout")
	tarFile := filepath.Join(dir, "hello.tar")
	var stdout, stderr bytes.Buffer
	err := run([]string{"--binary", bin, "--entrypoint", "/app/hello", "--tag", "afxdp/hello:t",
		"--oci-layout", layout, "--tar", tarFile, "--label", "a=b", "--user", "1000:1000"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "sha256:") {
		t.Errorf("output %q does not name the digest", stdout.String())
	}
	img, err := oci.Image(layout, "afxdp/hello:t")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Entrypoint[0] != "/app/hello" || cf.Config.User != "1000:1000" || cf.Config.Labels["a"] != "b" {
		t.Errorf("config %+v", cf.Config)
	}
	if fi, err := os.Stat(tarFile); err != nil || fi.Size() == 0 {
		t.Errorf("tarball: %v", err)
	}

	bundle := filepath.Join(dir, "bundle")
	err = run([]string{"--binary", bin, "--bundle", bundle, "--netns", "/var/run/netns/x",
		"--bind", "/tmp:/mnt/tmp", "--run-arg", "sleep"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run --bundle: %v\n%s", err, stderr.String())
	}
	config, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"/hello",`, `"sleep"`, `"/var/run/netns/x"`, `"destination": "/mnt/tmp"`, `"CAP_NET_RAW"`} {
		if !bytes.Contains(config, []byte(want)) {
			t.Errorf("config.json lacks %s", want)
		}
	}
	if fi, err := os.Stat(filepath.Join(bundle, "rootfs", "hello")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("rootfs/hello: %v", err)
	}

	for _, bad := range [][]string{
		{"--binary", bin, "--oci-layout", layout, "--bind", "/a:/b"},
		{"--binary", bin, "--bundle", filepath.Join(dir, "b2"), "--bind", "nocolon"},
		{},
		{"--binary", bin},
		{"--binary", bin, "--tar", tarFile},
		{"--binary", bin, "--oci-layout", layout, "--label", "nokey"},
		{"--binary", bin, "--oci-layout", layout, "--user", "0"},
		{"--binary", bin, "--oci-layout", layout, "extra"},
	} {
		if err := run(bad, &stdout, &stderr); err == nil {
			t.Errorf("run(%q): no error", bad)
		}
	}
}
