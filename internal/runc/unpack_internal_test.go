package runc

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestUntarConfined feeds untar archives that mutate.Extract would already
// clean, to check that untar on its own cannot be led out of its directory.
func TestUntarConfined(t *testing.T) {
	outside := t.TempDir()
	type e struct {
		name, link string
		typ        byte
	}
	for _, tc := range []struct {
		name string
		ents []e
	}{
		{"absolute symlink", []e{{"esc", outside, tar.TypeSymlink}, {"esc/pwned", "", tar.TypeReg}}},
		{"relative symlink", []e{{"esc", "../../../../../../../.." + outside, tar.TypeSymlink}, {"esc/pwned", "", tar.TypeReg}}},
		{"dotdot name", []e{{"../../../../../../../.." + outside + "/pwned", "", tar.TypeReg}}},
		{"hard link out", []e{{"h", "../../../../../../etc/hostname", tar.TypeLink}}},
		{"symlink dir then mkdir", []e{{"esc", outside, tar.TypeSymlink}, {"esc/sub/", "", tar.TypeDir}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, x := range tc.ents {
				h := &tar.Header{Name: x.name, Linkname: x.link, Typeflag: x.typ, Mode: 0o644}
				if x.typ == tar.TypeReg {
					h.Size = 1
				}
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if x.typ == tar.TypeReg {
					tw.Write([]byte("x"))
				}
			}
			tw.Close()
			dir := filepath.Join(t.TempDir(), "rootfs")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := untar(&buf, dir); err == nil {
				t.Error("untar: no error")
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("wrote outside the rootfs: %v", ents)
			}
		})
	}
}
