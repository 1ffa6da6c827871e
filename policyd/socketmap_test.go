package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var kinds = []string{"unix", "tcp"}

func TestNewSocketmapServerOptions(t *testing.T) {
	lk := LookupFunc(testLookuper)
	tests := []struct {
		name   string
		opts   SocketmapOptions
		errSub string
	}{
		{name: "defaults", opts: SocketmapOptions{Lookuper: lk}},
		{name: "no lookuper", opts: SocketmapOptions{}, errSub: "Lookuper is nil"},
		{name: "negative max request", opts: SocketmapOptions{Lookuper: lk, MaxRequest: -1}, errSub: "MaxRequest"},
		{name: "huge max request", opts: SocketmapOptions{Lookuper: lk, MaxRequest: MaxRequestLimit + 1}, errSub: "MaxRequest"},
		{name: "negative max conns", opts: SocketmapOptions{Lookuper: lk, MaxConns: -1}, errSub: "MaxConns"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSocketmapServer(tc.opts)
			if tc.errSub == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.maxRequest != DefaultMaxRequest || s.srv.maxConns != DefaultMaxConns || s.srv.idleTimeout != DefaultIdleTimeout ||
					s.srv.readTimeout != DefaultReadTimeout || s.srv.writeTimeout != DefaultWriteTimeout || s.srv.log == nil {
					t.Fatalf("defaults not applied: %+v %+v", s, s.srv.serverConfig)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errSub) || !strings.HasPrefix(err.Error(), "policyd: socketmap: ") {
				t.Fatalf("got %v, want error containing %q", err, tc.errSub)
			}
		})
	}
}

// TestSocketmapSequential sends many requests on one persistent connection and checks the
// exact reply bytes.
func TestSocketmapSequential(t *testing.T) {
	tests := []struct {
		request string // payload
		reply   string // payload
	}{
		{"tlspolicy found.example", "OK secure match=mx.found.example"},
		{"tlspolicy unknown.example", "NOTFOUND "},
		{"tlspolicy temp.example", "TEMP try later"},
		{"tlspolicy timeout.example", "TIMEOUT too slow"},
		{"tlspolicy perm.example", "PERM broken"},
		{"other found.example", "PERM unknown map other"},
		{"tlspolicy echo:[127.0.0.1]:10026", "OK echo:[127.0.0.1]:10026"},
		{"tlspolicy echo:key with spaces", "OK echo:key with spaces"},
		{"tlspolicy hex:\x00nul\x00", "OK 006e756c00"},        // key reaches the Lookuper verbatim
		{"tlspolicy echo:\x00nul\x00", "TEMP internal error"}, // NUL in an OK value
		{"tlspolicy echo:\xff\xfe non-UTF-8", "OK echo:\xff\xfe non-UTF-8"},
		{"tlspolicy echo:MiXeD.CaSe", "OK echo:MiXeD.CaSe"},
		{"tlspolicy ", "NOTFOUND "},     // empty key goes to the Lookuper
		{"tlspolicy  two", "NOTFOUND "}, // key " two": split at the first space only
		{"nospace", "PERM bad request"}, // no space
		{" key", "PERM bad request"},    // empty map name
		{"", "PERM bad request"},        // empty payload
		{"tlspolicy panic.example", "TEMP internal error"},
		{"tlspolicy emptyok.example", "TEMP internal error"},
		{"tlspolicy badstatus.example", "TEMP internal error"},
		{"tlspolicy zero.example", "TEMP internal error"},
		{"tlspolicy nul.example", "TEMP internal error"},
		{"tlspolicy big:99997", "OK " + strings.Repeat("x", 99997)}, // exactly MaxReply
		{"tlspolicy big:99998", "TEMP reply too long"},
		{"tlspolicy found.example", "OK secure match=mx.found.example"}, // still serving after all that
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var logs logBuf
			_, spec := startSocketmap(t, kind, SocketmapOptions{Lookuper: LookupFunc(testLookuper), Logger: logs.logger()})
			c := dialSpec(t, spec)
			br := bufio.NewReader(c)
			for i, tc := range tests {
				if _, err := c.Write(AppendNetstring(nil, []byte(tc.request))); err != nil {
					t.Fatal(err)
				}
				got, err := readRaw(c, br, 5*time.Second)
				if err != nil {
					t.Fatalf("request %d %q: %v", i, truncate([]byte(tc.request)), err)
				}
				if got != tc.reply {
					t.Fatalf("request %d %q: reply %q, want %q", i, truncate([]byte(tc.request)), truncate([]byte(got)), truncate([]byte(tc.reply)))
				}
			}
			for _, want := range []string{"Lookuper panicked", "panic=boom", "OK with empty data", "NUL byte in the data", "invalid status", "reply too long", "bad request"} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
		})
	}
}

