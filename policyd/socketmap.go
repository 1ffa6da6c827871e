package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Status is a socketmap reply status. Its zero value is not a valid status: a Reply with
// it is answered as "TEMP internal error".
type Status int

// The socketmap reply statuses.
const (
	// StatusOK means the key was found; Reply.Data is the value and must not be empty
	// or contain a NUL byte.
	StatusOK Status = iota + 1
	// StatusNotFound means the key is not in the map; Reply.Data is ignored.
	StatusNotFound
	// StatusTemp is a temporary failure; Reply.Data is the reason.
	StatusTemp
	// StatusTimeout is a temporary failure caused by a timeout; Reply.Data is the reason.
	StatusTimeout
	// StatusPerm is a permanent (configuration) failure; Reply.Data is the reason.
	StatusPerm
)

// String returns the status word used on the wire ("OK", "NOTFOUND", "TEMP", "TIMEOUT",
// "PERM"), or "Status(N)" for an invalid value.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusNotFound:
		return "NOTFOUND"
	case StatusTemp:
		return "TEMP"
	case StatusTimeout:
		return "TIMEOUT"
	case StatusPerm:
		return "PERM"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Reply is one socketmap answer.
type Reply struct {
	// Status is the outcome.
	Status Status
	// Data is the value for StatusOK and the reason for StatusTemp, StatusTimeout and
	// StatusPerm. It is sent verbatim after the status word and a space.
	Data string
}

// Lookuper answers one socketmap request: name is the map name, key the lookup key
// verbatim (un-folded, possibly non-UTF-8; Postfix sends keys as configured, Sendmail
// lower-cases them).
//
// Lookup is called sequentially for the requests of one connection and concurrently
// across connections. ctx is cancelled when the connection is torn down by Close or by a
// Shutdown whose context expires. Lookup should be fast: the MTA waits for it (Postfix for
// up to 100 s, holding one delivery agent). A panic is recovered and answered
// "TEMP internal error".
type Lookuper interface {
	Lookup(ctx context.Context, name, key string) Reply
}

// LookupFunc adapts a function to the Lookuper interface.
type LookupFunc func(ctx context.Context, name, key string) Reply

// Lookup calls f(ctx, name, key).
func (f LookupFunc) Lookup(ctx context.Context, name, key string) Reply { return f(ctx, name, key) }

// Socketmap size limits.
const (
	// DefaultMaxRequest is the default limit on a request payload ("NAME KEY"), in bytes.
	// It is the query limit of current Postfix (3.9+); Sendmail truncates keys far below it.
	DefaultMaxRequest = 10000
	// MaxRequestLimit is the largest accepted SocketmapOptions.MaxRequest.
	MaxRequestLimit = 1 << 20
	// MaxReply is the largest reply payload Postfix accepts (DICT_SOCKMAP_DEF_MAX_REPLY),
	// in bytes, without the netstring framing. Longer replies are replaced by
	// "TEMP reply too long". The policy refuses at load time an endpoint
	// whose answer would be longer.
	MaxReply = policy.MaxReply
)

// Reasons sent with TEMP and PERM when the server itself, not the Lookuper, decides.
const (
	reasonInternal   = "internal error"
	reasonTooLong    = "reply too long"
	reasonBadRequest = "bad request"
	reasonReqTooLong = "request too long"
)

