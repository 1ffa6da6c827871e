package milter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/listen"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// TestGuardConnTimeouts: a packet that stops after its first bytes is cut
// by the packet timeout; a connection that sends nothing ends cleanly
// (io.EOF) after the idle timeout; go-milter's own, earlier deadline (its
// 1 s for the negotiation) still applies and is reported as a timeout.
func TestGuardConnTimeouts(t *testing.T) {
	const short = 200 * time.Millisecond
	tests := []struct {
		name    string
		lim     limits
		ext     time.Duration // go-milter's deadline, 0: none
		send    []byte
		wantEOF bool
		errSub  string
	}{
		{name: "half a packet", lim: limits{idle: time.Hour, packet: short}, send: append(binary.BigEndian.AppendUint32(nil, 100), "Hhalf"...), errSub: "not received within 200ms"},
		{name: "half a length", lim: limits{idle: time.Hour, packet: short}, send: []byte{0, 0}, errSub: "reading a packet length: not received within"},
		{name: "silence", lim: limits{idle: short, packet: time.Hour}, wantEOF: true},
		{name: "silence before negotiation", lim: limits{idle: time.Hour, packet: time.Hour}, ext: short, errSub: "i/o timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ours, peer := tcpPair(t)
			g := &guardConn{Conn: ours, lim: tc.lim}
			if tc.ext > 0 {
				g.SetReadDeadline(time.Now().Add(tc.ext))
			}
			if len(tc.send) > 0 {
				peer.Write(tc.send)
			}
			start := time.Now()
			_, err := g.Read(make([]byte, 10))
			el := time.Since(start)
			if el < short-20*time.Millisecond || el > 5*time.Second {
				t.Errorf("Read returned after %v, want about %v", el, short)
			}
			if tc.wantEOF {
				if err != io.EOF {
					t.Fatalf("Read: %v, want io.EOF", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errSub) || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read: %v, want a deadline error with %q", err, tc.errSub)
			}
		})
	}
}

// TestGuardConnFreesBigBuffers: a buffer beyond one chunk is dropped after
// its packet, a small one is kept.
func TestGuardConnFreesBigBuffers(t *testing.T) {
	ours, peer := tcpPair(t)
	g := &guardConn{Conn: ours}
	go peer.Write(append(rawPacket('L', strings.Repeat("x", 3*packetChunk)), rawPacket('L', "small\x00v\x00")...))
	buf := make([]byte, 4*packetChunk)
	if _, err := io.ReadFull(g, buf[:4+1+3*packetChunk]); err != nil {
		t.Fatal(err)
	}
	if cap(g.pkt) < 3*packetChunk {
		t.Fatalf("packet buffer %d bytes while serving a %d-byte packet", cap(g.pkt), 3*packetChunk)
	}
	if _, err := io.ReadFull(g, buf[:4+1+8]); err != nil {
		t.Fatal(err)
	}
	if cap(g.pkt) > packetChunk {
		t.Fatalf("the big buffer (%d bytes) was kept for a small packet", cap(g.pkt))
	}
}

// stall opens a milter connection to h, negotiates, and sends the first
// size bytes of a packet announcing 1 MiB; it returns the connection.
func stall(t *testing.T, h *harness, size int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	c.Write(optNeg())
	if code, _, err := readRawPacket(c, br, 5*time.Second); err != nil || code != 'O' {
		t.Fatalf("negotiation: %q, %v", code, err)
	}
	b := append(binary.BigEndian.AppendUint32(nil, maxPacketSize), 'L')
	if _, err := c.Write(append(b, strings.Repeat("s", size)...)); err != nil {
		t.Fatal(err)
	}
	return c, br
}

// waitConns waits until the server tracks n connections in state st.
func waitConns(t *testing.T, s *Server, st listen.State, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.conns.Count(st) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections %v, want %d", s.conns.Count(st), st, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wellBehaved plays one session that must be judged and stamped.
func wellBehaved(t *testing.T, h *harness) {
	t.Helper()
	s := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	s.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	s.helo("client.lab.test")
	mods, act := s.message("a@company-b.example", nil, "Q1")
	wantStamped(t, mods, act)
	s.abort()
}

// TestMilterConnCapEvictsStalledPackets: with the cap full of connections
// stalled in the middle of a packet, an MTA's new connection is served
// and the connection stalled the longest is closed.
func TestMilterConnCapEvictsStalledPackets(t *testing.T) {
	h := startHarness(t, postfixPolicy, func(o *Options) { o.MaxConns = 3 })
	var stalled []net.Conn
	var readers []*bufio.Reader
	for i := range 3 {
		c, br := stall(t, h, 10)
		stalled, readers = append(stalled, c), append(readers, br)
		waitConns(t, h.srv, listen.Reading, i+1)
		time.Sleep(5 * time.Millisecond)
	}
	wellBehaved(t, h)
	expectMilterClosed(t, stalled[0], readers[0])
	stalled[1].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := readers[1].ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a younger stalled connection was closed too: %v", err)
	}
}

// TestMilterBufferBudget: connections that each stop just short of a
// 1 MiB packet cannot make the milter hold more than maxBuffered bytes:
// the ones stalled the longest are closed, and an MTA is still served.
func TestMilterBufferBudget(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	const n = maxBuffered/maxPacketSize + 8
	var conns []net.Conn
	var readers []*bufio.Reader
	for range n {
		c, br := stall(t, h, maxPacketSize-100)
		conns, readers = append(conns, c), append(readers, br)
	}
	// Each stalled connection holds its packet buffer once the bytes have
	// arrived; wait until the server has read them all (or closed them).
	deadline := time.Now().Add(20 * time.Second)
	for h.srv.conns.Count(listen.Reading)+countClosed(conns, readers) < n || h.srv.conns.Held() < maxBuffered/2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d reading, %d closed, %d bytes held", h.srv.conns.Count(listen.Reading), countClosed(conns, readers), h.srv.conns.Held())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if held := h.srv.conns.Held(); held > maxBuffered {
		t.Fatalf("%d bytes held for unfinished packets, budget %d", held, maxBuffered)
	}
	if closed := countClosed(conns, readers); closed < 8 {
		t.Fatalf("%d of %d stalled connections closed, want at least 8", closed, n)
	}
	expectMilterClosed(t, conns[0], readers[0])
	wellBehaved(t, h)
}

// countClosed counts the connections the server has closed.
func countClosed(conns []net.Conn, readers []*bufio.Reader) int {
	n := 0
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := readers[i].Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			n++
		}
	}
	return n
}

// TestLibraryWarningsReachTheLogger: go-milter's own warnings (here about
// an unknown command) go to the server's logger at warning level, quoted
// as a value, not to the standard log package.
func TestLibraryWarningsReachTheLogger(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	c.Write(optNeg())
	if code, _, err := readRawPacket(c, br, 5*time.Second); err != nil || code != 'O' {
		t.Fatalf("negotiation: %q, %v", code, err)
	}
	c.Write(rawPacket('Z', "\x1b[2J"))
	expectMilterClosed(t, c, br)
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, r := range h.log.records() {
			if strings.Contains(r.Msg, "milter: connection problem") && strings.Contains(r.Msg, "Unrecognized command") {
				if r.Level.String() != "WARN" || strings.Contains(r.Msg, "\x1b") {
					t.Fatalf("warning logged as %v %q", r.Level, r.Msg)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("go-milter's warning did not reach the logger: %q", h.log.lines())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
