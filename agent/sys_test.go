package agent

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDrainClosesQueued: drain must read everything queued on a socket shut
// for reading and close the descriptors that came with it, since what it
// leaves is dropped by the close that follows, in the closing thread (see
// hangUp). It used to stop early at two things that look like the end: an
// empty datagram, and the reset reported once when the peer closed with
// data of ours unread.
func TestDrainClosesQueued(t *testing.T) {
	seqpacket := func(t *testing.T) [2]int {
		t.Helper()
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
		return sp
	}
	send := func(t *testing.T, fd int, msg string, fds ...int) {
		t.Helper()
		var oob []byte
		if len(fds) > 0 {
			oob = unix.UnixRights(fds...)
		}
		if err := unix.Sendmsg(fd, []byte(msg), oob, nil, 0); err != nil {
			t.Fatalf("send %q: %v", msg, err)
		}
	}
	for _, tc := range []struct {
		name  string
		queue func(t *testing.T, server, client, fd int)
	}{
		{"empty_datagram", func(t *testing.T, server, client, fd int) {
			send(t, client, "")
			send(t, client, ReqVersion, fd)
		}},
		{"reset", func(t *testing.T, server, client, fd int) {
			send(t, server, ProtocolVersion) // an answer the client leaves unread
			send(t, client, ReqVersion, fd)
			unix.Close(client) // ECONNRESET for the server's next read
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := seqpacket(t)
			server, client := conn[0], conn[1]
			// The descriptor sent: one end of a pair, whose other end reads
			// the end of the stream once every copy of it is closed.
			probe := seqpacket(t)
			sent, err := unix.Dup(probe[0])
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(probe[0])
			tc.queue(t, server, client, sent)
			unix.Close(sent) // the queued copy is the last
			unix.Shutdown(server, unix.SHUT_RD)
			drain(server, nil)
			n, _, err := unix.Recvfrom(probe[1], make([]byte, 1), unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) || err == nil && n > 0 {
				t.Fatal("drain left a descriptor queued")
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