// SocketmapOptions configures a SocketmapServer. Zero values select the defaults.
type SocketmapOptions struct {
	// Lookuper answers the requests. Required.
	Lookuper Lookuper

	// MaxRequest is the largest request payload ("NAME KEY") in bytes; at most
	// MaxRequestLimit. Default DefaultMaxRequest (10000). A longer request is answered
	// "TEMP request too long" without reading it, and the connection is closed: the
	// stream cannot be resynchronised without reading the payload, and TEMP makes the MTA
	// defer rather than fall back to its default policy.
	MaxRequest int

	// IdleTimeout is how long a connection may wait for its next request before the
	// server closes it. Default DefaultIdleTimeout (10 minutes); negative: no limit.
	// Postfix closes its own socketmap connections after 10 s idle and retries a closed
	// one once, but Sendmail keeps a socket map connection for the life of its process
	// and turns a connection closed under it into one temporary failure, so the default
	// is long. Idle connections cannot starve active clients: at the MaxConns cap a new
	// connection evicts the longest-idle one when no slow sender can be evicted. Enforced
	// to within 1/16 of its value (the deadline is not re-armed on every request).
	IdleTimeout time.Duration

	// ReadTimeout is how long the rest of a request may take once its first byte has
	// arrived. Default DefaultReadTimeout (10 s); negative: no limit. It bounds slow
	// ("slowloris") senders; MTAs write a request in one go.
	ReadTimeout time.Duration

	// WriteTimeout bounds the writing of one reply. Default DefaultWriteTimeout (10 s);
	// negative: no limit. Enforced to within 1/16 of its value.
	WriteTimeout time.Duration

	// MaxConns is the most connections served at once. Default DefaultMaxConns (1000),
	// comfortably above one connection per Postfix smtp(8) process (default_process_limit
	// is 100). When a connection arrives at the cap, the connection that has been sending
	// an unfinished request for the longest time (MTAs write a request at once: a
	// slowloris client) is closed to make room; if there is none, the connection idle for
	// the longest time (Postfix reconnects transparently); if none is idle, the new
	// connection is closed at once without a reply (Postfix retries once, then defers the
	// mail). Warnings about the first and the last are logged at most every 10 s.
	MaxConns int

	// Logger receives protocol errors, Lookuper bugs and connection-limit warnings; no
	// line is logged per successful lookup. Default slog.Default().
	Logger *slog.Logger
}

// SocketmapServer serves the socketmap protocol on persistent connections: requests on one
// connection are answered strictly in order, one at a time; connections are served
// concurrently. Create it with NewSocketmapServer.
type SocketmapServer struct {
	srv        *server
	lookuper   Lookuper
	maxRequest int
}

// NewSocketmapServer validates opts and returns a server ready to Serve.
func NewSocketmapServer(opts SocketmapOptions) (*SocketmapServer, error) {
	if opts.Lookuper == nil {
		return nil, errors.New("policyd: socketmap: SocketmapOptions.Lookuper is nil")
	}
	if opts.MaxRequest < 0 || opts.MaxRequest > MaxRequestLimit {
		return nil, fmt.Errorf("policyd: socketmap: SocketmapOptions.MaxRequest %d out of range 0..%d", opts.MaxRequest, MaxRequestLimit)
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("policyd: socketmap: SocketmapOptions.MaxConns %d is negative", opts.MaxConns)
	}
	s := &SocketmapServer{lookuper: opts.Lookuper, maxRequest: opts.MaxRequest}
	if s.maxRequest == 0 {
		s.maxRequest = DefaultMaxRequest
	}
	cfg := serverConfig{
		proto:        "socketmap",
		log:          opts.Logger,
		maxConns:     opts.MaxConns,
		idleTimeout:  opts.IdleTimeout,
		readTimeout:  opts.ReadTimeout,
		writeTimeout: opts.WriteTimeout,
		complete:     netstringComplete,
	}
	s.srv = newServer(cfg.withDefaults(), s.serveConn)
	return s, nil
}

// Serve accepts connections on l and serves them until l fails or the server is shut
// down. It may be called for several listeners at once. It always returns a non-nil
// error: ErrServerClosed after Shutdown or Close.
func (s *SocketmapServer) Serve(l net.Listener) error { return s.srv.serve(l) }

// Shutdown stops accepting connections, closes idle ones, and waits for the requests in
// progress to be answered, after which their connections are closed too. If ctx ends
// first, the remaining connections are closed (their Lookuper contexts cancelled) and
// ctx.Err() is returned.
func (s *SocketmapServer) Shutdown(ctx context.Context) error { return s.srv.shutdown(ctx) }

// Close closes the listeners and all connections at once, cancelling the Lookuper
// contexts. Replies in progress are lost; the MTA retries or defers.
func (s *SocketmapServer) Close() error { return s.srv.close() }

