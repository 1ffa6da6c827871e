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
	"runtime/debug"
	"strings"
	"time"
)

// Request is one policy-delegation request: attribute name → value, exactly as received
// (values of ccert_subject and ccert_issuer are still xtext-encoded: see certid.DecodeXtext).
// Postfix 3.7 sends about 30 attributes, among them request=smtpd_access_policy,
// protocol_state, client_address, queue_id, ccert_fingerprint and ccert_pubkey_fingerprint.
type Request map[string]string

// Policy-delegation parse errors. ParseDelegation wraps them with the line number and
// sizes involved, so test them with errors.Is.
var (
	// ErrLineTooLong reports an attribute line longer than DelegationLimits.MaxLine.
	ErrLineTooLong = errors.New("policyd: delegation: attribute line too long")
	// ErrTooManyAttrs reports a request with more than DelegationLimits.MaxAttrs attributes.
	ErrTooManyAttrs = errors.New("policyd: delegation: too many attributes")
	// ErrRequestTooLarge reports a request larger than DelegationLimits.MaxRequest bytes.
	ErrRequestTooLarge = errors.New("policyd: delegation: request too large")
	// ErrDuplicateAttr reports an attribute name that occurs twice in one request.
	ErrDuplicateAttr = errors.New("policyd: delegation: duplicate attribute")
	// ErrMissingEquals reports a line without '=' between name and value.
	ErrMissingEquals = errors.New("policyd: delegation: attribute line without '='")
	// ErrEmptyName reports a line starting with '='.
	ErrEmptyName = errors.New("policyd: delegation: empty attribute name")
	// ErrNULByte reports a NUL byte in a name or value (Postfix never sends one).
	ErrNULByte = errors.New("policyd: delegation: NUL byte in attribute")
	// ErrEmptyRequest reports a request with no attribute (an empty line first).
	ErrEmptyRequest = errors.New("policyd: delegation: empty request")
	// ErrUnterminated reports a stream that ends inside a request, before its empty line.
	// It wraps io.ErrUnexpectedEOF.
	ErrUnterminated = fmt.Errorf("policyd: delegation: request not terminated by an empty line: %w", io.ErrUnexpectedEOF)
)

// Default policy-delegation limits (see DelegationLimits).
const (
	// DefaultDelegationMaxLine is the default longest attribute line, in bytes.
	DefaultDelegationMaxLine = 4096
	// DefaultDelegationMaxAttrs is the default most attributes in one request.
	DefaultDelegationMaxAttrs = 100
	// DefaultDelegationMaxRequest is the default largest request, in bytes.
	DefaultDelegationMaxRequest = 64 << 10
)

// DelegationLimits bounds what ParseDelegation accepts. Zero values select the defaults.
type DelegationLimits struct {
	// MaxLine is the longest "name=value" line, in bytes without its '\n'. Default
	// DefaultDelegationMaxLine (4096): Postfix's longest values (addresses, xtext-encoded
	// certificate CNs of at most 64 characters, policy_context) stay far below it.
	MaxLine int
	// MaxAttrs is the most attributes in one request. Default DefaultDelegationMaxAttrs
	// (100); Postfix 3.7 sends 29.
	MaxAttrs int
	// MaxRequest is the largest request in bytes, newlines included. Default
	// DefaultDelegationMaxRequest (64 KiB); a Postfix request is typically under 1 KiB.
	MaxRequest int
}

func (l DelegationLimits) withDefaults() DelegationLimits {
	if l.MaxLine <= 0 {
		l.MaxLine = DefaultDelegationMaxLine
	}
	if l.MaxAttrs <= 0 {
		l.MaxAttrs = DefaultDelegationMaxAttrs
	}
	if l.MaxRequest <= 0 {
		l.MaxRequest = DefaultDelegationMaxRequest
	}
	return l
}

// ParseDelegation reads one policy-delegation request from r: "name=value" lines, each
// ended by '\n', up to and including an empty line. The name is what precedes the first
// '='; the value, everything after it, may be empty and is kept verbatim (no CR stripping,
// no UTF-8 check). Names must be non-empty and unique, and neither names nor values may
// contain NUL. The limits are enforced while reading, so a hostile peer cannot make the
// parser hold more than lim.MaxRequest bytes (plus the bufio buffer).
//
// ParseDelegation returns io.EOF, unwrapped, if r ends before the first byte of a request.
// Other errors wrap one of the Err* values of this package, or the underlying read error.
// After an error the stream is out of step and should be abandoned.
func ParseDelegation(r *bufio.Reader, lim DelegationLimits) (Request, error) {
	req, _, err := parseDelegation(r, lim.withDefaults(), nil)
	return req, err
}

