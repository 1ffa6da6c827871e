package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlsgate/tlsgate/internal/listen"
)

// ErrServerClosed is returned by Serve once Shutdown or Close has been called.
var ErrServerClosed = errors.New("policyd: server closed")

// Defaults shared by SocketmapServer and DelegationServer. SocketmapOptions and
// DelegationOptions document why they were chosen.
const (
	// DefaultIdleTimeout is how long a connection may wait for its next request.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultReadTimeout bounds the reading of one request after its first byte.
	DefaultReadTimeout = 10 * time.Second
	// DefaultWriteTimeout bounds the writing of one reply.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxConns is the default connection cap.
	DefaultMaxConns = 1000
)

const (
	// lingerTimeout and lingerMax bound how long and how much a connection that is closed
	// right after an error reply is drained, so the peer can read the reply instead of
	// getting a TCP reset.
	lingerTimeout = time.Second
	lingerMax     = 1 << 20
)

// serverConfig is what both servers share.
type serverConfig struct {
	proto        string // "socketmap" or "delegation": log and error prefix
	log          *slog.Logger
	maxConns     int
	idleTimeout  time.Duration // <0: none
	readTimeout  time.Duration // <0: none
	writeTimeout time.Duration // <0: none
	// complete reports whether buf, the bytes buffered at the start of a request, holds
	// the whole request (or enough to reject it), so that reading it cannot block.
	complete func(buf []byte) bool
}

// server is the connection machinery shared by SocketmapServer and DelegationServer:
// accept loop, connection cap with eviction (package listen), per-connection timeouts,
// graceful shutdown. The protocol is supplied by handle, which loops on conn.waitRequest.
type server struct {
	serverConfig
	handle func(c *conn)
	conns  *listen.Conns

	inShutdown atomic.Bool
	baseCtx    context.Context
	cancelAll  context.CancelFunc

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
}

// conn is one accepted connection.
type conn struct {
	*listen.Conn
	srv    *server
	id     uint64
	br     *bufio.Reader
	ctx    context.Context
	cancel context.CancelFunc

	// Deadlines currently set; used by the connection's goroutine only.
	readDL, writeDL time.Time
}

func newServer(cfg serverConfig, handle func(*conn)) *server {
	ctx, cancel := context.WithCancel(context.Background())
	return &server{
		serverConfig: cfg,
		handle:       handle,
		conns:        listen.NewConns(listen.ConnsOptions{Name: cfg.proto, MaxConns: cfg.maxConns, Logger: cfg.log}),
		baseCtx:      ctx,
		cancelAll:    cancel,
		listeners:    make(map[*net.Listener]struct{}),
	}
}

// withDefaults fills the zero fields of options shared by both servers.
func (cfg serverConfig) withDefaults() serverConfig {
	cfg.idleTimeout = resolveTimeout(cfg.idleTimeout, DefaultIdleTimeout)
	cfg.readTimeout = resolveTimeout(cfg.readTimeout, DefaultReadTimeout)
	cfg.writeTimeout = resolveTimeout(cfg.writeTimeout, DefaultWriteTimeout)
	if cfg.log == nil {
		cfg.log = slog.Default()
	}
	if cfg.maxConns == 0 {
		cfg.maxConns = DefaultMaxConns
	}
	return cfg
}