// TestSocketmapClient drives the server through SocketmapClient and ParseReply.
func TestSocketmapClient(t *testing.T) {
	_, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: LookupFunc(testLookuper), Logger: discardLogger()})
	c := dialClient(t, spec)
	tests := []struct {
		key  string
		want Reply
	}{
		{"found.example", Reply{StatusOK, "secure match=mx.found.example"}},
		{"nope.example", Reply{StatusNotFound, ""}},
		{"temp.example", Reply{StatusTemp, "try later"}},
		{"timeout.example", Reply{StatusTimeout, "too slow"}},
		{"perm.example", Reply{StatusPerm, "broken"}},
		{"panic.example", Reply{StatusTemp, "internal error"}},
	}
	for _, tc := range tests {
		if got := lookupOK(t, c, "tlspolicy", tc.key); got != tc.want {
			t.Errorf("Lookup(%q) = %+v, want %+v", tc.key, got, tc.want)
		}
	}
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		in   string
		want Reply
		err  bool
	}{
		{"OK secure match=x", Reply{StatusOK, "secure match=x"}, false},
		{"OK ", Reply{StatusOK, ""}, false},
		{"NOTFOUND ", Reply{StatusNotFound, ""}, false},
		{"NOTFOUND", Reply{StatusNotFound, ""}, false},
		{"TEMP a b c", Reply{StatusTemp, "a b c"}, false},
		{"TIMEOUT x", Reply{StatusTimeout, "x"}, false},
		{"PERM", Reply{StatusPerm, ""}, false},
		{"OK", Reply{}, true},
		{"ok x", Reply{}, true},
		{"FOUND x", Reply{}, true},
		{"", Reply{}, true},
	}
	for _, tc := range tests {
		got, err := ParseReply([]byte(tc.in))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseReply(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	if Status(0).String() != "Status(0)" || StatusNotFound.String() != "NOTFOUND" {
		t.Errorf("Status.String: %q, %q", Status(0), StatusNotFound)
	}
}

// TestSocketmapHostile sends malformed or abusive input on fresh connections, checks
// that each gets a clear reply or a close, and that a client connected before keeps being
// served.
func TestSocketmapHostile(t *testing.T) {
	mbKey := "1048576:tlspolicy " + strings.Repeat("k", 1048576-len("tlspolicy ")) + ","
	tests := []struct {
		name  string
		send  string
		reply string // "" = closed without reply
		keep  bool   // connection stays usable afterwards
		log   string // expected in the log
	}{
		{name: "leading zero", send: "05:hello,", log: "leading zero"},
		{name: "overflowing length", send: "99999999999999999999:", reply: "TEMP request too long", log: "request too long"},
		{name: "length over limit", send: "10001:", reply: "TEMP request too long"},
		{name: "1 MB key", send: mbKey, reply: "TEMP request too long"},
		{name: "missing comma", send: "5:helloX", log: "missing ','"},
		{name: "non-digit length", send: "abc:def,", log: "bad length"},
		{name: "empty length", send: ":,", log: "empty length"},
		{name: "negative length", send: "-5:hello,", log: "bad length"},
		{name: "NUL in length", send: "\x00:", log: "0x00"},
		{name: "CRLF instead of comma", send: "5:hello\r\n", log: "missing ','"},
		{name: "HTTP request", send: "GET / HTTP/1.0\r\n\r\n", log: "bad length"},
		{name: "TLS ClientHello", send: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", log: "bad length"},
		{name: "no space", send: "5:hello,", reply: "PERM bad request", keep: true},
		{name: "empty payload", send: "0:,", reply: "PERM bad request", keep: true},
		{name: "NUL bytes in key", send: string(ns("tlspolicy hex:\x00\x00\x00")), reply: "OK 000000", keep: true},
		{name: "non-UTF-8 key", send: string(ns("tlspolicy \xc3\x28\xa0\xa1\xf0\x28\x8c\xbc")), reply: "NOTFOUND ", keep: true},
		{name: "truncated then EOF", send: "30:tlspolicy exa", log: "truncated"},
	}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var logs logBuf
			s, spec := startSocketmap(t, kind, SocketmapOptions{Lookuper: LookupFunc(testLookuper), Logger: logs.logger()})
			good := dialClient(t, spec)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					c := dialSpec(t, spec)
					br := bufio.NewReader(c)
					go c.Write([]byte(tc.send)) // may block on the 1 MB key until the server drains it
					if tc.name == "truncated then EOF" {
						time.Sleep(50 * time.Millisecond)
						c.(interface{ CloseWrite() error }).CloseWrite()
					}
					if tc.reply == "" {
						expectClosed(t, c, br, 5*time.Second)
					} else {
						got, err := readRaw(c, br, 5*time.Second)
						if err != nil || got != tc.reply {
							t.Fatalf("reply %q, %v; want %q", truncate([]byte(got)), err, tc.reply)
						}
						if tc.keep {
							c.Write(ns("tlspolicy echo:still-there"))
							if got, err := readRaw(c, br, 5*time.Second); err != nil || got != "OK echo:still-there" {
								t.Fatalf("after %q: %q, %v", tc.name, got, err)
							}
						} else {
							expectClosed(t, c, br, 5*time.Second)
						}
					}
					if tc.log != "" {
						logs.waitFor(t, tc.log)
					}
					if r := lookupOK(t, good, "tlspolicy", "found.example"); r.Status != StatusOK {
						t.Fatalf("other client got %+v", r)
					}
				})
			}
			waitConns(t, s.srv, 1) // only the good client is left
		})
	}
}