// parseDelegation is ParseDelegation with a reusable scratch buffer for long lines.
func parseDelegation(r *bufio.Reader, lim DelegationLimits, scratch []byte) (Request, []byte, error) {
	var req Request
	total := 0
	for lineNo := 1; ; lineNo++ {
		line, err := readSlice(r, lim.MaxLine, &scratch)
		if err != nil {
			switch {
			case err == io.EOF && lineNo == 1 && len(line) == 0:
				return nil, scratch, io.EOF
			case err == io.EOF:
				return nil, scratch, fmt.Errorf("%w (after %d attributes)", ErrUnterminated, len(req))
			case errors.Is(err, ErrLineTooLong):
				return nil, scratch, fmt.Errorf("%w: line %d exceeds %d bytes", ErrLineTooLong, lineNo, lim.MaxLine)
			}
			return nil, scratch, fmt.Errorf("policyd: delegation: reading line %d: %w", lineNo, err)
		}
		total += len(line) + 1
		if total > lim.MaxRequest {
			return nil, scratch, fmt.Errorf("%w: more than %d bytes at line %d", ErrRequestTooLarge, lim.MaxRequest, lineNo)
		}
		if len(line) == 0 {
			if len(req) == 0 {
				return nil, scratch, ErrEmptyRequest
			}
			return req, scratch, nil
		}
		eq := bytes.IndexByte(line, '=')
		switch {
		case eq < 0:
			return nil, scratch, fmt.Errorf("%w: line %d: %s", ErrMissingEquals, lineNo, logQuote(line))
		case eq == 0:
			return nil, scratch, fmt.Errorf("%w: line %d: %s", ErrEmptyName, lineNo, logQuote(line))
		case bytes.IndexByte(line, 0) >= 0:
			return nil, scratch, fmt.Errorf("%w: line %d: %s", ErrNULByte, lineNo, logQuote(line))
		}
		if req == nil {
			req = make(Request, 32)
		}
		if len(req) >= lim.MaxAttrs {
			return nil, scratch, fmt.Errorf("%w: more than %d at line %d", ErrTooManyAttrs, lim.MaxAttrs, lineNo)
		}
		name := line[:eq]
		if _, dup := req[string(name)]; dup {
			return nil, scratch, fmt.Errorf("%w: %s at line %d", ErrDuplicateAttr, logQuote(name), lineNo)
		}
		req[string(name)] = string(line[eq+1:])
	}
}

// readSlice returns the next line without its '\n'. The result aliases r's buffer or
// *scratch and is valid until the next read. A line longer than maxLine is ErrLineTooLong
// as soon as that many bytes have been seen. At end of stream it returns the partial line
// and io.EOF.
func readSlice(r *bufio.Reader, maxLine int, scratch *[]byte) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil {
		line = line[:len(line)-1]
		if len(line) > maxLine {
			return nil, ErrLineTooLong
		}
		return line, nil
	}
	if err != bufio.ErrBufferFull {
		if len(line) > maxLine {
			return nil, ErrLineTooLong
		}
		return line, err
	}
	buf := append((*scratch)[:0], line...)
	for {
		if len(buf) > maxLine {
			*scratch = buf[:0]
			return nil, ErrLineTooLong
		}
		line, err = r.ReadSlice('\n')
		buf = append(buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		*scratch = buf[:0]
		if err == nil {
			buf = buf[:len(buf)-1]
		}
		if len(buf) > maxLine {
			return nil, ErrLineTooLong
		}
		return buf, err
	}
}

// Decider decides one policy-delegation request.
type Decider interface {
	// Decide returns the action text, for example "DUNNO", "DEFER_IF_PERMIT ..." or
	// "450 4.7.1 TLS required by local policy": anything Postfix accepts in an access(5)
	// table (see the Postfix access(5) manual). It is called sequentially for the requests
	// of one connection and concurrently across connections; ctx is cancelled when the
	// connection is torn down by Close or an expired Shutdown. A panic, an empty action or
	// one containing a newline or NUL is answered with ActionTempFail.
	Decide(ctx context.Context, req Request) string
}

// DecideFunc adapts a function to the Decider interface.
type DecideFunc func(ctx context.Context, req Request) string

// Decide calls f(ctx, req).
func (f DecideFunc) Decide(ctx context.Context, req Request) string { return f(ctx, req) }

// ActionTempFail is the action sent when the Decider fails (panics or returns an unusable
// action): a temporary rejection, the same status Postfix applies by default
// (smtpd_policy_service_default_action) when it cannot reach the policy service.
const ActionTempFail = "451 4.3.5 Policy service temporary failure"

// DelegationOptions configures a DelegationServer. Zero values select the defaults.
type DelegationOptions struct {
	// Decider answers the requests. Required.
	Decider Decider
	// Limits bounds each request; see DelegationLimits.
	Limits DelegationLimits
	// IdleTimeout is how long a connection may wait for its next request. Default
	// DefaultIdleTimeout (10 minutes), above Postfix's smtpd_policy_service_max_idle
	// (300 s), after which Postfix closes idle connections itself; negative: no limit.
	// Enforced to within 1/16 of its value.
	IdleTimeout time.Duration
	// ReadTimeout bounds the reading of the rest of a request once its first byte has
	// arrived. Default DefaultReadTimeout (10 s); negative: no limit.
	ReadTimeout time.Duration
	// WriteTimeout bounds the writing of one reply. Default DefaultWriteTimeout (10 s);
	// negative: no limit.
	WriteTimeout time.Duration
	// MaxConns is the most connections served at once; at the cap the one that has been
	// sending an unfinished request for the longest time is closed to make room, or, if
	// there is none, the longest-idle one, or, if none is idle, the new one is closed at
	// once. Default DefaultMaxConns (1000), above Postfix's default smtpd process limit
	// (100).
	MaxConns int
	// Logger receives protocol errors and Decider bugs. Default slog.Default().
	Logger *slog.Logger
}

