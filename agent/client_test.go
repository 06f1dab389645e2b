package agent

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeAgent serves one connection at a socket in a directory of the
// test's: it answers /version after delay, /xsk_map_fd with /fd_nak and
// /fin with /fin_ack, and reports each request it reads on the channel,
// which it closes when the client hangs up.
func fakeAgent(t *testing.T, delay time.Duration) (path string, reqs <-chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
			req, _ := ParseRequest(buf[:n])
			switch req.Op {
			case OpVersion:
				time.Sleep(delay)
				c.Write([]byte(ProtocolVersion))
			case OpXSKMapFD:
				c.Write([]byte(RespFDNak))
			case OpFin:
				c.Write([]byte(RespFinAck))
			}
		}
	}()
	return path, ch
}

// TestClientBrokenAfterTimeout: after a request times out, its late answer
// must not be read as the answer to the next request: the Client refuses
// every later request with an error that matches net.ErrClosed and the
// first failure, sends nothing more, and Close only closes the connection.
func TestClientBrokenAfterTimeout(t *testing.T) {
	path, reqs := fakeAgent(t, 300*time.Millisecond)
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(50 * time.Millisecond)
	if _, err := c.Version(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Version() = %v, want a timeout", err)
	}
	c.SetTimeout(5 * time.Second)
	time.Sleep(500 * time.Millisecond) // the late answer is in
	_, err = c.XSKMapFD("eth0")
	var re *ResponseError
	if !errors.Is(err, net.ErrClosed) || !errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &re) {
		t.Fatalf("XSKMapFD after a timeout = %v, want an error matching net.ErrClosed and the timeout", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close of a broken client: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var got []string
	for r := range reqs { // until the fake agent sees the hang-up
		got = append(got, r)
	}
	if len(got) != 1 || got[0] != ReqVersion {
		t.Errorf("the agent got %q, want only %q", got, ReqVersion)
	}
}

// TestClientBrokenAfterHangup: a send or receive on a connection the agent
// closed breaks the Client too.
func TestClientBrokenAfterHangup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.AcceptUnix(); err == nil {
			c.Close()
		}
	}()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version(); err == nil {
		t.Fatal("Version() on a closed connection succeeded")
	}
	if _, err := c.Version(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Version() = %v, want net.ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
