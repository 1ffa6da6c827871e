package milter

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// pipeListener hands out one connection, then blocks until closed.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// socketPair returns the two ends of a connected unix stream socket pair
// (unlike net.Pipe, each end can close its write side alone).
func socketPair(t *testing.T) (net.Conn, *net.UnixConn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]), conn(fds[1]).(*net.UnixConn)
}

// fuzzSession is a whole Postfix-like milter conversation with TLS macros,
// used as a seed; it leaves out the events the milter negotiates away
// (RCPT, DATA, end of headers, body).
func fuzzSession() []byte {
	var b []byte
	b = append(b, optNeg()...)
	b = append(b, rawPacket('D', "C{client_addr}\x00192.0.2.10\x00{client_name}\x00client.lab.test\x00j\x00mx.lab.test\x00v\x00Postfix 3.7.11\x00")...)
	b = append(b, rawPacket('C', "client.lab.test\x004\x00\x19192.0.2.10\x00")...)
	b = append(b, rawPacket('D', "H{tls_version}\x00TLSv1.3\x00{cipher}\x00TLS_AES_256_GCM_SHA384\x00{cipher_bits}\x00256\x00{cert_subject}\x00client.lab.test\x00{cert_issuer}\x00Lab Test CA\x00")...)
	b = append(b, rawPacket('H', "client.lab.test\x00")...)
	b = append(b, rawPacket('D', "Mi\x00Q1\x00{mail_addr}\x00a@company-b.example\x00")...)
	b = append(b, rawPacket('M', "<a@company-b.example>\x00SIZE=100\x00")...)
	b = append(b, rawPacket('L', "Received\x00from x by mx.lab.test (tlsgate) id 1; date\x00")...)
	b = append(b, rawPacket('L', "Subject\x00hello\x00")...)
	b = append(b, rawPacket('E', "")...)
	b = append(b, rawPacket('A', "")...)
	b = append(b, rawPacket('K', "")...)
	b = append(b, rawPacket('Q', "")...)
	return b
}

// FuzzMilterSession feeds arbitrary bytes, after a valid negotiation, to
// the real milter server (go-milter v0.10.1 behind guardConn) over an
// in-memory connection. A panic anywhere in the server ends the fuzzing
// process, which is what a hostile MTA-side peer must never achieve; the
// session must also end when its input does.
func FuzzMilterSession(f *testing.F) {
	f.Add(fuzzSession())
	f.Add(append(optNeg(), 0, 0, 0, 0))
	f.Add(append(optNeg(), rawPacket('C', "h")...))
	f.Add(append(optNeg(), rawPacket('M', "x")...))
	f.Add(append(optNeg(), rawPacket('D', "")...))
	f.Add(append(optNeg(), rawPacket('D', "L\x00\x00\x00")...))
	f.Add(append(optNeg(), binary.BigEndian.AppendUint32(nil, 0x7FFFFFFF)...))
	pol, err := policy.Parse("fuzz.toml", []byte(postfixPolicy))
	if err != nil {
		f.Fatal(err)
	}
	// go-milter logs every malformed packet; thousands of lines a second
	// would drown the fuzzer's output.
	saved := gomilter.LogWarning
	gomilter.LogWarning = func(string, ...any) {}
	f.Cleanup(func() { gomilter.LogWarning = saved })
	f.Fuzz(func(t *testing.T, input []byte) {
		rawSession(t, pol, input)
	})
}

// rawSession plays input as the MTA side of one milter connection against
// a fresh server and returns what the server sent back. It fails t if the
// session outlives its input.
func rawSession(t *testing.T, pol *policy.Policy, input []byte) []byte {
	srv, err := New(Options{Policy: func() *policy.Policy { return pol }, Logger: slog.New(slog.DiscardHandler), Hostname: "mx.lab.test"})
	if err != nil {
		t.Fatal(err)
	}
	ln := &pipeListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	ours, peer := socketPair(t)
	ln.conns <- ours
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	out := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		out <- b
	}()
	peer.SetWriteDeadline(time.Now().Add(5 * time.Second))
	peer.Write(input) // the server may stop reading early
	peer.CloseWrite()
	got := <-out
	peer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("session did not end with its input: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return got
}

// TestFuzzSessionSeed checks that the main seed is a whole, valid session:
// the milter answers the negotiation, inserts its two headers, removes the
// forged Received line and accepts the message.
func TestFuzzSessionSeed(t *testing.T) {
	pol, err := policy.Parse("fuzz.toml", []byte(postfixPolicy))
	if err != nil {
		t.Fatal(err)
	}
	out := rawSession(t, pol, fuzzSession())
	var codes []byte
	for len(out) >= 5 {
		n := int(binary.BigEndian.Uint32(out))
		if n < 1 || 4+n > len(out) {
			t.Fatalf("bad reply framing: %q", out)
		}
		codes = append(codes, out[4])
		out = out[4+n:]
	}
	if string(codes) != "Ocmiia" {
		t.Fatalf("reply codes %q, want %q (negotiate, continue at MAIL, change header, insert header x2, accept)", codes, "Ocmiia")
	}
}
