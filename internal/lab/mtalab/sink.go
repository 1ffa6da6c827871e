package mtalab

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// SinkOptions configure [StartSink].
type SinkOptions struct {
	// Hostname is the name in the greeting and EHLO reply.
	// Default: "sink.partner.test".
	Hostname string
	// TLS, if set, makes the sink offer STARTTLS with this certificate
	// (for example testpki.PKI.Sink). Default: nil, no STARTTLS.
	TLS *testpki.Cert
	// ClientAuth says whether to request a client certificate during
	// STARTTLS. Default: tls.NoClientCert.
	ClientAuth tls.ClientAuthType
	// ClientCAs verifies client certificates when ClientAuth asks for
	// verification. Default: nil.
	ClientCAs *x509.CertPool
	// RequireTLS answers "530 5.7.0 Must issue a STARTTLS command first"
	// to MAIL before STARTTLS. Default: false.
	RequireTLS bool
	// Reply, if set, is asked before each MAIL, RCPT and after the message
	// data ("DATA") with the command's argument (the address, or the
	// message for "DATA"); a non-empty result is sent instead of the
	// usual 250 reply, for example "451 4.3.0 try later". A 4xx or 5xx
	// reply to MAIL or RCPT does not record the address; one to DATA
	// records the message as not Completed. Called from the sink's
	// goroutines. Default: nil.
	Reply func(stage, arg string) string
	// Discard keeps no sessions, envelopes or message data: the sink only
	// counts ([Sink.Count], [Sink.WaitCount], [Sink.TLSSessions]), so that
	// a load of thousands of large messages costs no memory (the
	// benchmark). Messages, Envelopes and Sessions then return nothing.
	// Default: false.
	Discard bool
	// WrapConn, if set, wraps each accepted connection (the benchmark sets
	// TCP_QUICKACK through it). Default: nil.
	WrapConn func(net.Conn) net.Conn
	// Addr is the address to listen on, a loopback IPv4 address and port
	// ("127.0.0.35:25", an MX host of the dnslab lab). Default:
	// "127.0.0.1:0", a free port.
	Addr string
}

// TLSInfo describes a STARTTLS session the sink accepted.
type TLSInfo struct {
	// Version is the negotiated version (tls.VersionTLS13, ...).
	Version uint16
	// VersionName is tls.VersionName(Version), for example "TLS 1.3".
	VersionName string
	// CipherSuite is tls.CipherSuiteName of the negotiated suite.
	CipherSuite string
	// ServerName is the SNI the client sent, "" if none.
	ServerName string
	// PeerCertificates are the certificates the client presented.
	PeerCertificates []*x509.Certificate
	// Verified reports that the client certificate verified against
	// SinkOptions.ClientCAs.
	Verified bool
}

// Session is one SMTP connection to the sink.
type Session struct {
	// ID counts the sink's connections from 1.
	ID int
	// RemoteAddr is the client's address.
	RemoteAddr string
	// Helo is the last EHLO/HELO argument.
	Helo string
	// TLS is set once STARTTLS completed.
	TLS *TLSInfo
	// Commands lists every command line received, in order (the message
	// data is not included).
	Commands []string
}

// Message is one envelope the sink saw: from MAIL FROM on, also if the
// transaction never completed.
type Message struct {
	// Session is the ID of the connection.
	Session int
	// Helo is the EHLO/HELO argument of the session.
	Helo string
	// From is the MAIL FROM address without angle brackets ("" for <>).
	From string
	// To are the accepted RCPT TO addresses without angle brackets.
	To []string
	// Data is the message as received, dot-unstuffed, CRLF line ends,
	// without the final ".".
	Data []byte
	// Completed reports that DATA ended and the sink answered 250.
	Completed bool
	// TLS is the session's TLS state at MAIL FROM, nil for cleartext.
	TLS *TLSInfo
	// Time is when MAIL FROM arrived.
	Time time.Time
}

// Sink is an SMTP server on 127.0.0.1 that accepts every message,
// records it (unless SinkOptions.Discard) and counts it. It offers
// PIPELINING and answers a pipelined group of commands in one write.
// Start it with [StartSink].
type Sink struct {
	opts SinkOptions
	ln   net.Listener
	tcfg *tls.Config
	cert atomic.Pointer[tls.Certificate] // served from the next handshake on (SetTLS)
	addr string

	mu       sync.Mutex
	cond     *sync.Cond
	sessions []*Session
	msgs     []*Message
	counts   map[string]int       // completed messages by recipient domain
	last     map[string]time.Time // when the last of them completed
	tlsN     int                  // sessions that completed STARTTLS
	nSess    int                  // sessions accepted
	conns    map[net.Conn]bool
	closed   bool
	wg       sync.WaitGroup
}