// DelegationServer serves the Postfix SMTP access policy delegation protocol on persistent
// connections, answering each request in order. On a protocol error it logs and closes the
// connection without replying, as SMTPD_POLICY_README asks; Postfix then retries or applies
// its default action. Create it with NewDelegationServer.
type DelegationServer struct {
	srv     *server
	decider Decider
	limits  DelegationLimits
}

// NewDelegationServer validates opts and returns a server ready to Serve.
func NewDelegationServer(opts DelegationOptions) (*DelegationServer, error) {
	if opts.Decider == nil {
		return nil, errors.New("policyd: delegation: DelegationOptions.Decider is nil")
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("policyd: delegation: DelegationOptions.MaxConns %d is negative", opts.MaxConns)
	}
	if l := opts.Limits; l.MaxLine < 0 || l.MaxAttrs < 0 || l.MaxRequest < 0 {
		return nil, fmt.Errorf("policyd: delegation: negative DelegationOptions.Limits %+v", l)
	}
	s := &DelegationServer{decider: opts.Decider, limits: opts.Limits.withDefaults()}
	cfg := serverConfig{
		proto:        "delegation",
		log:          opts.Logger,
		maxConns:     opts.MaxConns,
		idleTimeout:  opts.IdleTimeout,
		readTimeout:  opts.ReadTimeout,
		writeTimeout: opts.WriteTimeout,
		complete:     delegationComplete,
	}
	s.srv = newServer(cfg.withDefaults(), s.serveConn)
	return s, nil
}

// Serve accepts connections on l and serves them until l fails or the server is shut
// down. It may be called for several listeners at once. It always returns a non-nil
// error: ErrServerClosed after Shutdown or Close.
func (s *DelegationServer) Serve(l net.Listener) error { return s.srv.serve(l) }

// Shutdown stops accepting connections, closes idle ones, and waits for the requests in
// progress to be answered. If ctx ends first, the remaining connections are closed and
// ctx.Err() is returned.
func (s *DelegationServer) Shutdown(ctx context.Context) error { return s.srv.shutdown(ctx) }

// Close closes the listeners and all connections at once.
func (s *DelegationServer) Close() error { return s.srv.close() }

func (s *DelegationServer) serveConn(c *conn) {
	var scratch, wbuf []byte
	for c.waitRequest() {
		req, sc, err := parseDelegation(c.br, s.limits, scratch)
		scratch = sc
		if cap(scratch) > 2*DefaultDelegationMaxLine {
			scratch = nil
		}
		if err != nil {
			if err == io.EOF || c.closed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
				c.logReadEnd(err, "request")
				return
			}
			s.srv.log.Warn("delegation: protocol error, closing connection without reply",
				"conn", c.id, "remote", remoteString(c), "err", err)
			return
		}
		if !c.requestRead() {
			return
		}
		action := s.decide(c, req)
		wbuf = append(wbuf[:0], "action="...)
		wbuf = append(wbuf, action...)
		wbuf = append(wbuf, "\n\n"...)
		if !c.write(wbuf) {
			return
		}
	}
}

// decide calls the Decider and vets its answer.
func (s *DelegationServer) decide(c *conn, req Request) (action string) {
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("delegation: Decider panicked, answering temporary failure",
				"conn", c.id, "queue_id", req["queue_id"], "protocol_state", req["protocol_state"],
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			action = ActionTempFail
		}
	}()
	action = s.decider.Decide(c.ctx, req)
	switch {
	case action == "":
		s.srv.log.Error("delegation: Decider returned an empty action, answering temporary failure",
			"conn", c.id, "queue_id", req["queue_id"])
		return ActionTempFail
	case len(action) > s.limits.MaxLine-len("action="):
		s.srv.log.Error("delegation: Decider returned an over-long action, answering temporary failure",
			"conn", c.id, "queue_id", req["queue_id"], "bytes", len(action))
		return ActionTempFail
	case strings.ContainsAny(action, "\n\r\x00"):
		s.srv.log.Error("delegation: Decider returned an action with CR, LF or NUL, answering temporary failure",
			"conn", c.id, "queue_id", req["queue_id"], "action", logQuote([]byte(action)))
		return ActionTempFail
	}
	return action
}

// delegationComplete reports whether buf holds a whole request, up to its empty line.
func delegationComplete(buf []byte) bool {
	return len(buf) > 0 && buf[0] == '\n' || bytes.Contains(buf, []byte("\n\n"))
}