// serveConn is the per-connection loop.
func (s *SocketmapServer) serveConn(c *conn) {
	var rbuf, wbuf []byte
	for c.waitRequest() {
		payload, err := readNetstring(c.br, s.maxRequest, rbuf)
		rbuf = payload[:0]
		if err != nil {
			s.protocolError(c, err)
			return
		}
		if !c.requestRead() {
			return
		}
		r := s.answer(c, payload)
		wbuf = appendReply(wbuf[:0], r)
		if !c.write(wbuf) {
			return
		}
		// Do not keep a rare large buffer for the life of the connection.
		if cap(rbuf) > 2*netstringChunk {
			rbuf = nil
		}
		if cap(wbuf) > 4*netstringChunk {
			wbuf = nil
		}
	}
}

// protocolError handles a request that could not be read: the stream cannot be trusted
// any more, so the connection is closed. Only an over-long request gets a reply first.
func (s *SocketmapServer) protocolError(c *conn, err error) {
	log := s.srv.log
	switch {
	case errors.Is(err, ErrTooLong):
		log.Warn("socketmap: request too long, answering TEMP and closing connection",
			"conn", c.id, "remote", remoteString(c), "err", err)
		if c.write(appendReply(nil, Reply{Status: StatusTemp, Data: reasonReqTooLong})) {
			c.lingerClose()
		}
	case errors.Is(err, ErrBadLength), errors.Is(err, ErrMissingComma), errors.Is(err, ErrTruncated):
		log.Warn("socketmap: protocol error, closing connection", "conn", c.id, "remote", remoteString(c), "err", err)
	default:
		if !c.closed() {
			c.logReadEnd(err, "request")
		}
	}
}

// answer turns one request payload into the reply to send.
func (s *SocketmapServer) answer(c *conn, payload []byte) Reply {
	i := bytes.IndexByte(payload, ' ')
	if i <= 0 {
		s.srv.log.Warn("socketmap: bad request, want \"NAME KEY\"", "conn", c.id, "remote", remoteString(c), "request", logQuote(payload))
		return Reply{Status: StatusPerm, Data: reasonBadRequest}
	}
	req := string(payload)
	name, key := req[:i], req[i+1:]
	r := s.lookup(c, name, key)
	switch r.Status {
	case StatusOK:
		if r.Data == "" {
			s.srv.log.Error("socketmap: Lookuper answered OK with empty data, answering TEMP",
				"conn", c.id, "map", name, "key", logQuote(payload[i+1:]))
			return Reply{Status: StatusTemp, Data: reasonInternal}
		}
		if strings.IndexByte(r.Data, 0) >= 0 {
			// Postfix and Sendmail read the value as a C string: a NUL would silently
			// cut the policy short.
			s.srv.log.Error("socketmap: Lookuper answered OK with a NUL byte in the data, answering TEMP",
				"conn", c.id, "map", name, "key", logQuote(payload[i+1:]), "data", logQuote([]byte(r.Data)))
			return Reply{Status: StatusTemp, Data: reasonInternal}
		}
	case StatusNotFound, StatusTemp, StatusTimeout, StatusPerm:
	default:
		s.srv.log.Error("socketmap: Lookuper answered an invalid status, answering TEMP",
			"conn", c.id, "map", name, "key", logQuote(payload[i+1:]), "status", r.Status.String())
		return Reply{Status: StatusTemp, Data: reasonInternal}
	}
	if r.Status != StatusNotFound && len(r.Status.String())+1+len(r.Data) > MaxReply {
		s.srv.log.Error("socketmap: reply too long, answering TEMP",
			"conn", c.id, "map", name, "key", logQuote(payload[i+1:]), "status", r.Status.String(), "bytes", len(r.Data)+len(r.Status.String())+1, "limit", MaxReply)
		return Reply{Status: StatusTemp, Data: reasonTooLong}
	}
	return r
}

// lookup calls the Lookuper, turning a panic into TEMP.
func (s *SocketmapServer) lookup(c *conn, name, key string) (r Reply) {
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("socketmap: Lookuper panicked, answering TEMP",
				"conn", c.id, "map", name, "key", logQuote([]byte(key)), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			r = Reply{Status: StatusTemp, Data: reasonInternal}
		}
	}()
	return s.lookuper.Lookup(c.ctx, name, key)
}