// maxData caps a message; a larger one is rejected with 552.
const maxData = 32 << 20

// StartSink starts a sink on a free port of 127.0.0.1; it is stopped by
// t.Cleanup. It fails the test if it cannot listen.
func StartSink(t T, opts SinkOptions) *Sink {
	t.Helper()
	s, err := NewSink(opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// NewSink starts a sink like [StartSink] without a T; call Close.
func NewSink(opts SinkOptions) (*Sink, error) {
	if opts.Hostname == "" {
		opts.Hostname = "sink.partner.test"
	}
	s := &Sink{opts: opts, conns: map[net.Conn]bool{}, counts: map[string]int{}, last: map[string]time.Time{}}
	s.cond = sync.NewCond(&s.mu)
	if opts.TLS != nil {
		pair, err := tls.LoadX509KeyPair(opts.TLS.ChainFile, opts.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mtalab: sink: load %s: %w", opts.TLS.ChainFile, err)
		}
		s.cert.Store(&pair)
		s.tcfg = &tls.Config{
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil },
			ClientAuth:     opts.ClientAuth,
			ClientCAs:      opts.ClientCAs,
		}
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().Is4() || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("mtalab: sink: Addr %q: want a loopback IPv4 address and port", addr)
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("mtalab: sink: listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.addr = ln.Addr().String()
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Addr returns "IP:PORT", 127.0.0.1 unless SinkOptions.Addr says otherwise.
func (s *Sink) Addr() string { return s.addr }

// Port returns the sink's TCP port.
func (s *Sink) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Nexthop returns the Postfix transport nexthop "smtp:[IP]:PORT".
func (s *Sink) Nexthop() string {
	return fmt.Sprintf("smtp:[%s]:%d", s.ln.Addr().(*net.TCPAddr).IP, s.Port())
}

// SetTLS replaces the certificate of a sink that offers STARTTLS: the
// handshakes from now on present cert (a partner renewing or swapping
// its certificate).
func (s *Sink) SetTLS(cert *testpki.Cert) error {
	if s.tcfg == nil {
		return fmt.Errorf("mtalab: sink %s offers no STARTTLS", s.addr)
	}
	pair, err := tls.LoadX509KeyPair(cert.ChainFile, cert.KeyFile)
	if err != nil {
		return fmt.Errorf("mtalab: sink: load %s: %w", cert.ChainFile, err)
	}
	s.cert.Store(&pair)
	return nil
}

// Close stops listening, drops open connections and waits for the
// sink's goroutines. Recorded data stays readable.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// Messages returns copies of the completed messages, in arrival order.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.msgs {
		if m.Completed {
			out = append(out, copyMessage(m))
		}
	}
	return out
}

// Envelopes returns copies of all envelopes (MAIL FROM seen), completed
// or not. Use it to assert that a sink "never saw an envelope".
func (s *Sink) Envelopes() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, 0, len(s.msgs))
	for _, m := range s.msgs {
		out = append(out, copyMessage(m))
	}
	return out
}

// Sessions returns copies of all connections seen so far.
func (s *Sink) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Session, 0, len(s.sessions))
	for _, x := range s.sessions {
		c := *x
		c.Commands = append([]string(nil), x.Commands...)
		out = append(out, c)
	}
	return out
}

// WaitMessages waits until at least n messages completed and returns
// them, or returns an error after timeout.
func (s *Sink) WaitMessages(n int, timeout time.Duration) ([]Message, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	for {
		got := 0
		for _, m := range s.msgs {
			if m.Completed {
				got++
			}
		}
		if got >= n {
			s.mu.Unlock()
			return s.Messages(), nil
		}
		if s.closed || !time.Now().Before(deadline) {
			env, sess := len(s.msgs), len(s.sessions)
			s.mu.Unlock()
			return s.Messages(), fmt.Errorf("mtalab: sink %s: %d of %d messages after %v (%d envelopes, %d sessions)",
				s.addr, got, n, timeout, env, sess)
		}
		s.cond.Wait()
	}
}