// resolveTimeout maps an option value to the effective timeout: zero means def, negative
// means none.
func resolveTimeout(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func (s *server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.inShutdown.Load() {
			return false
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

func (s *server) serve(l net.Listener) error {
	if !s.trackListener(&l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)
	warn := func(err error, retryIn time.Duration) {
		s.log.Warn(s.proto+": accept failed, retrying", "listener", l.Addr().String(), "err", err, "retry_in", retryIn)
	}
	for {
		nc, err := listen.Accept(l, warn)
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			return fmt.Errorf("policyd: %s: accept on %s: %w", s.proto, l.Addr(), err)
		}
		lc := s.conns.Admit(nc)
		if lc == nil {
			continue
		}
		ctx, cancel := context.WithCancel(s.baseCtx)
		go s.run(&conn{Conn: lc, srv: s, id: lc.ID, br: bufio.NewReader(lc), ctx: ctx, cancel: cancel})
	}
}

func (s *server) run(c *conn) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error(s.proto+": internal error, closing connection", "conn", c.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
		c.cancel()
		c.Close()
	}()
	s.handle(c)
}

// waitRequest waits, up to the idle timeout, for the first byte of the next request. It
// returns false when the connection is to end: peer closed it, idle timeout, read error,
// or the server closed it (shutdown, eviction). On true the read deadline for the request
// itself is set and the connection counts as active until the next waitRequest; while the
// request is not completely buffered it counts as reading (evictable at the cap) until
// requestRead.
func (c *conn) waitRequest() bool {
	s := c.srv
	if !c.Wait() {
		return false
	}
	// Checked after becoming idle, so that a concurrent Shutdown either sees this
	// connection idle (and closes it) or is seen here.
	if s.inShutdown.Load() {
		return false
	}
	if c.br.Buffered() == 0 {
		c.armRead(time.Now(), s.idleTimeout)
		if _, err := c.br.Peek(1); err != nil {
			if !c.closed() {
				c.logReadEnd(err, "idle")
			}
			return false
		}
	}
	// The MTA writes each request at once, so it is usually all buffered now and reading
	// it cannot block: then the read deadline need not change.
	buf, _ := c.br.Peek(c.br.Buffered())
	complete := s.complete(buf)
	if !c.Begin(complete) {
		return false
	}
	if !complete {
		c.armRead(time.Now(), s.readTimeout)
	}
	return true
}

// requestRead marks the request announced by waitRequest as read. It returns false if
// the connection was closed meanwhile (evicted as a slow sender, or shut down).
func (c *conn) requestRead() bool { return c.Done() }

// closed reports whether the server closed the connection (shutdown, eviction).
func (c *conn) closed() bool { return c.State() == listen.Closed }

// armRead makes the read deadline now+d (none if d < 0). To save timer work on every
// request, a deadline already set is kept if it is earlier than now+d by at most d/16.
func (c *conn) armRead(now time.Time, d time.Duration) {
	if dl, ok := rearm(c.readDL, now, d); ok {
		c.SetReadDeadline(dl)
		c.readDL = dl
	}
}

// armWrite is armRead for the write deadline.
func (c *conn) armWrite(now time.Time, d time.Duration) {
	if dl, ok := rearm(c.writeDL, now, d); ok {
		c.SetWriteDeadline(dl)
		c.writeDL = dl
	}
}

func rearm(cur, now time.Time, d time.Duration) (time.Time, bool) {
	if d < 0 {
		return time.Time{}, !cur.IsZero()
	}
	want := now.Add(d)
	if cur.IsZero() || cur.After(want) || want.Sub(cur) > d/16 {
		return want, true
	}
	return cur, false
}

// logReadEnd logs why reading stopped, at debug level for the ordinary reasons.
func (c *conn) logReadEnd(err error, phase string) {
	s := c.srv
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		s.log.Debug(s.proto+": connection closed by peer", "conn", c.id)
	case errors.Is(err, os.ErrDeadlineExceeded):
		if phase == "idle" {
			s.log.Debug(s.proto+": idle timeout, closing connection", "conn", c.id, "timeout", s.idleTimeout)
		} else {
			s.log.Warn(s.proto+": request not received in time, closing connection", "conn", c.id, "remote", remoteString(c), "timeout", s.readTimeout)
		}
	default:
		s.log.Warn(s.proto+": read error, closing connection", "conn", c.id, "remote", remoteString(c), "err", err)
	}
}

// write sends one reply under the write timeout.
func (c *conn) write(p []byte) bool {
	s := c.srv
	c.armWrite(time.Now(), s.writeTimeout)
	if _, err := c.Write(p); err != nil {
		if !c.closed() {
			s.log.Warn(s.proto+": write error, closing connection", "conn", c.id, "remote", remoteString(c), "err", err)
		}
		return false
	}
	return true
}

// lingerClose half-closes the connection and drains what the peer still sends for a short
// while, so that a reply written just before is not lost to a TCP reset.
func (c *conn) lingerClose() {
	if cw, ok := c.Conn.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c.br, lingerMax)
}

// shutdown implements SocketmapServer.Shutdown and DelegationServer.Shutdown.
func (s *server) shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.conns.Stop()
	lerr := s.closeListeners()
	poll := time.Millisecond
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		if s.closeIdle() {
			return lerr
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-timer.C:
			poll = min(2*poll, 100*time.Millisecond)
			timer.Reset(poll)
		}
	}
}

// close implements SocketmapServer.Close and DelegationServer.Close.
func (s *server) close() error {
	s.inShutdown.Store(true)
	s.conns.Stop()
	err := s.closeListeners()
	s.closeAll()
	return err
}

func (s *server) closeListeners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for l := range s.listeners {
		if err := (*l).Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("policyd: %s: closing listener %s: %w", s.proto, (*l).Addr(), err))
		}
		delete(s.listeners, l)
	}
	return errors.Join(errs...)
}

func (s *server) closeIdle() bool { return s.conns.CloseIdle() }

func (s *server) closeAll() {
	s.cancelAll()
	s.conns.CloseAll()
}

// numConns returns the number of tracked connections (for tests).
func (s *server) numConns() int { return s.conns.Len() }

// remoteString names a connection's peer for a log line.
func remoteString(c net.Conn) string { return listen.RemoteString(c) }

// quoteLimit is how many bytes of an untrusted value a log line or a reply repeats.
const quoteLimit = 200

// logQuote renders untrusted bytes for a log line: quoted (so CR, LF and other control or
// invalid bytes cannot forge lines) and cut to quoteLimit bytes.
func logQuote(b []byte) string {
	if len(b) > quoteLimit {
		return strconv.Quote(string(b[:quoteLimit])) + "...(" + strconv.Itoa(len(b)) + " bytes)"
	}
	return strconv.Quote(string(b))
}

// clip cuts an untrusted value to quoteLimit bytes, saying how long it was, for a log
// attribute (which the log handler quotes) or a reply.
func clip(s string) string {
	if len(s) > quoteLimit {
		return s[:quoteLimit] + "...(" + strconv.Itoa(len(s)) + " bytes)"
	}
	return s
}
