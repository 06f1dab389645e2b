package matrix

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/afxdp/afxdp/internal/testenv"
)

// TestBuildFailureLeavesNothing makes the second CNI ADD of a topology
// fail after the real plugin has done its work (a link made, an address
// taken from the IPAM store), and checks that the build reports it and
// removes everything: the first attachment, the namespaces, the IPAM
// stores, and no plugin process left running.
func TestBuildFailureLeavesNothing(t *testing.T) {
	testenv.RequirePrivileged(t)
	for _, p := range []string{"ptp", "bridge", "macvlan", "host-local"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			if os.Getenv(testenv.RequireEnv) == "1" {
				t.Fatalf("CNI plugins missing (containernetworking-plugins): %v", err)
			}
			t.Skipf("CNI plugins missing: %v", err)
		}
	}
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err == nil {
		c.Close()
	}
	for _, tn := range []string{"ptp", "bridge", "macvlan"} {
		t.Run(tn, func(t *testing.T) {
			plugin := pluginsFor[tn][0]
			dir := t.TempDir()
			// The plugin's second ADD runs the real one, then says it
			// failed; every DEL is the real one's.
			script := "#!/bin/sh\n" +
				"if [ \"$CNI_COMMAND\" = ADD ]; then\n" +
				"  n=$(cat " + dir + "/adds 2>/dev/null || echo 0); n=$((n+1)); echo $n >" + dir + "/adds\n" +
				"  if [ $n -ge 2 ]; then\n" +
				"    /usr/lib/cni/" + plugin + " >/dev/null || exit 1\n" +
				"    echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"injected failure\"}'; exit 1\n" +
				"  fi\n" +
				"fi\n" +
				"exec /usr/lib/cni/" + plugin + "\n"
			if err := os.WriteFile(filepath.Join(dir, plugin), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/usr/lib/cni/host-local", filepath.Join(dir, "host-local")); err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			before := testenv.Snapshot(t)
			rootLinks := testenv.LinkNames(t)

			tp, err := build(context.Background(), tn, dir)
			if err == nil {
				tp.Close()
				t.Fatal("build succeeded through a failed ADD")
			}
			if !strings.Contains(err.Error(), "injected failure") {
				t.Errorf("build error does not carry the plugin's: %v", err)
			}
			var te *teardownError
			if errors.As(err, &te) {
				t.Errorf("tearing down the half-built topology failed: %v", te)
			}
			if adds, _ := os.ReadFile(filepath.Join(dir, "adds")); strings.TrimSpace(string(adds)) != "2" {
				t.Fatalf("the plugin's ADD ran %q times, want 2", adds)
			}
			checkNothingLeft(t, before, rootLinks, nil)
			if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
				t.Errorf("left in TMPDIR: %v", ents)
			}
		})
	}
}

// TestMissingIPAMPluginNamed: a topology whose plugin is installed but
// whose IPAM plugin (host-local) is not is unavailable, and the reason
// names host-local, not the plugin that is there.
func TestMissingIPAMPluginNamed(t *testing.T) {
	testenv.RequirePrivileged(t)
	if _, err := os.Stat("/usr/lib/cni/ptp"); err != nil {
		if os.Getenv(testenv.RequireEnv) == "1" {
			t.Fatalf("CNI plugins missing (containernetworking-plugins): %v", err)
		}
		t.Skipf("CNI plugins missing: %v", err)
	}
	dir := t.TempDir()
	if err := os.Symlink("/usr/lib/cni/ptp", filepath.Join(dir, "ptp")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", t.TempDir())
	tp, err := build(context.Background(), "ptp", dir)
	if err == nil {
		tp.Close()
		t.Fatal("built ptp without host-local")
	}
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("build without host-local: %v; want the topology unavailable", err)
	}
	if !strings.Contains(ue.Reason, "CNI plugin host-local not installed") {
		t.Errorf("reason %q; want it to name host-local", ue.Reason)
	}
}