// Count returns how many completed messages had a recipient in domain
// (a message counts once for each of its recipients there) and when the
// last of them completed.
func (s *Sink) Count(domain string) (n int, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := strings.ToLower(domain)
	return s.counts[d], s.last[d]
}

// TLSSessions returns how many sessions completed STARTTLS.
func (s *Sink) TLSSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsN
}

// WaitCount waits until [Sink.Count] of domain reaches n and returns the
// time the n-th completed, or an error after timeout.
func (s *Sink) WaitCount(domain string, n int, timeout time.Duration) (time.Time, error) {
	d := strings.ToLower(domain)
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.counts[d] < n {
		if s.closed || !time.Now().Before(deadline) {
			return time.Time{}, fmt.Errorf("mtalab: sink %s: %d of %d messages for %s after %v", s.addr, s.counts[d], n, d, timeout)
		}
		s.cond.Wait()
	}
	return s.last[d], nil
}

func copyMessage(m *Message) Message {
	c := *m
	c.To = append([]string(nil), m.To...)
	c.Data = append([]byte(nil), m.Data...)
	return c
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.nSess++
		sess := &Session{ID: s.nSess, RemoteAddr: c.RemoteAddr().String()}
		if !s.opts.Discard {
			s.sessions = append(s.sessions, sess)
		}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if s.opts.WrapConn != nil {
				s.handle(s.opts.WrapConn(c), sess)
			} else {
				s.handle(c, sess)
			}
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// conn is one SMTP session's state.
type sinkConn struct {
	s    *Sink
	sess *Session
	c    net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	tls  *TLSInfo
	cur  *Message
}

// reply writes the reply lines; it sends them at once unless more
// pipelined commands wait, which are then answered together.
func (x *sinkConn) reply(lines ...string) error {
	for _, l := range lines {
		x.w.WriteString(l)
		x.w.WriteString("\r\n")
	}
	if x.r.Buffered() > 0 {
		return nil
	}
	return x.w.Flush()
}

func (x *sinkConn) setConn(c net.Conn) {
	x.c = c
	x.r = bufio.NewReaderSize(c, 16<<10)
	x.w = bufio.NewWriter(c)
}

func (x *sinkConn) hook(stage, arg string) string {
	if x.s.opts.Reply == nil {
		return ""
	}
	return x.s.opts.Reply(stage, arg)
}

func (s *Sink) handle(c net.Conn, sess *Session) {
	x := &sinkConn{s: s, sess: sess}
	x.setConn(c)
	if x.reply("220 "+s.opts.Hostname+" ESMTP mtalab sink") != nil {
		return
	}
	for {
		// An idle client is dropped after Postfix's smtpd_timeout.
		x.c.SetDeadline(time.Now().Add(5 * time.Minute))
		line, err := x.r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		if !s.opts.Discard {
			s.mu.Lock()
			sess.Commands = append(sess.Commands, line)
			s.mu.Unlock()
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			s.setHelo(sess, arg)
			x.cur = nil
			ext := []string{"250-" + s.opts.Hostname, "250-PIPELINING", "250-8BITMIME", "250-SIZE " + strconv.Itoa(maxData)}
			if s.tcfg != nil && x.tls == nil {
				ext = append(ext, "250-STARTTLS")
			}
			err = x.reply(append(ext, "250 ENHANCEDSTATUSCODES")...)
		case "HELO":
			s.setHelo(sess, arg)
			x.cur = nil
			err = x.reply("250 " + s.opts.Hostname)
		case "STARTTLS":
			if s.tcfg == nil || x.tls != nil {
				err = x.reply("502 5.5.1 STARTTLS not available")
				break
			}
			if err = x.reply("220 2.0.0 Ready to start TLS"); err != nil || x.w.Flush() != nil {
				return
			}
			tc := tls.Server(x.c, s.tcfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			st := tc.ConnectionState()
			info := &TLSInfo{
				Version: st.Version, VersionName: tls.VersionName(st.Version),
				CipherSuite: tls.CipherSuiteName(st.CipherSuite), ServerName: st.ServerName,
				PeerCertificates: st.PeerCertificates, Verified: len(st.VerifiedChains) > 0,
			}
			x.tls = info
			x.cur = nil
			x.setConn(tc)
			s.mu.Lock()
			sess.TLS = info
			sess.Helo = ""
			s.tlsN++
			s.mu.Unlock()
		case "MAIL":
			addr, ok := pathArg(arg, "FROM:")
			switch {
			case !ok:
				err = x.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
			case s.opts.RequireTLS && x.tls == nil:
				err = x.reply("530 5.7.0 Must issue a STARTTLS command first")
			case x.cur != nil:
				err = x.reply("503 5.5.1 Nested MAIL command")
			default:
				if r := x.hook("MAIL", addr); r != "" {
					err = x.reply(r)
					break
				}
				s.mu.Lock()
				x.cur = &Message{Session: sess.ID, Helo: sess.Helo, From: addr, TLS: x.tls, Time: time.Now()}
				if !s.opts.Discard {
					s.msgs = append(s.msgs, x.cur)
					s.cond.Broadcast()
				}
				s.mu.Unlock()
				err = x.reply("250 2.1.0 Ok")
			}
		case "RCPT":
			addr, ok := pathArg(arg, "TO:")
			switch {
			case !ok:
				err = x.reply("501 5.5.4 Syntax: RCPT TO:<address>")
			case x.cur == nil:
				err = x.reply("503 5.5.1 Need MAIL command")
			default:
				if r := x.hook("RCPT", addr); r != "" {
					err = x.reply(r)
					break
				}
				s.mu.Lock()
				x.cur.To = append(x.cur.To, addr)
				s.mu.Unlock()
				err = x.reply("250 2.1.5 Ok")
			}
		case "DATA":
			if x.cur == nil || len(x.cur.To) == 0 {
				err = x.reply("503 5.5.1 Need RCPT command")
				break
			}
			if err = x.reply("354 End data with <CR><LF>.<CR><LF>"); err != nil {
				return
			}
			data, derr := readData(x.r, !s.opts.Discard)
			if derr != nil && !errors.Is(derr, errTooBig) {
				return
			}
			m := x.cur
			x.cur = nil
			s.mu.Lock()
			m.Data = data
			s.mu.Unlock()
			if errors.Is(derr, errTooBig) {
				err = x.reply("552 5.3.4 Message too big")
				break
			}
			if r := x.hook("DATA", string(data)); r != "" {
				err = x.reply(r)
				break
			}
			now := time.Now()
			s.mu.Lock()
			m.Completed = true
			for _, to := range m.To {
				d := to
				if at := strings.LastIndexByte(to, '@'); at >= 0 {
					d = to[at+1:]
				}
				d = strings.ToLower(d)
				s.counts[d]++
				s.last[d] = now
			}
			s.cond.Broadcast()
			s.mu.Unlock()
			err = x.reply("250 2.0.0 Ok: queued as " + strconv.Itoa(sess.ID) + "." + strconv.Itoa(len(m.To)))
		case "RSET":
			x.cur = nil
			err = x.reply("250 2.0.0 Ok")
		case "NOOP":
			err = x.reply("250 2.0.0 Ok")
		case "VRFY":
			err = x.reply("252 2.0.0 Cannot VRFY")
		case "QUIT":
			x.reply("221 2.0.0 Bye")
			return
		default:
			err = x.reply("500 5.5.2 Command unrecognized")
		}
		if err != nil {
			return
		}
	}
}

func (s *Sink) setHelo(sess *Session, h string) {
	s.mu.Lock()
	sess.Helo = strings.TrimSpace(h)
	s.mu.Unlock()
}

// pathArg parses `FROM:<addr> PARAMS` (prefix "FROM:") and returns addr.
func pathArg(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if !strings.HasPrefix(rest, "<") {
		return "", false
	}
	end := strings.IndexByte(rest, '>')
	if end < 0 {
		return "", false
	}
	return rest[1:end], true
}

var errTooBig = errors.New("message too big")

// readData reads a DATA body up to the line ".", undoing dot-stuffing;
// without keep it returns nothing of it.
func readData(r *bufio.Reader, keep bool) ([]byte, error) {
	var buf bytes.Buffer
	tooBig := false
	lineStart := true
	size := 0
	for {
		line, err := r.ReadSlice('\n')
		full := errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !full {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf.Bytes(), err
		}
		if lineStart {
			if !full && (string(line) == ".\r\n" || string(line) == ".\n") {
				break
			}
			if line[0] == '.' {
				line = line[1:]
			}
		}
		// A full buffer is part of a long line: the next chunk
		// continues it.
		lineStart = !full
		size += len(line)
		if size > maxData {
			tooBig = true
		}
		if !tooBig && keep {
			buf.Write(line)
		}
	}
	if tooBig {
		return buf.Bytes(), errTooBig
	}
	return buf.Bytes(), nil
}