// waitConns waits until the server tracks n connections.
func waitConns(t testing.TB, s *server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.numConns() != n {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d connections, want %d", s.numConns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSocketmapConcurrent runs many clients at once, each on its own persistent
// connection, and checks every answer belongs to its own request.
func TestSocketmapConcurrent(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			_, spec := startSocketmap(t, kind, SocketmapOptions{Lookuper: LookupFunc(testLookuper), Logger: discardLogger()})
			const clients, requests = 64, 200
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := range clients {
				wg.Go(func() {
					c, err := DialSocketmap(context.Background(), spec)
					if err != nil {
						errs <- err
						return
					}
					defer c.Close()
					for j := range requests {
						key := fmt.Sprintf("echo:%d-%d", i, j)
						r, err := c.Lookup(context.Background(), "tlspolicy", key)
						if err != nil || r != (Reply{StatusOK, key}) {
							errs <- fmt.Errorf("client %d request %d: %+v, %v", i, j, r, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestSocketmapIdleTimeout(t *testing.T) {
	var logs logBuf
	const idle = time.Second
	_, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: LookupFunc(testLookuper), IdleTimeout: idle, Logger: logs.logger()})
	c := dialSpec(t, spec)
	br := bufio.NewReader(c)
	// Active use keeps it open past the idle timeout.
	var first, start time.Time
	for i := range 8 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		// The server starts the idle timeout after its reply, so after start.
		start = time.Now()
		if i == 0 {
			first = start
		}
		c.Write(ns("tlspolicy echo:keep-alive"))
		if got, err := readRaw(c, br, 5*time.Second); err != nil || got != "OK echo:keep-alive" {
			t.Fatalf("%q, %v", got, err)
		}
	}
	if d := start.Sub(first); d <= idle {
		t.Fatalf("kept alive for only %v, not past the idle timeout", d)
	}
	expectClosed(t, c, br, 5*time.Second)
	if d := time.Since(start); d < idle*9/10 {
		t.Fatalf("closed after %v, before the idle timeout", d)
	}
	logs.waitFor(t, "idle timeout")
}

// TestSocketmapSlowloris: a client that trickles a request is cut off after ReadTimeout,
// and others are served meanwhile.
func TestSocketmapSlowloris(t *testing.T) {
	var logs logBuf
	_, spec := startSocketmap(t, "tcp", SocketmapOptions{Lookuper: LookupFunc(testLookuper), ReadTimeout: 300 * time.Millisecond, Logger: logs.logger()})
	good := dialClient(t, spec)
	slow := dialSpec(t, spec)
	br := bufio.NewReader(slow)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		msg := "9000:tlspolicy " + strings.Repeat("a", 8990) + ","
		for i := 0; i < len(msg); i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := slow.Write([]byte{msg[i]}); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	for time.Since(start) < 200*time.Millisecond {
		if r := lookupOK(t, good, "tlspolicy", "found.example"); r.Status != StatusOK {
			t.Fatalf("good client got %+v", r)
		}
	}
	expectClosed(t, slow, br, 5*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("slow client cut after %v", d)
	}
	logs.waitFor(t, "request not received in time")
}

// TestSocketmapWriteTimeout: a client that sends requests but never reads replies is
// disconnected after WriteTimeout, not held forever.
func TestSocketmapWriteTimeout(t *testing.T) {
	var logs logBuf
	s, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: LookupFunc(testLookuper), WriteTimeout: 200 * time.Millisecond, Logger: logs.logger()})
	c := dialSpec(t, spec)
	req := AppendNetstring(nil, []byte("tlspolicy big:99000"))
	go func() {
		for range 200 { // 200 × 99 kB of replies: far more than socket buffers hold
			if _, err := c.Write(req); err != nil {
				return
			}
		}
	}()
	logs.waitFor(t, "write error")
	waitConns(t, s.srv, 0)
}

// TestSocketmapConnCap: at the cap, a new connection evicts the longest-idle one; when no
// connection is idle, the new one is closed at once.
func TestSocketmapConnCap(t *testing.T) {
	release := make(chan struct{})
	var inLookup atomic.Int32
	lk := LookupFunc(func(ctx context.Context, name, key string) Reply {
		if key == "block" {
			inLookup.Add(1)
			<-release
		}
		return testLookuper(ctx, name, key)
	})
	var logs logBuf
	s, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: lk, MaxConns: 3, Logger: logs.logger()})

	// Three idle clients; the first one is the longest idle. The server
	// stamps a connection idle after its reply, so wait for that.
	var idle []*SocketmapClient
	for i := range 3 {
		c := dialClient(t, spec)
		lookupOK(t, c, "tlspolicy", "found.example")
		idle = append(idle, c)
		waitIdle(t, s.srv, i+1)
		time.Sleep(10 * time.Millisecond)
	}
	// A fourth client is served; the first one is evicted.
	fourth := dialClient(t, spec)
	if r := lookupOK(t, fourth, "tlspolicy", "found.example"); r.Status != StatusOK {
		t.Fatalf("fourth client: %+v", r)
	}
	if _, err := idle[0].Lookup(context.Background(), "tlspolicy", "found.example"); err == nil {
		t.Fatal("the longest-idle connection was not evicted")
	}
	for _, c := range idle[1:] {
		lookupOK(t, c, "tlspolicy", "found.example")
	}

	// Now make all three busy: a new connection is refused.
	var wg sync.WaitGroup
	for _, c := range []*SocketmapClient{idle[1], idle[2], fourth} {
		wg.Go(func() {
			if r, err := c.Lookup(context.Background(), "tlspolicy", "block"); err != nil || r.Status != StatusNotFound {
				t.Errorf("blocked lookup: %+v, %v", r, err)
			}
		})
	}
	for inLookup.Load() != 3 {
		time.Sleep(time.Millisecond)
	}
	over := dialSpec(t, spec)
	over.Write([]byte("27:tlspolicy found.example...,"))
	expectClosed(t, over, bufio.NewReader(over), 5*time.Second)
	logs.waitFor(t, "connection limit reached")
	close(release)
	wg.Wait()
	if n := s.srv.numConns(); n != 3 {
		t.Fatalf("%d connections tracked, want 3", n)
	}
}

// TestSocketmapManyIdle: 1000 idle connections (a flood, or a thousand quiet MTA
// processes) do not stop another client from getting answers, with the default cap
// (eviction) and with a cap above the flood (no eviction).
func TestSocketmapManyIdle(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxConns int
	}{{"default cap", 0}, {"cap above flood", 1100}} {
		t.Run(tc.name, func(t *testing.T) {
			s, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: LookupFunc(testLookuper), MaxConns: tc.maxConns, Logger: discardLogger()})
			const flood = 1000
			conns := make([]net.Conn, 0, flood)
			for range flood {
				conns = append(conns, dialSpec(t, spec))
			}
			waitConns(t, s.srv, flood)
			good := dialClient(t, spec)
			for i := range 100 {
				key := fmt.Sprintf("echo:%d", i)
				if r := lookupOK(t, good, "tlspolicy", key); r != (Reply{StatusOK, key}) {
					t.Fatalf("lookup %d: %+v", i, r)
				}
			}
			if tc.maxConns > flood {
				// Nobody was evicted: every idle connection still gets answers.
				for i, c := range conns[:50] {
					c.Write(ns("tlspolicy echo:still-there"))
					if got, err := readRaw(c, bufio.NewReader(c), 5*time.Second); err != nil || got != "OK echo:still-there" {
						t.Fatalf("idle conn %d: %q, %v", i, got, err)
					}
				}
			}
		})
	}
}

