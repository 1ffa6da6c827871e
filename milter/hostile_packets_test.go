package milter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// rawPacket frames one milter packet: 4-byte big-endian length, command
// byte, data.
func rawPacket(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(data)))
	b = append(b, code)
	return append(b, data...)
}

// optNeg is an MTA's negotiation packet: version 6, every action, every
// protocol flag of version 6.
func optNeg() []byte {
	d := binary.BigEndian.AppendUint32(nil, 6)
	d = binary.BigEndian.AppendUint32(d, 0x1FF)
	d = binary.BigEndian.AppendUint32(d, 0x1FFFFF)
	return rawPacket('O', string(d))
}

// readRawPacket reads one packet within d.
func readRawPacket(c net.Conn, br *bufio.Reader, d time.Duration) (byte, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 1<<20 {
		return 0, nil, errors.New("bad reply length")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return 0, nil, err
	}
	return b[0], b[1:], nil
}

// expectMilterClosed waits until the server closes c (EOF or reset),
// discarding any reply.
func expectMilterClosed(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection not closed by the milter: %v", err)
	}
}

// TestHostilePackets sends malformed and oversized packets, each on its own
// connection. go-milter v0.10.1 panics (ending the process) on several of
// them and allocates the announced length of the oversized ones; the guard
// closes the connection instead, and the milter keeps serving sessions.
func TestHostilePackets(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	tests := []struct {
		name      string
		negotiate bool   // send a valid OPTNEG first
		send      []byte // then this
		closeW    bool   // and close the write side
	}{
		{name: "zero length before negotiation", send: []byte{0, 0, 0, 0}},
		{name: "zero length after negotiation", negotiate: true, send: []byte{0, 0, 0, 0}},
		{name: "length 1 GB", negotiate: true, send: []byte{0x40, 0, 0, 0, 'C'}},
		{name: "length 512 MB - 1", negotiate: true, send: []byte{0x1F, 0xFF, 0xFF, 0xFF, 'B', 'x'}},
		{name: "length 0xFFFFFFFF", send: []byte{0xFF, 0xFF, 0xFF, 0xFF}},
		{name: "one byte over the limit", negotiate: true, send: binary.BigEndian.AppendUint32(nil, maxPacketSize+1)},
		{name: "connect without NUL", negotiate: true, send: rawPacket('C', "host.example")},
		{name: "connect without family", negotiate: true, send: rawPacket('C', "host.example\x00")},
		{name: "connect empty", negotiate: true, send: rawPacket('C', "")},
		{name: "MAIL without NUL", negotiate: true, send: append(rawPacket('C', "h\x004\x00\x19192.0.2.1\x00"), rawPacket('M', "<a@example>")...)},
		{name: "RCPT without NUL", negotiate: true, send: append(rawPacket('C', "h\x004\x00\x19192.0.2.1\x00"), rawPacket('R', "<b@example>")...)},
		{name: "unknown command", negotiate: true, send: rawPacket('Z', "whatever")},
		{name: "second OPTNEG", negotiate: true, send: optNeg()},
		{name: "truncated length then EOF", negotiate: true, send: []byte{0, 0}, closeW: true},
		{name: "truncated packet then EOF", negotiate: true, send: []byte{0, 0, 0, 100, 'H', 'x'}, closeW: true},
		{name: "garbage instead of OPTNEG", send: []byte("GET / HTTP/1.0\r\n\r\n")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if tc.negotiate {
				if _, err := c.Write(optNeg()); err != nil {
					t.Fatal(err)
				}
				if code, _, err := readRawPacket(c, br, 5*time.Second); err != nil || code != 'O' {
					t.Fatalf("negotiation reply %q, %v", code, err)
				}
			}
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.closeW {
				c.(*net.TCPConn).CloseWrite()
			}
			expectMilterClosed(t, c, br)
			// The milter still judges and stamps a well-behaved session.
			wellBehaved(t, h)
		})
	}
}

// TestGuardConnMemory: a packet that announces 1 MiB and sends 10 bytes
// costs one buffer chunk, not the announced length.
func TestGuardConnMemory(t *testing.T) {
	ours, peer := net.Pipe()
	defer peer.Close()
	g := &guardConn{Conn: ours}
	go func() {
		peer.Write(append(binary.BigEndian.AppendUint32(nil, maxPacketSize), "B123456789"...))
		peer.Close()
	}()
	_, err := g.Read(make([]byte, 4))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if cap(g.pkt) > 4+packetChunk {
		t.Fatalf("packet buffer grew to %d bytes for 10 bytes received", cap(g.pkt))
	}
}

// TestGuardConnPassesPackets: whole packets, also ones longer than a
// buffer chunk and split across reads, reach the reader byte for byte.
func TestGuardConnPassesPackets(t *testing.T) {
	ours, peer := net.Pipe()
	defer peer.Close()
	g := &guardConn{Conn: ours}
	big := strings.Repeat("b", 3*packetChunk+5)
	want := append(append(optNeg(), rawPacket('B', big)...), rawPacket('H', "helo.example\x00")...)
	go func() {
		for i := 0; i < len(want); i += 1000 {
			peer.Write(want[i:min(i+1000, len(want))])
		}
		peer.Close()
	}()
	got, err := io.ReadAll(g)
	if err != nil || string(got) != string(want) {
		t.Fatalf("read %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
}

// TestGuardedServerSurvivesEMFILE runs the real server on a listener that
// runs out of descriptors: Serve keeps going and serves the next session.
func TestGuardedServerSurvivesEMFILE(t *testing.T) {
	srv, err := New(Options{Policy: func() *policy.Policy { return mustPolicy(t, postfixPolicy) }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &emfileOnce{Listener: ln}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(fl) }()
	defer func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	cl := gomilter.NewClient("tcp", ln.Addr().String())
	cs, err := cl.Session(nil)
	if err != nil {
		t.Fatalf("session after EMFILE: %v", err)
	}
	defer cs.Close()
	if act, err := cs.Conn("client.lab.test", gomilter.FamilyInet, 4000, "192.0.2.10"); err != nil || act.Type != gomilter.ActionContinue {
		t.Fatalf("connect: %v %v", act, err)
	}
}

// emfileOnce fails the first Accept with EMFILE.
type emfileOnce struct {
	net.Listener
	failed atomic.Bool
}

func (l *emfileOnce) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}
