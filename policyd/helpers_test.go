package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/listen"
)

// logBuf collects log output of a server under test.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor polls until s contains sub or fails the test after 5 s.
func (l *logBuf) waitFor(t *testing.T, sub string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(l.String(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("log does not contain %q; log:\n%s", sub, l.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// listenTest opens a listener of the given kind ("unix" or "tcp") for a test.
func listenTest(t testing.TB, kind string) (net.Listener, string) {
	t.Helper()
	var spec string
	switch kind {
	case "unix":
		spec = "unix:" + filepath.Join(shortTempDir(t), "s.sock")
	case "tcp":
		spec = "inet:127.0.0.1:0"
	default:
		t.Fatalf("bad kind %q", kind)
	}
	l, err := listen.Open(spec, 0o600, "")
	if err != nil {
		t.Fatal(err)
	}
	if kind == "tcp" {
		spec = "inet:" + l.Addr().String()
	}
	return l, spec
}

// serveTest runs serve on l until the test ends and checks that it returns
// ErrServerClosed.
func serveTest(t testing.TB, serve func(net.Listener) error, closeFn func() error, l net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- serve(l) }()
	t.Cleanup(func() {
		closeFn()
		select {
		case err := <-done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
}

// startSocketmap starts a socketmap server on a fresh listener of the given kind.
func startSocketmap(t testing.TB, kind string, opts SocketmapOptions) (*SocketmapServer, string) {
	t.Helper()
	s, err := NewSocketmapServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, spec := listenTest(t, kind)
	serveTest(t, s.Serve, s.Close, l)
	return s, spec
}

// dialSpec opens a raw connection to a listener spec.
func dialSpec(t testing.TB, spec string) net.Conn {
	t.Helper()
	network, addr, err := parseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialClient opens a SocketmapClient to spec.
func dialClient(t testing.TB, spec string) *SocketmapClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialSocketmap(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// lookupOK performs one lookup and fails the test on a transport error.
func lookupOK(t testing.TB, c *SocketmapClient, name, key string) Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Lookup(ctx, name, key)
	if err != nil {
		t.Fatalf("Lookup(%q, %q): %v", name, key, err)
	}
	return r
}

// readRaw reads one netstring reply from a raw connection with a deadline. It returns
// io.EOF (or another error) if the server closed the connection instead.
func readRaw(c net.Conn, br *bufio.Reader, d time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(d))
	p, err := ReadNetstring(br, 1<<20)
	return string(p), err
}

// expectClosed checks that the server closes c (EOF or reset) within d, without sending
// anything.
func expectClosed(t testing.TB, c net.Conn, br *bufio.Reader, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	b, err := br.ReadByte()
	if err == nil {
		rest, _ := io.ReadAll(io.LimitReader(br, 200))
		t.Fatalf("server sent %q, want close without reply", append([]byte{b}, rest...))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server did not close the connection within %v", d)
	}
}

// testLookuper is the Lookuper of the server tests: the key chooses the answer.
func testLookuper(ctx context.Context, name, key string) Reply {
	switch {
	case name != "tlspolicy":
		return Reply{Status: StatusPerm, Data: "unknown map " + name}
	case key == "found.example":
		return Reply{Status: StatusOK, Data: "secure match=mx.found.example"}
	case key == "temp.example":
		return Reply{Status: StatusTemp, Data: "try later"}
	case key == "timeout.example":
		return Reply{Status: StatusTimeout, Data: "too slow"}
	case key == "perm.example":
		return Reply{Status: StatusPerm, Data: "broken"}
	case key == "panic.example":
		panic("boom")
	case key == "emptyok.example":
		return Reply{Status: StatusOK}
	case key == "badstatus.example":
		return Reply{Status: 42, Data: "x"}
	case key == "nul.example":
		return Reply{Status: StatusOK, Data: "secure\x00 match=evil"}
	case key == "zero.example":
		return Reply{}
	case strings.HasPrefix(key, "hex:"):
		return Reply{Status: StatusOK, Data: fmt.Sprintf("%x", key[len("hex:"):])}
	case strings.HasPrefix(key, "echo:"):
		return Reply{Status: StatusOK, Data: key}
	case strings.HasPrefix(key, "big:"):
		return Reply{Status: StatusOK, Data: strings.Repeat("x", bigReplySize(key))}
	}
	return Reply{Status: StatusNotFound}
}

// bigReplySize decodes "big:N" keys.
func bigReplySize(key string) int {
	n := 0
	for _, c := range key[len("big:"):] {
		n = n*10 + int(c-'0')
	}
	return n
}

// ns encodes a payload as a netstring.
func ns(payload string) []byte { return AppendNetstring(nil, []byte(payload)) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
