package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/internal/listen"
	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// Options configure a Server.
type Options struct {
	// Policy returns the current model. It is called once per SMTP
	// session; a session keeps the model it started with, so a reload
	// affects new sessions only. Required.
	Policy func() *policy.Policy
	// Logger receives one line per decision (Info for pass/none, Warn for
	// failures) and internal errors, and the warnings about MTA
	// connections (go-milter's own, the connection cap, timeouts,
	// malformed packets), these limited by logx.Limit's defaults. Default:
	// slog.Default().
	Logger *slog.Logger
	// Hostname is our MTA's host name, written in the by-clause of our
	// Received line and used as the authserv-id when the policy sets none.
	// Default: the MTA's "j" macro, else os.Hostname().
	Hostname string
	// Now is the clock: the instant each MAIL FROM is judged at (an
	// exception applies until it expires, policy.Policy.At) and the
	// date of the trace headers. Default: time.Now.
	Now func() time.Time
	// OnDecision, if set, is called once per logged decision (for
	// metrics). It must be fast and must not block.
	OnDecision func(Decision)

	// MaxConns is the most MTA connections served at once. Default
	// DefaultMaxConns. At the cap a new connection closes the one whose
	// packet has been arriving the longest (MTAs write each packet at
	// once), else the one idle for the longest time (its SMTP session is
	// then temp-failed by the MTA's milter_default_action), else it is
	// closed itself.
	MaxConns int
	// IdleTimeout is how long a connection may wait for the MTA's next
	// packet. Default DefaultIdleTimeout; negative: no limit.
	IdleTimeout time.Duration
	// PacketTimeout is how long the rest of a packet may take once its
	// first byte has arrived. Default DefaultPacketTimeout; negative: no
	// limit.
	PacketTimeout time.Duration
}

// Server is the tlsgate milter.
type Server struct {
	opts    Options
	log     *slog.Logger // decisions and internal errors
	connLog *slog.Logger // problems with MTA connections, rate-limited
	srv     *gomilter.Server
	conns   *listen.Conns
	lim     limits
}

// Actions the milter needs from the MTA: insert headers, and change
// (delete) forged ones.
const neededActions = gomilter.OptAddHeader | gomilter.OptChangeHeader

// Events the milter does not need, and replies it does not send.
const protocolOpts = gomilter.OptNoRcptTo | gomilter.OptNoData | gomilter.OptNoBody |
	gomilter.OptNoEOH | gomilter.OptNoUnknown |
	gomilter.OptNoConnReply | gomilter.OptNoHeloReply | gomilter.OptNoHeaderReply