// TestSocketmapShutdown: Shutdown closes idle connections at once, lets the request in
// progress finish and be answered, refuses new connections, and makes Serve return.
func TestSocketmapShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	lk := LookupFunc(func(ctx context.Context, name, key string) Reply {
		if key == "slow" {
			close(started)
			<-release
			return Reply{Status: StatusOK, Data: "finished"}
		}
		return testLookuper(ctx, name, key)
	})
	s, err := NewSocketmapServer(SocketmapOptions{Lookuper: lk, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	l, spec := listenTest(t, "unix")
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()

	idle := dialSpec(t, spec)
	idleBr := bufio.NewReader(idle)
	idle.Write(ns("tlspolicy echo:before-close"))
	if got, err := readRaw(idle, idleBr, 5*time.Second); err != nil || got != "OK echo:before-close" {
		t.Fatalf("%q, %v", got, err)
	}
	busy := dialClient(t, spec)
	busyDone := make(chan Reply, 1)
	go func() {
		r, err := busy.Lookup(context.Background(), "tlspolicy", "slow")
		if err != nil {
			t.Errorf("in-flight lookup failed: %v", err)
		}
		busyDone <- r
	}()
	<-started

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- s.Shutdown(context.Background()) }()

	expectClosed(t, idle, idleBr, 5*time.Second)
	select {
	case err := <-served:
		if !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	network, addr, _ := parseSpec(spec)
	if c, err := net.Dial(network, addr); err == nil {
		c.Close()
		t.Fatal("new connection accepted during shutdown")
	}
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if r := <-busyDone; r != (Reply{StatusOK, "finished"}) {
		t.Fatalf("in-flight reply %+v", r)
	}
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the in-flight request finished")
	}
	if err := s.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// TestSocketmapShutdownTimeout: when the Shutdown context expires, the stuck lookup's
// context is cancelled and its connection closed.
func TestSocketmapShutdownTimeout(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	lk := LookupFunc(func(ctx context.Context, name, key string) Reply {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return Reply{Status: StatusTemp, Data: "cancelled"}
	})
	s, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: lk, Logger: discardLogger()})
	c := dialClient(t, spec)
	go c.Lookup(context.Background(), "tlspolicy", "stuck")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want DeadlineExceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("Lookuper context not cancelled")
	}
	waitConns(t, s.srv, 0)
}

