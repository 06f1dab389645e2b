package agent

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// ownedFD is a descriptor a test owns: close closes it at most once, and
// cleanup closes it unless the test did. A descriptor closed behind its
// owner's back fails the test at cleanup rather than being closed again: by
// then its number may name a file that another goroutine opened.
type ownedFD struct{ fd int }

func ownFD(t *testing.T, fd int) *ownedFD {
	o := &ownedFD{fd: fd}
	t.Cleanup(func() {
		if o.fd < 0 {
			return
		}
		if _, err := unix.FcntlInt(uintptr(o.fd), unix.F_GETFD, 0); err != nil {
			t.Errorf("descriptor %d closed behind its owner's back: %v", o.fd, err)
			return
		}
		o.close()
	})
	return o
}

func (o *ownedFD) close() {
	if o.fd >= 0 {
		unix.Close(o.fd)
		o.fd = -1
	}
}

// TestDrainClosesQueued: drain must read everything queued on a socket shut
// for reading and close the descriptors that came with it, since what it
// leaves is dropped by the close that follows, in the closing thread (see
// hangUp). It used to stop early at two things that look like the end: an
// empty datagram, and the reset reported once when the peer closed with
// data of ours unread.
func TestDrainClosesQueued(t *testing.T) {
	seqpacket := func(t *testing.T) [2]*ownedFD {
		t.Helper()
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return [2]*ownedFD{ownFD(t, sp[0]), ownFD(t, sp[1])}
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
		queue func(t *testing.T, server int, client *ownedFD, fd int)
	}{
		{"empty_datagram", func(t *testing.T, server int, client *ownedFD, fd int) {
			send(t, client.fd, "")
			send(t, client.fd, ReqVersion, fd)
		}},
		{"reset", func(t *testing.T, server int, client *ownedFD, fd int) {
			send(t, server, ProtocolVersion) // an answer the client leaves unread
			send(t, client.fd, ReqVersion, fd)
			client.close() // ECONNRESET for the server's next read
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := seqpacket(t)
			server, client := conn[0].fd, conn[1]
			// The descriptor sent: one end of a pair, whose other end reads
			// the end of the stream once every copy of it is closed.
			probe := seqpacket(t)
			tc.queue(t, server, client, probe[0].fd)
			probe[0].close() // the queued copy is the last
			unix.Shutdown(server, unix.SHUT_RD)
			drain(server, nil)
			n, _, err := unix.Recvfrom(probe[1].fd, make([]byte, 1), unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) || err == nil && n > 0 {
				t.Fatal("drain left a descriptor queued")
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