// appendReply appends r, already validated, as a netstring.
func appendReply(dst []byte, r Reply) []byte {
	switch r.Status {
	case StatusOK:
		return appendNetstring2(dst, "OK ", r.Data)
	case StatusNotFound:
		return appendNetstring2(dst, "NOTFOUND ", "")
	case StatusTemp:
		return appendNetstring2(dst, "TEMP ", r.Data)
	case StatusTimeout:
		return appendNetstring2(dst, "TIMEOUT ", r.Data)
	case StatusPerm:
		return appendNetstring2(dst, "PERM ", r.Data)
	}
	return appendNetstring2(dst, "TEMP ", reasonInternal)
}

// ParseReply parses a socketmap reply payload as Postfix does: the status word up to the
// first space, the data after it. Unlike Postfix it rejects a bare "OK" (which Postfix
// silently treats as not found) and unknown status words; a bare "NOTFOUND" is accepted.
func ParseReply(payload []byte) (Reply, error) {
	word, data, hasSpace := bytes.Cut(payload, []byte{' '})
	var st Status
	switch string(word) {
	case "OK":
		if !hasSpace {
			return Reply{}, errors.New("policyd: socketmap reply: bare \"OK\" without data")
		}
		st = StatusOK
	case "NOTFOUND":
		st = StatusNotFound
	case "TEMP":
		st = StatusTemp
	case "TIMEOUT":
		st = StatusTimeout
	case "PERM":
		st = StatusPerm
	default:
		return Reply{}, fmt.Errorf("policyd: socketmap reply: unknown status %s", logQuote(word))
	}
	return Reply{Status: st, Data: string(data)}, nil
}

// SocketmapClient is a minimal socketmap client, as Postfix and Sendmail are: one
// persistent connection, one request at a time. It is meant for tools ("query the running
// daemon") and tests. It is not safe for concurrent use.
type SocketmapClient struct {
	conn       net.Conn
	br         *bufio.Reader
	wbuf, rbuf []byte
}

// DialSocketmap connects to a socketmap server. spec is "unix:/path" or "inet:host:port"
// (an IPv6 host in brackets), as for Listen.
func DialSocketmap(ctx context.Context, spec string) (*SocketmapClient, error) {
	network, addr, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("policyd: socketmap: dial %s: %w", spec, err)
	}
	return NewSocketmapClient(nc), nil
}

// parseSpec turns a listener spec into a Go network and address, by the
// rule policy.ParseListen shares with `tlsgate check`.
func parseSpec(spec string) (network, addr string, err error) {
	network, addr, err = policy.ParseListen(spec)
	if err != nil {
		return "", "", fmt.Errorf("policyd: listener %q: %w", spec, err)
	}
	return network, addr, nil
}

// NewSocketmapClient returns a client speaking on an established connection, which it
// then owns.
func NewSocketmapClient(nc net.Conn) *SocketmapClient {
	return &SocketmapClient{conn: nc, br: bufio.NewReader(nc)}
}

// Lookup sends "name key" and returns the server's reply. The context's deadline and
// cancellation apply to the exchange. An error means the connection is no longer usable:
// close it and dial again.
func (c *SocketmapClient) Lookup(ctx context.Context, name, key string) (Reply, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	c.wbuf = appendRequest(c.wbuf[:0], name, key)
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return Reply{}, c.ctxErr(ctx, fmt.Errorf("policyd: socketmap: sending request: %w", err))
	}
	payload, err := readNetstring(c.br, MaxReply, c.rbuf)
	c.rbuf = payload[:0]
	if err != nil {
		return Reply{}, c.ctxErr(ctx, fmt.Errorf("policyd: socketmap: reading reply: %w", err))
	}
	return ParseReply(payload)
}

func (c *SocketmapClient) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

// Close closes the connection.
func (c *SocketmapClient) Close() error { return c.conn.Close() }

// appendRequest appends the netstring "name key".
func appendRequest(dst []byte, name, key string) []byte {
	dst = strconv.AppendInt(dst, int64(len(name)+1+len(key)), 10)
	dst = append(dst, ':')
	dst = append(dst, name...)
	dst = append(dst, ' ')
	dst = append(dst, key...)
	return append(dst, ',')
}
