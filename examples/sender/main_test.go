package main

import (
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/afxdp/afxdp/agent"
)

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-dst", "10.1.2.3", "-dev", "net1", "-registration", "agent", "-dst-mac", "02:00:00:00:00:01"})
	if err != nil {
		t.Fatal(err)
	}
	if c.agentPath != "/tmp/afxdp_dp/net1/afxdp.sock" || c.reg != agent.RegisterAgent || c.dst != netip.MustParseAddr("10.1.2.3") ||
		c.dstMAC.String() != "02:00:00:00:00:01" || c.size != 64 || c.frames != 1024 {
		t.Errorf("config %+v", c)
	}
	// Every flag, each with a value of its own, lands in its own field.
	c, err = parseFlags([]string{"-agent", "/run/a.sock", "-pod", "p1", "-dev", "net2", "-queue", "3",
		"-dst", "10.9.8.7", "-dst-port", "1001", "-dst-mac", "02:00:00:00:00:02", "-src-port", "1002",
		"-rate", "1003", "-size", "1004", "-count", "1005", "-frames", "1006", "-registration", "map-fd",
		"-wait", "7s"})
	if err != nil {
		t.Fatal(err)
	}
	want := &config{agentPath: "/run/a.sock", pod: "p1", dev: "net2", queue: 3,
		dst: netip.MustParseAddr("10.9.8.7"), dstPort: 1001, dstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		srcPort: 1002, rate: 1003, size: 1004, count: 1005, frames: 1006, reg: agent.RegisterMapFD,
		wait: 7 * time.Second}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("config\n%+v, want\n%+v", c, want)
	}

	// Each error names the flag at fault and its value: the whole message
	// is compared, so that an error naming another flag fails.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, `-dst "": want an IPv4 address`},
		{[]string{"-dst", "fe80::1"}, `-dst "fe80::1": want an IPv4 address`},
		{[]string{"-dst", "10.0.0.1", "-dst-mac", "xx"}, `-dst-mac "xx": want a 6-byte MAC`},
		{[]string{"-dst", "10.0.0.1", "-registration", "magic"}, `-registration "magic": want auto, map-fd or agent`},
		{[]string{"-dst", "10.0.0.1", "-dst-port", "0"}, "-dst-port 0: must be between 1 and 65535"},
		{[]string{"-dst", "10.0.0.1", "-src-port", "65536"}, "-src-port 65536: must be between 1 and 65535"},
		{[]string{"-dst", "10.0.0.1", "-size", "59"}, "-size 59: must be between 60 and 1514"},
		{[]string{"-dst", "10.0.0.1", "-size", "1515"}, "-size 1515: must be between 60 and 1514"},
		{[]string{"-dst", "10.0.0.1", "-frames", "100"}, "-frames 100: must be at least 128"},
		{[]string{"-dst", "10.0.0.1", "-rate", "-1"}, "-rate -1: must not be negative"},
		{[]string{"-dst", "10.0.0.1", "-count", "-2"}, "-count -2: must not be negative"},
		{[]string{"-dst", "10.0.0.1", "-queue", "-3"}, "-queue -3: must not be negative"},
		{[]string{"-dst", "10.0.0.1", "extra"}, `unexpected arguments ["extra"]`},
	} {
		if _, err := parseFlags(tc.args); err == nil || err.Error() != tc.want {
			t.Errorf("parseFlags(%q) = %v, want %s", tc.args, err, tc.want)
		}
	}
}

// An interface that is not there is named with its flag.
func TestRunNamesMissingDevice(t *testing.T) {
	err := run([]string{"-dst", "10.0.0.1", "-dev", "afxnosuch0"}, io.Discard)
	const want = `-dev "afxnosuch0": `
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("run with a missing -dev: %v, want an error starting %q", err, want)
	}
}

func TestHexAddr(t *testing.T) {
	// /proc/net/route writes addresses in host (little-endian) order.
	for in, want := range map[string]string{"0102000A": "10.0.2.1", "00000000": "0.0.0.0", "00FFFFFF": "255.255.255.0"} {
		got, err := hexAddr(in)
		if err != nil || got.String() != want {
			t.Errorf("hexAddr(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
	if _, err := hexAddr("zz"); err == nil {
		t.Error("hexAddr(zz): no error")
	}
}