// TestSocketmapReplyZeroAlloc checks that encoding a reply into a reused buffer does not
// allocate.
func TestSocketmapReplyZeroAlloc(t *testing.T) {
	buf := make([]byte, 0, 128)
	allocs := testing.AllocsPerRun(1000, func() {
		buf = appendReply(buf[:0], Reply{Status: StatusOK, Data: "secure match=mx.example"})
		buf = appendReply(buf[:0], Reply{Status: StatusNotFound})
	})
	if allocs != 0 {
		t.Fatalf("%v allocations, want 0", allocs)
	}
}

// TestSocketmapHalfOpen: a client that sends part of a request and then goes silent
// (crashed, or a half-open TCP connection) is dropped after ReadTimeout; one that closes
// its write side after a whole request still gets its reply.
func TestSocketmapHalfOpen(t *testing.T) {
	var logs logBuf
	_, spec := startSocketmap(t, "tcp", SocketmapOptions{Lookuper: LookupFunc(testLookuper), ReadTimeout: 200 * time.Millisecond, Logger: logs.logger()})

	silent := dialSpec(t, spec)
	silent.Write([]byte("27:tlspolicy [127.0"))
	start := time.Now()
	expectClosed(t, silent, bufio.NewReader(silent), 5*time.Second)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("closed after %v, before ReadTimeout", d)
	}
	logs.waitFor(t, "request not received in time")

	halfClosed := dialSpec(t, spec)
	br := bufio.NewReader(halfClosed)
	halfClosed.Write(ns("tlspolicy found.example"))
	halfClosed.(*net.TCPConn).CloseWrite()
	if got, err := readRaw(halfClosed, br, 5*time.Second); err != nil || got != "OK secure match=mx.found.example" {
		t.Fatalf("half-closed client: %q, %v", got, err)
	}
	expectClosed(t, halfClosed, br, 5*time.Second)
}

// TestSocketmapFloodMemory: 1000 connections that each announce a maximal request and
// send half of it hold bounded memory (buffers grow with bytes received, and the length
// is capped), and another client is still served.
func TestSocketmapFloodMemory(t *testing.T) {
	s, spec := startSocketmap(t, "unix", SocketmapOptions{Lookuper: LookupFunc(testLookuper), MaxConns: 1100, Logger: discardLogger()})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	partial := []byte("10000:tlspolicy " + strings.Repeat("a", 5000))
	const flood = 1000
	for range flood {
		c := dialSpec(t, spec)
		if _, err := c.Write(partial); err != nil {
			t.Fatal(err)
		}
	}
	waitConns(t, s.srv, flood)
	time.Sleep(100 * time.Millisecond) // let the servers read what was sent
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %.1f MB for %d connections", float64(grew)/1e6, flood)
	if grew > 64<<20 {
		t.Errorf("heap grew by %d bytes for %d half-sent requests", grew, flood)
	}
	good := dialClient(t, spec)
	if r := lookupOK(t, good, "tlspolicy", "found.example"); r.Status != StatusOK {
		t.Fatalf("%+v", r)
	}
}
