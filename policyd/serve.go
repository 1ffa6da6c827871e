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
	// refuseLogEvery rate-limits the log line about connections refused at the cap.
	refuseLogEvery = 10 * time.Second
)

// Connection states.
const (
	stateActive  int32 = iota // reading a buffered request, deciding or writing the reply
	stateIdle                 // waiting for the first byte of the next request
	stateClosed               // closed by the server (shutdown, eviction)
	stateReading              // waiting for the rest of a request (MTAs write it at once)
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
// accept loop, connection cap with idle eviction, per-connection timeouts, graceful
// shutdown. The protocol is supplied by handle, which loops on conn.waitRequest.
type server struct {
	serverConfig
	handle func(c *conn)

	inShutdown atomic.Bool
	baseCtx    context.Context
	cancelAll  context.CancelFunc

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
	nextID    uint64
	refused   uint64    // connections refused at the cap since the last log line
	refusedAt time.Time // time of the last such log line
	slow      uint64    // slow senders evicted at the cap since the last log line
	slowAt    time.Time // time of the last such log line
}

// conn is one accepted connection.
type conn struct {
	net.Conn
	srv       *server
	id        uint64
	br        *bufio.Reader
	ctx       context.Context
	cancel    context.CancelFunc
	state     atomic.Int32
	idleSince atomic.Int64 // unix nanoseconds: start of the idle or reading state

	// Deadlines currently set; used by the connection's goroutine only.
	readDL, writeDL time.Time
}

func newServer(cfg serverConfig, handle func(*conn)) *server {
	ctx, cancel := context.WithCancel(context.Background())
	return &server{
		serverConfig: cfg,
		handle:       handle,
		baseCtx:      ctx,
		cancelAll:    cancel,
		listeners:    make(map[*net.Listener]struct{}),
		conns:        make(map[*conn]struct{}),
	}
}

// resolveTimeout maps an option value to the effective timeout: zero means def, negative
// means none.
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
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if isTemporaryAcceptError(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn(s.proto+": accept failed, retrying", "listener", l.Addr().String(), "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("policyd: %s: accept on %s: %w", s.proto, l.Addr(), err)
		}
		delay = 0
		if c := s.admit(nc); c != nil {
			go s.run(c)
		}
	}
}

// isTemporaryAcceptError reports whether Accept may succeed if retried: out of file
// descriptors or buffers, or a connection aborted before it was accepted.
func isTemporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// admit registers nc, or closes it when the server is shutting down or at its connection
// cap and no idle or slow connection can be evicted to make room.
func (s *server) admit(nc net.Conn) *conn {
	var evict *conn
	var slowLog uint64
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		nc.Close()
		return nil
	}
	if len(s.conns) >= s.maxConns {
		evict = s.oldestIdleLocked()
		if evict == nil {
			// No idle connection: close the one that has been sending its request for
			// the longest time. MTAs write a request at once, so connections that hold
			// the cap with unfinished requests (slowloris) cannot starve the others.
			if evict = s.oldestReadingLocked(); evict != nil {
				s.slow++
				if now := time.Now(); now.Sub(s.slowAt) >= refuseLogEvery {
					slowLog, s.slow, s.slowAt = s.slow, 0, now
				}
			}
		}
		if evict == nil {
			s.refused++
			now := time.Now()
			var n uint64
			if now.Sub(s.refusedAt) >= refuseLogEvery {
				n, s.refused, s.refusedAt = s.refused, 0, now
			}
			s.mu.Unlock()
			nc.Close()
			if n > 0 {
				s.log.Warn(s.proto+": connection limit reached, closing new connections",
					"max_conns", s.maxConns, "refused", n, "remote", remoteString(nc))
			}
			return nil
		}
		delete(s.conns, evict)
	}
	s.nextID++
	ctx, cancel := context.WithCancel(s.baseCtx)
	c := &conn{Conn: nc, srv: s, id: s.nextID, br: bufio.NewReader(nc), ctx: ctx, cancel: cancel}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if evict != nil {
		evict.Close()
		s.log.Debug(s.proto+": connection limit reached, closed the longest-idle or slowest connection",
			"max_conns", s.maxConns, "evicted_conn", evict.id)
	}
	if slowLog > 0 {
		s.log.Warn(s.proto+": connection limit reached with requests arriving slowly, closing the slowest connections",
			"max_conns", s.maxConns, "closed", slowLog, "remote", remoteString(evict))
	}
	return c
}

