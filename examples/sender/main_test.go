package main

import (
	"net/netip"
	"strings"
	"testing"

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
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-dst"},
		{[]string{"-dst", "fe80::1"}, "-dst"},
		{[]string{"-dst", "10.0.0.1", "-dst-mac", "xx"}, "-dst-mac"},
		{[]string{"-dst", "10.0.0.1", "-registration", "magic"}, "-registration"},
		{[]string{"-dst", "10.0.0.1", "-dst-port", "0"}, "-dst-port"},
		{[]string{"-dst", "10.0.0.1", "-size", "59"}, "-size"},
		{[]string{"-dst", "10.0.0.1", "-size", "1515"}, "-size"},
		{[]string{"-dst", "10.0.0.1", "-frames", "100"}, "-frames"},
		{[]string{"-dst", "10.0.0.1", "-rate", "-1"}, "-rate"},
		{[]string{"-dst", "10.0.0.1", "extra"}, "unexpected"},
	} {
		if _, err := parseFlags(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFlags(%q) = %v, want an error naming %s", tc.args, err, tc.want)
		}
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
