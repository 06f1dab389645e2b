package baseline

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/afxdp/afxdp/internal/testenv"
)

// TestCloseReportsOnce makes the Close of a UDP receiver and a sender
// fail for real (their sockets closed behind their backs): of Closes
// called at the same time one reports it, the others return nil once it
// is done, and so does a Close after them. The AF_PACKET ones close
// through the same counters.closeOnce.
func TestCloseReportsOnce(t *testing.T) {
	r, err := NewUDPReceiver(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewUDPSender(netip.AddrPort{}, r.Addr(), nil)
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		conn *net.UDPConn
		fn   func() error
	}{{"UDPReceiver", r.conn, r.Close}, {"UDPSender", s.conn, s.Close}} {
		if err := c.conn.Close(); err != nil {
			t.Fatal(err)
		}
		if err := testenv.FailsOnce(t, c.name+".Close", 8, c.fn); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s.Close of a closed socket: %v; want net.ErrClosed", c.name, err)
		}
	}
}
