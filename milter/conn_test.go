package milter

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns a bufConn (our side) and the raw peer (the MTA side).
func tcpPair(t *testing.T) (*bufConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		ch <- newBufConn(c)
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ours := (<-ch).(*bufConn)
	t.Cleanup(func() { ours.Close(); peer.Close() })
	return ours, peer
}

// readWithin reads what arrives at c within d.
func readWithin(c net.Conn, d time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestBufConnWritesWaitForABlockingRead(t *testing.T) {
	ours, peer := tcpPair(t)
	for _, s := range []string{"ab", "cd", "ef"} {
		if n, err := ours.Write([]byte(s)); n != 2 || err != nil {
			t.Fatal(n, err)
		}
	}
	if got, err := readWithin(peer, 100*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("peer got %q, %v before our read", got, err)
	}
	// Our read would block: everything goes out in one write first.
	done := make(chan string)
	go func() {
		b := make([]byte, 2)
		_, _ = io.ReadFull(ours, b)
		done <- string(b)
	}()
	if got, err := readWithin(peer, 5*time.Second); got != "abcdef" || err != nil {
		t.Fatalf("peer got %q, %v", got, err)
	}
	if _, err := peer.Write([]byte("xy")); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != "xy" {
		t.Fatalf("we read %q", got)
	}
}

func TestBufConnNoFlushWhileInputIsBuffered(t *testing.T) {
	ours, peer := tcpPair(t)
	if _, err := peer.Write([]byte("123")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(ours, b); err != nil || b[0] != '1' {
		t.Fatal(err, b)
	}
	ours.Write([]byte("answer"))
	if _, err := io.ReadFull(ours, b); err != nil || b[0] != '2' { // buffered: no flush
		t.Fatal(err, b)
	}
	if got, err := readWithin(peer, 100*time.Millisecond); got != "" || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("peer got %q, %v", got, err)
	}
	if _, err := io.ReadFull(ours, b); err != nil || b[0] != '3' {
		t.Fatal(err, b)
	}
	// Buffer empty now: this read flushes, then waits for input.
	go func() { _, _ = ours.Read(b) }()
	if got, err := readWithin(peer, 5*time.Second); got != "answer" || err != nil {
		t.Fatalf("peer got %q, %v", got, err)
	}
}

func TestBufConnCloseFlushes(t *testing.T) {
	ours, peer := tcpPair(t)
	ours.Write([]byte("last words"))
	if err := ours.Close(); err != nil {
		t.Fatal(err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(peer)
	if string(b) != "last words" || err != nil {
		t.Fatalf("peer got %q, %v", b, err)
	}
	if _, err := ours.Write([]byte("x")); err != nil {
		t.Log("write after close:", err) // queued or refused, never a panic
	}
}
