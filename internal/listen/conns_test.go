package listen

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// pipeConn is one end of a net.Pipe whose closing is observable.
type pipeConn struct {
	net.Conn
	closed atomic.Bool
}

func (p *pipeConn) Close() error {
	p.closed.Store(true)
	return p.Conn.Close()
}

func newPipe(t *testing.T) *pipeConn {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &pipeConn{Conn: a}
}

// TestConnsEviction: at the cap a new connection closes the slowest
// sender first, then the longest-idle connection; when every connection
// is active it is closed itself.
func TestConnsEviction(t *testing.T) {
	var logs bytes.Buffer // Admit logs in the caller's goroutine
	cs := NewConns(ConnsOptions{Name: "test", MaxConns: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	p := []*pipeConn{newPipe(t), newPipe(t), newPipe(t)}
	var c []*Conn
	for _, pc := range p {
		c = append(c, cs.Admit(pc))
	}
	// c0 idle for longest, c1 idle, c2 reading.
	if !c[0].Wait() {
		t.Fatal("Wait on a new connection failed")
	}
	time.Sleep(time.Millisecond)
	c[1].Wait()
	c[2].Wait()
	if !c[2].Begin(false) || c[2].State() != Reading {
		t.Fatalf("Begin(false): state %v", c[2].State())
	}
	p3 := newPipe(t)
	if cs.Admit(p3) == nil {
		t.Fatal("a new connection was refused while one was reading slowly")
	}
	if !p[2].closed.Load() || c[2].State() != Closed || c[2].Done() {
		t.Fatalf("the slow sender was not closed first (state %v)", c[2].State())
	}
	if p[0].closed.Load() || p[1].closed.Load() {
		t.Fatal("an idle connection was closed while a slow sender was there")
	}
	if cs.Admit(newPipe(t)) == nil || !p[0].closed.Load() || p[1].closed.Load() {
		t.Fatal("the longest-idle connection was not the one closed")
	}
	if cs.Admit(newPipe(t)) == nil || !p[1].closed.Load() {
		t.Fatal("the remaining idle connection was not closed")
	}
	// Now all three are active.
	last := newPipe(t)
	if cs.Admit(last) != nil || !last.closed.Load() {
		t.Fatal("a connection over the cap with every connection active was not refused")
	}
	if n := cs.Len(); n != 3 {
		t.Fatalf("%d connections tracked, want 3", n)
	}
	for _, want := range []string{"requests arriving slowly", "closing new connections"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	cs.Stop()
	if cs.Admit(newPipe(t)) != nil {
		t.Fatal("Admit after Stop")
	}
	cs.CloseAll()
	if cs.Len() != 0 {
		t.Fatal("CloseAll left connections")
	}
}

// TestConnsStates: the transitions fail once a connection is closed, and
// CloseIdle closes idle connections only.
func TestConnsStates(t *testing.T) {
	cs := NewConns(ConnsOptions{Name: "test", MaxConns: 10})
	idle, busy := cs.Admit(newPipe(t)), cs.Admit(newPipe(t))
	idle.Wait()
	if cs.CloseIdle() {
		t.Fatal("CloseIdle reported no connection left while one is active")
	}
	if idle.State() != Closed || idle.Begin(true) || idle.Wait() {
		t.Fatal("an idle connection survived CloseIdle")
	}
	if busy.State() != Active || cs.Count(Active) != 1 {
		t.Fatal("CloseIdle closed an active connection")
	}
	busy.Wait()
	if !busy.Begin(true) || !busy.Done() {
		t.Fatal("a complete request did not make the connection active")
	}
	busy.Close()
	if !cs.CloseIdle() || cs.Len() != 0 {
		t.Fatal("Close did not stop tracking the connection")
	}
}

// TestConnsHold: over the byte budget the slowest sender is closed and
// its bytes are returned at once; when the slowest is the one asking, its
// Hold fails.
func TestConnsHold(t *testing.T) {
	cs := NewConns(ConnsOptions{Name: "test", MaxConns: 10, MaxHeld: 100})
	a, b := cs.Admit(newPipe(t)), cs.Admit(newPipe(t))
	a.Wait()
	a.Begin(false)
	time.Sleep(time.Millisecond)
	b.Wait()
	b.Begin(false)
	if !a.Hold(60) || cs.Held() != 60 {
		t.Fatalf("held %d after 60", cs.Held())
	}
	if !b.Hold(60) {
		t.Fatal("the newer sender's Hold failed though an older one could be closed")
	}
	if a.State() != Closed || cs.Held() != 60 {
		t.Fatalf("the slowest sender was not closed (state %v), held %d", a.State(), cs.Held())
	}
	if b.Hold(50) {
		t.Fatal("Hold over the budget succeeded for the slowest sender itself")
	}
	if b.State() != Closed || cs.Held() != 0 {
		t.Fatalf("state %v, held %d after the slowest sender gave up", b.State(), cs.Held())
	}
	c := cs.Admit(newPipe(t))
	c.Wait()
	c.Begin(false)
	c.Hold(80)
	c.Release()
	if cs.Held() != 0 {
		t.Fatalf("held %d after Release", cs.Held())
	}
}

// TestConnCap: the open-file limit is shared among the listeners.
func TestConnCap(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if got := ConnCap(1000, 1<<30); got != 1 {
		t.Errorf("ConnCap with a tiny share = %d, want 1", got)
	}
	if lim.Cur > 1<<20 {
		t.Skipf("RLIMIT_NOFILE %d too large to test the share", lim.Cur)
	}
	want := (int(lim.Cur) - fdReserve) / 3
	if got := ConnCap(1<<30, 3); got != want {
		t.Errorf("ConnCap(1<<30, 3) = %d, want (%d - %d) / 3 = %d", got, lim.Cur, fdReserve, want)
	}
	if got := ConnCap(5, 3); got != 5 {
		t.Errorf("ConnCap(5, 3) = %d, want 5", got)
	}
}

// flakyListener fails Accept with EMFILE a few times, then hands out one
// connection, then reports itself closed.
type flakyListener struct {
	net.Listener
	fails int
	conn  net.Conn
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: syscall.EMFILE}
	}
	if c := l.conn; c != nil {
		l.conn = nil
		return c, nil
	}
	return nil, net.ErrClosed
}

// TestAcceptRetries: running out of file descriptors delays Accept with a
// warning per retry; a closed listener ends it.
func TestAcceptRetries(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	fl := &flakyListener{fails: 3, conn: a}
	var delays []time.Duration
	c, err := Accept(fl, func(err error, d time.Duration) {
		if !errors.Is(err, syscall.EMFILE) {
			t.Errorf("retried error %v", err)
		}
		delays = append(delays, d)
	})
	if err != nil || c != a {
		t.Fatalf("Accept: %v, %v", c, err)
	}
	if len(delays) != 3 || delays[0] != firstRetry || delays[1] != 2*firstRetry || delays[2] != 4*firstRetry {
		t.Fatalf("retry delays %v", delays)
	}
	if _, err := Accept(fl, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v", err)
	}
	for _, tc := range []struct {
		err  error
		temp bool
	}{
		{syscall.ENFILE, true}, {syscall.ECONNABORTED, true}, {io.EOF, false}, {net.ErrClosed, false}, {syscall.EINVAL, false},
	} {
		if got := TemporaryError(&net.OpError{Op: "accept", Err: tc.err}); got != tc.temp {
			t.Errorf("TemporaryError(%v) = %v", tc.err, got)
		}
	}
}
