package policyd

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/listen"
)

// TestSocketmapSlowSendersCannotHoldTheCap: connections that hold the
// connection cap with unfinished requests (slowloris) do not make the
// server refuse everyone else until their read timeout: a new connection
// evicts the one that has been sending its request for the longest time.
func TestSocketmapSlowSendersCannotHoldTheCap(t *testing.T) {
	var logs logBuf
	s, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: LookupFunc(testLookuper), MaxConns: 3, Logger: logs.logger()})
	var slow []slowConn
	for i := range 3 {
		c := dialSpec(t, spec)
		c.Write([]byte("9000:tlspolicy " + strings.Repeat("s", 100)))
		slow = append(slow, slowConn{c, bufio.NewReader(c)})
		// The server stamps a connection reading when it has handled its
		// bytes, not at accept: wait for that, so the first one is the slowest.
		waitReading(t, s.srv, i+1)
		time.Sleep(10 * time.Millisecond)
	}
	good := dialClient(t, spec)
	if r := lookupOK(t, good, "tlspolicy", "found.example"); r.Status != StatusOK {
		t.Fatalf("new client at the cap: %+v", r)
	}
	expectClosed(t, slow[0].c, slow[0].br, 5*time.Second)
	logs.waitFor(t, "requests arriving slowly")
	// The others keep their place and may still finish their requests.
	rest := "," // complete the netstring of slow[1] below: 9000 bytes in all
	slow[1].c.Write([]byte(strings.Repeat("s", 9000-len("tlspolicy ")-100) + rest))
	if got, err := readRaw(slow[1].c, slow[1].br, 5*time.Second); err != nil || got != "NOTFOUND " {
		t.Fatalf("slow client that finished: %q, %v", got, err)
	}
}

// TestDelegationSlowSendersCannotHoldTheCap is the same for policy
// delegation: requests without their blank line hold the cap until a new
// connection evicts the slowest.
func TestDelegationSlowSendersCannotHoldTheCap(t *testing.T) {
	var logs logBuf
	s, spec := startDelegation(t, "unix", DelegationOptions{Decider: &testDecider{}, MaxConns: 2, Logger: logs.logger()})
	var slow []slowConn
	for i := range 2 {
		c := dialSpec(t, spec)
		c.Write([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\n"))
		slow = append(slow, slowConn{c, bufio.NewReader(c)})
		waitReading(t, s.srv, i+1)
		time.Sleep(10 * time.Millisecond)
	}
	good := dialSpec(t, spec)
	good.Write([]byte(postfixRequest))
	if got, err := readAction(good, bufio.NewReader(good)); err != nil || got != "action=DUNNO\n" {
		t.Fatalf("new client at the cap: %q, %v", got, err)
	}
	expectClosed(t, slow[0].c, slow[0].br, 5*time.Second)
	logs.waitFor(t, "requests arriving slowly")
}

// slowConn is a raw connection with its reader.
type slowConn struct {
	c  net.Conn
	br *bufio.Reader
}

// waitReading waits until n connections wait for the rest of a request.
func waitReading(t *testing.T, s *server, n int) {
	t.Helper()
	waitState(t, s, listen.Reading, n)
}

// waitIdle waits until n connections wait for their next request.
func waitIdle(t *testing.T, s *server, n int) {
	t.Helper()
	waitState(t, s, listen.Idle, n)
}

// waitState waits until n connections are in state st.
func waitState(t *testing.T, s *server, st listen.State, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		k := s.conns.Count(st)
		if k == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections %v, want %d", k, st, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
