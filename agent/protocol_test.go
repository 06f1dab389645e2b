package agent

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Request
		wantErr bool // the Op of want is still expected
	}{
		// The plugin's Go client writes ", "; DPDK writes ",".
		{in: "/connect, pod-1", want: Request{Op: OpConnect, Pod: "pod-1"}},
		{in: "/connect,pod-1", want: Request{Op: OpConnect, Pod: "pod-1"}},
		{in: "/connect ,  my.pod_2 ", want: Request{Op: OpConnect, Pod: "my.pod_2"}},
		{in: "/connect, pod\x00\x00", want: Request{Op: OpConnect, Pod: "pod"}},
		{in: "/connect", want: Request{Op: OpConnect}, wantErr: true},
		{in: "/connect, ", want: Request{Op: OpConnect}, wantErr: true},
		{in: "/connect, a, b", want: Request{Op: OpConnect}, wantErr: true},
		{in: "/connect, my pod", want: Request{Op: OpConnect}, wantErr: true},
		{in: "/connect, ../x", want: Request{Op: OpConnect}, wantErr: true},
		{in: "/connect, ..", want: Request{Op: OpConnect}, wantErr: true},
		{in: "/connect, " + strings.Repeat("p", 64), want: Request{Op: OpConnect}, wantErr: true},
		{in: "/connect, " + strings.Repeat("p", 63), want: Request{Op: OpConnect, Pod: strings.Repeat("p", 63)}},
		{in: "/version", want: Request{Op: OpVersion}},
		{in: " /version ", want: Request{Op: OpVersion}},
		{in: "/version, 1", want: Request{Op: OpVersion}, wantErr: true},
		{in: "/fin", want: Request{Op: OpFin}},
		{in: "/fin,", want: Request{Op: OpFin}, wantErr: true},
		{in: "/xsk_map_fd, eth0", want: Request{Op: OpXSKMapFD, Device: "eth0"}},
		{in: "/xsk_map_fd,eth0.100", want: Request{Op: OpXSKMapFD, Device: "eth0.100"}},
		{in: "/xsk_map_fd", want: Request{Op: OpXSKMapFD}, wantErr: true},
		{in: "/xsk_map_fd, eth/0", want: Request{Op: OpXSKMapFD}, wantErr: true},
		{in: "/config_busy_poll, 20, 64", want: Request{Op: OpConfigBusyPoll, Timeout: 20, Budget: 64}},
		{in: "/config_busy_poll,0,0", want: Request{Op: OpConfigBusyPoll}},
		{in: "/config_busy_poll, 1000000, 65535", want: Request{Op: OpConfigBusyPoll, Timeout: 1000000, Budget: 65535}},
		{in: "/config_busy_poll, 1000001, 1", want: Request{Op: OpConfigBusyPoll}, wantErr: true},
		{in: "/config_busy_poll, 1, 65536", want: Request{Op: OpConfigBusyPoll}, wantErr: true},
		{in: "/config_busy_poll, -1, 1", want: Request{Op: OpConfigBusyPoll}, wantErr: true},
		{in: "/config_busy_poll, +1, 1", want: Request{Op: OpConfigBusyPoll}, wantErr: true},
		{in: "/config_busy_poll, 0x10, 1", want: Request{Op: OpConfigBusyPoll}, wantErr: true},
		{in: "/config_busy_poll, 99999999999, 1", want: Request{Op: OpConfigBusyPoll}, wantErr: true},
		{in: "/config_busy_poll, 20", want: Request{Op: OpConfigBusyPoll}, wantErr: true},
		{in: "/xsk_register, eth0, 3", want: Request{Op: OpXSKRegister, Device: "eth0", Queue: 3}},
		{in: "/xsk_register, eth0, 4096", want: Request{Op: OpXSKRegister}, wantErr: true},
		{in: "/xsk_register, eth0", want: Request{Op: OpXSKRegister}, wantErr: true},
		{in: "", wantErr: true},
		{in: "\x00", wantErr: true},
		{in: "garbage", wantErr: true},
		{in: "/connectx, pod", wantErr: true},
		{in: "/CONNECT, pod", wantErr: true},
		{in: "/host_ok", wantErr: true},
		{in: ",,,", wantErr: true},
	} {
		got, err := ParseRequest([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseRequest(%q) error %v, want error %v", tc.in, err, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("ParseRequest(%q) error %v does not match ErrBadRequest", tc.in, err)
		}
		if tc.wantErr {
			if got.Op != tc.want.Op {
				t.Errorf("ParseRequest(%q) op %v, want %v", tc.in, got.Op, tc.want.Op)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseRequest(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Op: OpConnect, Pod: "pod-1"}, "/connect, pod-1"},
		{Request{Op: OpVersion}, "/version"},
		{Request{Op: OpFin}, "/fin"},
		{Request{Op: OpXSKMapFD, Device: "eth0"}, "/xsk_map_fd, eth0"},
		{Request{Op: OpConfigBusyPoll, Timeout: 20, Budget: 64}, "/config_busy_poll, 20, 64"},
		{Request{Op: OpXSKRegister, Device: "veth1", Queue: 2}, "/xsk_register, veth1, 2"},
	} {
		b, err := tc.req.Encode()
		if err != nil {
			t.Errorf("Encode(%+v): %v", tc.req, err)
			continue
		}
		if string(b) != tc.want {
			t.Errorf("Encode(%+v) = %q, want %q", tc.req, b, tc.want)
		}
		back, err := ParseRequest(b)
		if err != nil || back != tc.req {
			t.Errorf("ParseRequest(Encode(%+v)) = %+v, %v", tc.req, back, err)
		}
	}
	for _, bad := range []Request{
		{},
		{Op: OpConnect},
		{Op: OpConnect, Pod: "a,b"},
		{Op: OpXSKMapFD, Device: "a b"},
		{Op: OpConfigBusyPoll, Timeout: -1},
		{Op: OpXSKRegister, Device: "eth0", Queue: MaxQueue + 1},
		{Op: Op(99)},
		// What ParseRequest would trim, so that the server would see
		// another name than the one asked for.
		{Op: OpConnect, Pod: "pod "},
		{Op: OpConnect, Pod: " pod"},
		{Op: OpConnect, Pod: "pod\x00"},
		{Op: OpXSKMapFD, Device: "eth0\n"},
		{Op: OpXSKRegister, Device: "\teth0", Queue: 1},
	} {
		if b, err := bad.Encode(); err == nil {
			t.Errorf("Encode(%+v) = %q, want error", bad, b)
		}
	}
}

func TestOpString(t *testing.T) {
	if got := OpXSKRegister.String(); got != ReqXSKRegister {
		t.Errorf("OpXSKRegister.String() = %q", got)
	}
	if got := Op(42).String(); got != "Op(42)" {
		t.Errorf("Op(42).String() = %q", got)
	}
	if !OpConfigBusyPoll.WantsFD() || !OpXSKRegister.WantsFD() || OpXSKMapFD.WantsFD() {
		t.Error("WantsFD wrong")
	}
}

// FuzzParseRequest checks that no input panics, that every accepted request
// encodes back to one that parses the same, and that errors match
// ErrBadRequest.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"/connect, pod", "/connect,pod", "/version", "/fin", "/xsk_map_fd, eth0",
		"/config_busy_poll, 20, 64", "/xsk_register, eth0, 1", "", "\x00", ",,", "/nak",
		"/config_busy_poll, 99999999999999999999, 1", strings.Repeat("/", 300),
		// Framing a hostile client tried: several requests in one
		// message, trailing padding, a request split in two.
		"/connect, pod\n/version", "/version\x00/fin", "/version\n", "/version\x00\x00",
		"/conn", "ect, pod", "/xsk_register, eth0, 0\x00\x00, 1", "/config_busy_poll, 1, 1 ,",
		"/version" + strings.Repeat(" ", DefaultMaxMessageSize-len("/version")+1),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not match ErrBadRequest", err)
			}
			return
		}
		enc, err := req.Encode()
		if err != nil {
			t.Fatalf("accepted %q as %+v but Encode fails: %v", b, req, err)
		}
		again, err := ParseRequest(enc)
		if err != nil || again != req {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", b, req, enc, again, err)
		}
	})
}