// New makes a milter server. It does not listen; call Serve.
func New(opts Options) (*Server, error) {
	if opts.Policy == nil {
		return nil, errors.New("milter: Options.Policy is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxConns < 0 {
		return nil, fmt.Errorf("milter: Options.MaxConns %d is negative", opts.MaxConns)
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = DefaultMaxConns
	}
	// Warnings about MTA connections can be caused by any local client of
	// the socket: rate-limited, unlike the decisions.
	connLog := slog.New(logx.Limit(opts.Logger.Handler(), logx.LimitOptions{Name: "milter"}))
	s := &Server{
		opts: opts, log: opts.Logger, connLog: connLog,
		conns: listen.NewConns(listen.ConnsOptions{Name: "milter", MaxConns: opts.MaxConns, MaxHeld: maxBuffered, Logger: connLog}),
		lim:   limits{idle: resolveTimeout(opts.IdleTimeout, DefaultIdleTimeout), packet: resolveTimeout(opts.PacketTimeout, DefaultPacketTimeout)},
	}
	libraryLog(connLog)
	s.srv = gomilter.NewServer(
		gomilter.WithMilter(func() gomilter.Milter { return &session{srv: s} }),
		gomilter.WithActions(neededActions),
		gomilter.WithProtocols(protocolOpts),
		gomilter.WithNegotiationCallback(negotiate),
		gomilter.WithMacroRequest(gomilter.StageConnect, ConnectMacros),
		gomilter.WithMacroRequest(gomilter.StageHelo, HeloMacros),
		gomilter.WithMacroRequest(gomilter.StageMail, MailMacros),
		gomilter.WithMacroRequest(gomilter.StageEOM, EOMMacros),
	)
	return s, nil
}

// negotiate accepts any MTA that lets us change headers, and asks only for
// the protocol options it offers (instead of go-milter's all-or-nothing).
func negotiate(mtaVersion, milterVersion uint32, mtaActions, milterActions gomilter.OptAction, mtaProtocol, milterProtocol gomilter.OptProtocol, offered gomilter.DataSize) (uint32, gomilter.OptAction, gomilter.OptProtocol, gomilter.DataSize, error) {
	version := min(mtaVersion, milterVersion)
	if version < 2 {
		return 0, 0, 0, 0, fmt.Errorf("milter: MTA speaks milter protocol version %d, need at least 2", mtaVersion)
	}
	if mtaActions&neededActions != neededActions {
		return 0, 0, 0, 0, fmt.Errorf("milter: MTA does not allow adding and changing headers (offered actions %#x)", uint32(mtaActions))
	}
	return version, milterActions & mtaActions, milterProtocol & mtaProtocol, offered, nil
}

func (s *Server) decided(d Decision) {
	if s.opts.OnDecision != nil {
		s.opts.OnDecision(d)
	}
}

// resolveTimeout maps an option value to the effective timeout: zero means
// def, negative means none (-1).
func resolveTimeout(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Serve accepts MTA connections on ln until Shutdown or Close. It returns
// nil after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(guardListener{Listener: ln, conns: s.conns, lim: s.lim, log: s.connLog})
	if errors.Is(err, gomilter.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits until the open MTA
// sessions end or ctx is done (then they are closed).
func (s *Server) Shutdown(ctx context.Context) error {
	s.conns.Stop()
	return s.srv.Shutdown(ctx)
}

// Close stops the server at once, closing all MTA sessions.
func (s *Server) Close() error {
	s.conns.Stop()
	return s.srv.Close()
}

// tempFail is the reply for internal failures.
func tempFail() *gomilter.Response {
	r, err := refusal(policy.OutcomeTempFail)
	if err != nil {
		return gomilter.RespTempFail
	}
	return r
}

// refusal is the milter reply of an outcome that refuses the mail: the
// model's reply (policy.Outcome.Reply), code and enhanced status code.
func refusal(o policy.Outcome) (*gomilter.Response, error) {
	r := o.Reply()
	return gomilter.RejectWithCodeAndReason(uint16(r.Code), r.Message())
}

// session is the state of one MTA milter connection (one SMTP session).
type session struct {
	gomilter.NoOpMilter
	srv *Server

	pol    *policy.Policy
	mta    policy.MTA
	host   string // by-clause host
	authID string // authserv-id

	conn     map[string]string // connection macros seen so far
	tls      map[string]string // the session's TLS macros (latest full set)
	connHost string            // host and address from the connect event
	connAddr string
	helo     string
	broken   error // internal failure that taints the whole session

	msg *message
}

// message is the state of one transaction, from MAIL FROM to EOM/ABORT.
type message struct {
	obs     observation
	verdict policy.Verdict
	dec     Decision
	logged  bool
	failed  error // internal failure: answer temp-fail at EOM

	nReceived, nAuthRes int
	forgedReceived      []int
	forgedAuthRes       []int
}

func (c *session) reset() {
	c.pol, c.mta, c.host, c.authID = nil, "", "", ""
	c.conn = map[string]string{}
	c.tls = nil
	c.connHost, c.connAddr, c.helo = "", "", ""
	c.broken = nil
	c.msg = nil
}

// absorb copies the connection and TLS macros the MTA reports now into
// the session's own state. The TLS set is replaced as a whole and only
// when it reports a TLS version, so that go-milter's clearing of stages on
// ABORT, and Postfix's silence at EOH/EOM, cannot lose or mix it.
func (c *session) absorb(m gomilter.Macros) {
	for _, n := range ConnectMacros {
		if v, ok := m.GetEx(n); ok {
			c.conn[n] = v
		}
	}
	if v, ok := m.GetEx(macroTLSVersion); ok && strings.TrimSpace(v) != "" {
		t := make(map[string]string, len(tlsMacros))
		for _, n := range tlsMacros {
			if v, ok := m.GetEx(n); ok {
				t[n] = v
			}
		}
		c.tls = t
	}
}

// get looks a macro up in the session's own state.
func (c *session) get(msgVals map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		if v, ok := msgVals[name]; ok {
			return v, true
		}
		if v, ok := c.tls[name]; ok {
			return v, true
		}
		v, ok := c.conn[name]
		return v, ok
	}
}

// guard turns a panic into a temp-fail. A panic before any message
// (connect, HELO) taints the session: every MAIL FROM is then answered
// with a temp-fail. A panic while reading headers fails the message at
// EOM (no reply is sent for headers). Elsewhere the reply is a temp-fail.
func (c *session) guard(stage string, resp **gomilter.Response, err *error) {
	r := recover()
	if r == nil {
		return
	}
	e := fmt.Errorf("panic in %s: %v", stage, r)
	c.srv.log.Debug("tlsgate: panic", "stage", stage, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	switch stage {
	case "connect", "helo", "new connection":
		c.broken = e
	case "header":
		if c.msg != nil {
			c.msg.failed = e
		}
	default:
		c.internalError(e)
		c.msg = nil
	}
	if resp != nil {
		*resp = tempFail()
	}
	if err != nil {
		*err = nil
	}
}

// internalError logs an internal failure as a tempfail decision.
func (c *session) internalError(err error) {
	d := c.baseDecision()
	if c.msg != nil {
		d = c.msg.dec
		c.msg.logged = true
	}
	d.Result = policy.OutcomeTempFail
	d.Reason = err.Error()
	c.srv.log.LogAttrs(context.Background(), slog.LevelError, decisionEvent, d.attrs()...)
	c.srv.decided(d)
}

// baseDecision fills the client part of a log line.
func (c *session) baseDecision() Decision {
	var d Decision
	if c.conn != nil {
		o := factsFromMacros(c.mta, c.get(nil))
		d.ClientName, d.ClientAddr = o.Facts.ClientName, o.Facts.ClientAddr
	}
	if !d.ClientAddr.IsValid() {
		d.ClientAddr = parseClientAddr(c.connAddr)
	}
	if d.ClientName == "" && c.conn["{client_name}"] == "" {
		d.ClientName = verifiedName(c.connHost)
	}
	return d
}

// NewConnection starts (or restarts, on milter connection reuse) a session.
func (c *session) NewConnection(m gomilter.Modifier) (err error) {
	defer c.guard("new connection", nil, &err)
	c.reset()
	return nil
}

// Connect records the client and picks the model for the session.
func (c *session) Connect(host, family string, port uint16, addr string, m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer c.guard("connect", &resp, &err)
	c.reset()
	c.connHost, c.connAddr = host, addr
	c.absorb(m)
	c.pol = c.policy()
	if c.pol == nil {
		if c.broken == nil {
			c.broken = errors.New("no policy loaded")
		}
	} else {
		c.mta = c.pol.MTA
	}
	c.host = c.srv.opts.Hostname
	if c.host == "" {
		c.host = c.conn[macroMTAHost]
	}
	if c.host == "" {
		c.host, _ = os.Hostname()
	}
	if c.pol != nil {
		c.authID = c.pol.Settings.AuthservID
	}
	if c.authID == "" {
		c.authID = c.host
	}
	return gomilter.RespContinue, nil
}

// policy calls Options.Policy, turning a panic into a broken session.
func (c *session) policy() (p *policy.Policy) {
	defer func() {
		if r := recover(); r != nil {
			c.broken = fmt.Errorf("panic in Options.Policy: %v", r)
			p = nil
		}
	}()
	return c.srv.opts.Policy()
}

// Helo records the HELO name and the TLS facts reported with it.
func (c *session) Helo(name string, m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer c.guard("helo", &resp, &err)
	c.helo = name
	c.absorb(m)
	return gomilter.RespContinue, nil
}

// MailFrom judges the message.
func (c *session) MailFrom(from, esmtpArgs string, m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer c.guard("mail", &resp, &err)
	c.flush()
	start := time.Now() // Decision.Duration counts from here
	c.absorb(m)
	msgVals := map[string]string{}
	for _, n := range []string{macroQueueID, macroMailAddr} {
		if v, ok := m.GetEx(n); ok {
			msgVals[n] = v
		}
	}
	obs := factsFromMacros(c.mta, c.get(msgVals))
	obs.Facts.Sender = from
	if !obs.Facts.ClientAddr.IsValid() {
		obs.Facts.ClientAddr = parseClientAddr(c.connAddr)
	}
	if _, ok := c.conn[macroClientName]; !ok && obs.Facts.ClientName == "" {
		obs.Facts.ClientName = verifiedName(c.connHost)
	}
	msg := &message{obs: obs}
	c.msg = msg
	f := &obs.Facts
	msg.dec = Decision{
		QueueID:    msgVals[macroQueueID],
		ClientName: f.ClientName, ClientAddr: f.ClientAddr,
		Sender:     f.Sender,
		TLSVersion: f.TLSVersion, Cipher: f.Cipher, Bits: f.Bits, Verify: obs.Verify,
	}
	if c.broken == nil {
		c.broken = mtaMismatch(c.mta, c.get(msgVals))
	}
	if c.broken != nil {
		msg.dec.Duration = time.Since(start)
		c.internalError(c.broken)
		c.msg = nil
		return tempFail(), nil
	}

	v := c.pol.At(c.srv.opts.Now()).Judge(f)
	if obs.FingerprintProblem != "" {
		for i := range v.Failures {
			if v.Failures[i].Check == policy.CheckFingerprint {
				v.Failures[i].Got = obs.FingerprintProblem
			}
		}
	}
	msg.verdict = v
	msg.dec.Result = v.Outcome()
	msg.dec.Endpoints = v.Names()
	msg.dec.Exceptions = v.ExceptionNames()
	msg.dec.Reason = v.Reason()
	if len(obs.Notes) > 0 && v.Result == policy.Fail {
		msg.dec.Reason += "; note: " + strings.Join(obs.Notes, "; ")
	}
	if len(v.Unchecked) > 0 {
		u := make([]string, len(v.Unchecked))
		for i, x := range v.Unchecked {
			u[i] = x.Endpoint.Name + ":" + string(x.Check)
		}
		msg.dec.Unchecked = strings.Join(u, ",")
	}
	msg.dec.Duration = time.Since(start)
	if !msg.dec.Result.Refuses() {
		return gomilter.RespContinue, nil
	}
	c.logDecision()
	c.msg = nil
	return refusal(msg.dec.Result)
}

// logDecision writes the current message's decision once.
func (c *session) logDecision() {
	msg := c.msg
	if msg == nil || msg.logged {
		return
	}
	msg.logged = true
	level := slog.LevelInfo
	if msg.verdict.Result == policy.Fail {
		level = slog.LevelWarn
	}
	c.srv.log.LogAttrs(context.Background(), level, decisionEvent, msg.dec.attrs()...)
	c.srv.decided(msg.dec)
}

// flush logs a pending decision of a message that ended without EOM.
func (c *session) flush() {
	c.logDecision()
	c.msg = nil
}

// Header notes forged copies of our headers.
func (c *session) Header(name, value string, m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer c.guard("header", &resp, &err)
	msg := c.msg
	if msg == nil {
		return gomilter.RespContinue, nil
	}
	switch {
	case strings.EqualFold(name, "Received"):
		msg.nReceived++
		if ForgedReceived(value, c.host) {
			msg.forgedReceived = append(msg.forgedReceived, msg.nReceived)
		}
	case strings.EqualFold(strings.TrimRightFunc(name, isAuthSpace), "Authentication-Results"):
		msg.nAuthRes++
		if forgedAuthResults(value, c.authID) {
			msg.forgedAuthRes = append(msg.forgedAuthRes, msg.nAuthRes)
		}
	}
	return gomilter.RespContinue, nil
}

// EndOfMessage removes forged headers, stamps ours and logs the decision.
func (c *session) EndOfMessage(m gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer c.guard("end of message", &resp, &err)
	msg := c.msg
	if msg == nil {
		// MAIL was not seen (cannot happen with a sane MTA): never accept
		// a message unjudged.
		c.internalError(errors.New("end of message without a judged MAIL FROM"))
		return tempFail(), nil
	}
	if q, ok := m.GetEx(macroQueueID); ok && q != "" {
		msg.dec.QueueID = q
	}
	if msg.failed != nil {
		c.internalError(msg.failed)
		c.msg = nil
		return tempFail(), nil
	}
	for i := len(msg.forgedAuthRes) - 1; i >= 0; i-- {
		if err := m.ChangeHeader(msg.forgedAuthRes[i], "Authentication-Results", ""); err != nil {
			return c.eomError(err)
		}
	}
	for i := len(msg.forgedReceived) - 1; i >= 0; i-- {
		if err := m.ChangeHeader(msg.forgedReceived[i], "Received", ""); err != nil {
			return c.eomError(err)
		}
	}
	st := c.stamp(msg)
	if err := m.InsertHeader(0, "Authentication-Results", authResultsHeader(st)); err != nil {
		return c.eomError(err)
	}
	if err := m.InsertHeader(0, "Received", receivedHeader(st)); err != nil {
		return c.eomError(err)
	}
	c.logDecision()
	c.msg = nil
	return gomilter.RespAccept, nil
}

func (c *session) eomError(err error) (*gomilter.Response, error) {
	c.internalError(fmt.Errorf("changing headers: %w", err))
	c.msg = nil
	return tempFail(), nil
}

// stamp collects what the headers say about msg.
func (c *session) stamp(msg *message) *traceStamp {
	f := &msg.obs.Facts
	st := &traceStamp{
		Host: c.host, AuthservID: c.authID,
		Helo: c.helo, ClientName: f.ClientName, ClientAddr: f.ClientAddr,
		QueueID:    msg.dec.QueueID,
		TLSVersion: f.TLSVersion, Cipher: f.Cipher, Bits: f.Bits, Verify: msg.obs.Verify,
		SubjectCN: f.SubjectCN, IssuerCN: f.IssuerCN,
		Endpoints: msg.verdict.Names(),
		Result:    msg.verdict.Result.String(),
		Monitor:   msg.verdict.Result == policy.Fail && !msg.verdict.Refuse,
		Date:      c.srv.opts.Now(),
	}
	seen := map[policy.Check]bool{}
	for _, fl := range msg.verdict.Failures {
		if !seen[fl.Check] {
			seen[fl.Check] = true
			st.Checks = append(st.Checks, string(fl.Check))
		}
	}
	return st
}

// Abort ends a message without EOM (RSET, QUIT, refused recipients) and
// logs its decision if not done yet.
func (c *session) Abort(m gomilter.Modifier) (err error) {
	defer c.guard("abort", nil, &err)
	if c.msg != nil && !c.msg.logged {
		if q, ok := m.GetEx(macroQueueID); ok && q != "" {
			c.msg.dec.QueueID = q
		}
	}
	c.flush()
	return nil
}

// Cleanup logs a pending decision when the MTA closes the connection.
func (c *session) Cleanup(m gomilter.Modifier) {
	defer c.guard("cleanup", nil, nil)
	c.flush()
}