// oldestReadingLocked marks the connection that has been waiting for the rest of a
// request for the longest time as closed and returns it, or returns nil if none is. s.mu
// must be held.
func (s *server) oldestReadingLocked() *conn {
	for {
		var oldest *conn
		var since int64
		for c := range s.conns {
			if c.state.Load() != stateReading {
				continue
			}
			if t := c.idleSince.Load(); oldest == nil || t < since {
				oldest, since = c, t
			}
		}
		if oldest == nil {
			return nil
		}
		if oldest.state.CompareAndSwap(stateReading, stateClosed) {
			return oldest
		}
		// Its request arrived meanwhile: look again.
	}
}

// oldestIdleLocked marks the connection idle for the longest time as closed and returns
// it, or returns nil if no connection is idle. s.mu must be held.
func (s *server) oldestIdleLocked() *conn {
	for {
		var oldest *conn
		var since int64
		for c := range s.conns {
			if c.state.Load() != stateIdle {
				continue
			}
			if t := c.idleSince.Load(); oldest == nil || t < since {
				oldest, since = c, t
			}
		}
		if oldest == nil {
			return nil
		}
		if oldest.state.CompareAndSwap(stateIdle, stateClosed) {
			return oldest
		}
		// It became active meanwhile: look again.
	}
}

func (s *server) run(c *conn) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error(s.proto+": internal error, closing connection", "conn", c.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
		c.state.Store(stateClosed)
		c.cancel()
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
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
	now := time.Now()
	c.idleSince.Store(now.UnixNano())
	if !c.state.CompareAndSwap(stateActive, stateIdle) {
		return false
	}
	// Checked after becoming idle, so that a concurrent Shutdown either sees this
	// connection idle (and closes it) or is seen here.
	if s.inShutdown.Load() {
		return false
	}
	if c.br.Buffered() == 0 {
		c.armRead(now, s.idleTimeout)
		if _, err := c.br.Peek(1); err != nil {
			if c.state.Load() != stateClosed {
				c.logReadEnd(err, "idle")
			}
			return false
		}
	}
	// The MTA writes each request at once, so it is usually all buffered now and reading
	// it cannot block: then the read deadline need not change.
	buf, _ := c.br.Peek(c.br.Buffered())
	complete := s.complete(buf)
	next := stateActive
	if !complete {
		next = stateReading
		c.idleSince.Store(time.Now().UnixNano())
	}
	if !c.state.CompareAndSwap(stateIdle, next) {
		return false
	}
	if !complete {
		c.armRead(time.Now(), s.readTimeout)
	}
	return true
}

// requestRead marks the request announced by waitRequest as read. It returns false if
// the connection was closed meanwhile (evicted as a slow sender, or shut down).
func (c *conn) requestRead() bool {
	return c.state.CompareAndSwap(stateReading, stateActive) || c.state.Load() == stateActive
}

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
		if c.state.Load() != stateClosed {
			s.log.Warn(s.proto+": write error, closing connection", "conn", c.id, "remote", remoteString(c), "err", err)
		}
		return false
	}
	return true
}

// lingerClose half-closes the connection and drains what the peer still sends for a short
// while, so that a reply written just before is not lost to a TCP reset.
func (c *conn) lingerClose() {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, c.br, lingerMax)
}

// shutdown implements SocketmapServer.Shutdown and DelegationServer.Shutdown.
func (s *server) shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
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

// closeIdle closes the idle connections and reports whether none is left.
func (s *server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.Close()
			delete(s.conns, c)
		}
	}
	return len(s.conns) == 0
}

func (s *server) closeAll() {
	s.cancelAll()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.state.Store(stateClosed)
		c.Close()
		delete(s.conns, c)
	}
}

// numConns returns the number of tracked connections (for tests).
func (s *server) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func remoteString(c net.Conn) string {
	a := c.RemoteAddr()
	if a == nil || a.String() == "" || a.String() == "@" {
		if l := c.LocalAddr(); l != nil {
			return "local:" + l.String()
		}
		return "unknown"
	}
	return a.String()
}

// logQuote renders untrusted bytes for a log line: quoted (so CR, LF and other control or
// invalid bytes cannot forge lines) and cut to 200 bytes.
func logQuote(b []byte) string {
	const limit = 200
	if len(b) > limit {
		return strconv.Quote(string(b[:limit])) + "...(" + strconv.Itoa(len(b)) + " bytes)"
	}
	return strconv.Quote(string(b))
}
