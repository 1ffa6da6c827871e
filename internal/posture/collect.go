// Package posture builds tlsgate's TLS posture report from a mail log: it
// joins the TLS lines of Postfix and Sendmail to sessions and deliveries,
// counts per peer (outbound by next-hop domain and MX host, inbound by
// client and sender domain) what TLS was used and how certificates were
// trusted, judges covered peers with the endpoint model (package verdict)
// and proposes endpoints for uncovered peers with enough evidence. The
// report renders as text, JSON, TOML [[endpoint]] blocks or one HTML page.
//
// Memory is bounded by the number of peers and days, not lines: per peer
// the collector keeps counters, small maps of the TLS versions, ciphers
// and bit strengths seen, and one counter row per day for the timeline;
// the join state (per process ID and queue ID) is swept as the log time
// moves on.
package posture

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/maillog"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

// Options configure a [Collector].
type Options struct {
	// Model judges covered peers; nil: nothing is judged and no peer is
	// covered.
	Model *verdict.Model
	// Since and Until bound the period (zero: unbounded).
	Since, Until time.Time
	// Now is the report's time (default time.Now()).
	Now time.Time
	// MinSessions and MinDays are the evidence a proposal needs
	// (defaults 20 and 14; negative means 0).
	MinSessions, MinDays int
}

// Collector reads logs and builds a [Report].
type Collector struct {
	opts  Options
	peers map[peerKey]*peer
	strs  map[string]string

	smtpd map[int]*inSession
	smtp  map[int]*outState
	proxy map[string]tlsSeen
	sm    map[int]*smState
	qids  map[qidKey]*qidInfo
	// Free lists: sessions and queue IDs come and go with every message;
	// their structs are reused instead of allocated.
	freeIn  []*inSession
	freeQID []*qidInfo

	inputs   []Input
	events   int64
	inWindow int64
	sweepAt  int64
	logTime  time.Time

	// Evidence for the log-level warnings.
	pfInTLS, pfOutTLS, pfDeliveries, pfDisconnects int64
	pfStartTLSUnlogged                             int64
	pfOutPlainUnknown                              bool
	smLines, smStartTLS, smESMTPSUnlogged          int64
	smDeliveries                                   int64
}

// New returns an empty collector.
func New(opts Options) *Collector {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.MinSessions == 0 {
		opts.MinSessions = 20
	}
	if opts.MinDays == 0 {
		opts.MinDays = 14
	}
	opts.MinSessions, opts.MinDays = max(opts.MinSessions, 0), max(opts.MinDays, 0)
	return &Collector{
		opts:  opts,
		peers: map[peerKey]*peer{},
		strs:  map[string]string{},
		smtpd: map[int]*inSession{},
		smtp:  map[int]*outState{},
		proxy: map[string]tlsSeen{},
		sm:    map[int]*smState{},
		qids:  map[qidKey]*qidInfo{},
	}
}

// Input describes one log read.
type Input struct {
	Name   string        `json:"name"`
	Lines  int64         `json:"lines"`
	Events int64         `json:"events"`
	Stats  maillog.Stats `json:"-"`
	// Skipped counts lines that were not read: malformed, over-long,
	// journal meta lines, a corrupt compressed tail.
	Skipped map[string]int64 `json:"skipped,omitempty"`
	First   *time.Time       `json:"first,omitempty"`
	Last    *time.Time       `json:"last,omitempty"`
}

// Read reads one log. ref is the reference time for timestamps without a
// year (the file's modification time; zero: now). Only I/O errors are
// returned; bad lines are skipped and counted.
func (c *Collector) Read(name string, r io.Reader, ref time.Time) error {
	if ref.IsZero() || ref.After(c.opts.Now) {
		ref = c.opts.Now
	}
	rd, err := maillog.NewReader(r, maillog.Options{Ref: ref})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	in := Input{Name: name}
	var ev maillog.Event
	before := c.events
	var first, last time.Time
	for rd.Next() {
		l := rd.Line()
		if first.IsZero() {
			first = l.Time
		}
		last = l.Time
		if !maillog.Parse(l, &ev) {
			if ev.MTA == maillog.Sendmail {
				c.smLines++
			}
			continue
		}
		c.add(l, &ev)
	}
	in.Stats = rd.Stats()
	in.Lines = in.Stats.Lines
	in.Events = c.events - before
	if !first.IsZero() {
		f, l := first.UTC(), last.UTC()
		in.First, in.Last = &f, &l
	}
	sk := map[string]int64{}
	for k, v := range map[string]int64{"malformed": in.Stats.Malformed, "too_long": in.Stats.TooLong, "journal_meta": in.Stats.Meta, "corrupt_compressed": in.Stats.Corrupt} {
		if v > 0 {
			sk[k] = v
		}
	}
	if len(sk) > 0 {
		in.Skipped = sk
	}
	c.inputs = append(c.inputs, in)
	if err := rd.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// ReadFile reads a log file ("-" is standard input).
func (c *Collector) ReadFile(path string, stdin io.Reader) error {
	if path == "-" {
		return c.Read("-", stdin, time.Time{})
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var ref time.Time
	if fi, err := f.Stat(); err == nil {
		ref = fi.ModTime()
	}
	return c.Read(path, f, ref)
}

// intern returns b as a string shared with every earlier equal one, so
// that repeated values (versions, ciphers, host names) cost one string.
func (c *Collector) intern(b []byte) string {
	if s, ok := c.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	c.strs[s] = s
	return s
}

// tlsSeen are a session's TLS facts.
type tlsSeen struct {
	tls     bool // false: plaintext (or not known)
	trust   maillog.Trust
	version string
	cipher  string
	bits    int
	peer    string // the peer as logged, for joining
	at      time.Time
	reused  bool
}

type inSession struct {
	name, addr string
	start      time.Time
	seen       time.Time
	tls        tlsSeen
	messages   int
}

type outState struct {
	pending    tlsSeen // a TLS line not yet joined to a delivery
	hasPending bool
	cur        struct {
		qid, relay, domain string
		tls                tlsSeen
		at                 time.Time
	}
	seen time.Time
}

type smState struct {
	in, out     *tlsSeen
	inClient    string // the client of the current inbound session
	outRelay    string // the relay of the current outbound session
	outSessions bool
	seen        time.Time
}

// qidKey is a queue ID as a map key that costs no allocation.
type qidKey struct {
	n uint8
	b [20]byte
}

func keyOf(qid []byte) qidKey {
	var k qidKey
	k.n = uint8(copy(k.b[:], qid))
	return k
}

func (c *Collector) newIn(name, addr string, start time.Time) *inSession {
	var s *inSession
	if n := len(c.freeIn); n > 0 {
		s, c.freeIn = c.freeIn[n-1], c.freeIn[:n-1]
		*s = inSession{}
	} else {
		s = new(inSession)
	}
	s.name, s.addr, s.start, s.seen = name, addr, start, start
	return s
}

func (c *Collector) dropIn(pid int, s *inSession) {
	delete(c.smtpd, pid)
	c.freeIn = append(c.freeIn, s)
}

func (c *Collector) dropQID(k qidKey, q *qidInfo) {
	delete(c.qids, k)
	c.freeQID = append(c.freeQID, q)
}

type qidInfo struct {
	name, addr string
	tls        tlsSeen
	seen       time.Time
}

// sweep drops join state not touched for a while of log time: processes
// that ended without a disconnect line, queue IDs without "removed".
func (c *Collector) sweep() {
	limit := c.logTime.Add(-15 * time.Minute)
	for pid, s := range c.smtpd {
		if s.seen.Before(limit) {
			c.finishIn(s, -1)
			c.dropIn(pid, s)
		}
	}
	for pid, s := range c.smtp {
		if s.seen.Before(limit) {
			delete(c.smtp, pid)
		}
	}
	for pid, s := range c.sm {
		if s.seen.Before(limit) {
			delete(c.sm, pid)
		}
	}
	for k, p := range c.proxy {
		if p.at.Before(limit) {
			delete(c.proxy, k)
		}
	}
	qlimit := c.logTime.Add(-48 * time.Hour)
	for k, q := range c.qids {
		if q.seen.Before(qlimit) {
			c.dropQID(k, q)
		}
	}
}

func (c *Collector) inWindowAt(t time.Time) bool {
	return (c.opts.Since.IsZero() || !t.Before(c.opts.Since)) && (c.opts.Until.IsZero() || t.Before(c.opts.Until))
}

func (c *Collector) add(l *maillog.Line, ev *maillog.Event) {
	c.events++
	if l.Time.After(c.logTime) {
		c.logTime = l.Time
	}
	if c.events >= c.sweepAt {
		c.sweep()
		c.sweepAt = c.events + 1<<14
	}
	if !c.inWindowAt(l.Time) {
		return
	}
	c.inWindow++
	switch ev.MTA {
	case maillog.Postfix:
		c.addPostfix(l, ev)
	case maillog.Sendmail:
		c.smLines++
		c.addSendmail(l, ev)
	case maillog.Tlsgate:
		c.addDecision(l, ev)
	}
}

func (c *Collector) seenOf(ev *maillog.Event, t time.Time) tlsSeen {
	return tlsSeen{
		tls:     true,
		trust:   ev.Trust,
		version: c.intern(ev.Version),
		cipher:  c.intern(ev.Cipher),
		bits:    ev.Bits,
		peer:    c.peerString(&ev.Peer),
		at:      t,
		reused:  ev.Reused,
	}
}

// peerString renders a peer as "name[addr]:port" ("name[addr]" without a
// port; a Sendmail literal "[addr]" as "addr[addr]").
func (c *Collector) peerString(p *maillog.Peer) string {
	var buf [300]byte
	b := buf[:0]
	name := bytes.Trim(p.Name, "[]")
	if len(name) == 0 {
		name = p.Addr
	}
	b = append(b, name...)
	if len(p.Addr) > 0 {
		b = append(b, '[')
		b = append(b, p.Addr...)
		b = append(b, ']')
	}
	if p.Port > 0 {
		b = append(b, ':')
		b = appendInt(b, p.Port)
	}
	return c.intern(b)
}

func appendInt(b []byte, n int) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}

func (c *Collector) addPostfix(l *maillog.Line, ev *maillog.Event) {
	t := l.Time
	switch ev.Kind {
	case maillog.Connect:
		if s := c.smtpd[l.PID]; s != nil {
			c.finishIn(s, -1)
			c.dropIn(l.PID, s)
		}
		c.smtpd[l.PID] = c.newIn(c.intern(ev.Peer.Name), c.intern(ev.Peer.Addr), t)
	case maillog.TLS:
		if ev.Dir == maillog.Inbound {
			c.pfInTLS++
			s := c.smtpd[l.PID]
			if s == nil || s.addr != string(ev.Peer.Addr) {
				if s != nil {
					c.finishIn(s, -1)
					c.dropIn(l.PID, s)
				}
				s = c.newIn(c.intern(ev.Peer.Name), c.intern(ev.Peer.Addr), t)
				c.smtpd[l.PID] = s
			}
			s.tls, s.seen = c.seenOf(ev, t), t
			return
		}
		c.pfOutTLS++
		seen := c.seenOf(ev, t)
		if ev.Proxy {
			c.proxy[seen.peer] = seen
			return
		}
		o := c.outOf(l.PID, t)
		o.pending, o.hasPending = seen, true
	case maillog.Client:
		s := c.smtpd[l.PID]
		if s == nil {
			s = c.newIn(c.intern(ev.Peer.Name), c.intern(ev.Peer.Addr), t)
			c.smtpd[l.PID] = s
		}
		s.seen = t
		s.messages++
		k := keyOf(ev.QID)
		q := c.qids[k]
		if q == nil {
			if n := len(c.freeQID); n > 0 {
				q, c.freeQID = c.freeQID[n-1], c.freeQID[:n-1]
			} else {
				q = new(qidInfo)
			}
			c.qids[k] = q
		}
		*q = qidInfo{name: s.name, addr: s.addr, tls: s.tls, seen: t}
	case maillog.Disconnect:
		c.pfDisconnects++
		if s := c.smtpd[l.PID]; s != nil {
			s.seen = t
			c.finishIn(s, ev.StartTLSCount)
			c.dropIn(l.PID, s)
		}
	case maillog.From:
		q := c.qids[keyOf(ev.QID)]
		if q == nil || len(ev.Addr) == 0 {
			return
		}
		q.seen = t
		c.inMessage(q.name, q.addr, ev.Addr, q.tls, t)
	case maillog.Removed:
		k := keyOf(ev.QID)
		if q := c.qids[k]; q != nil {
			c.dropQID(k, q)
		}
	case maillog.Delivery:
		c.pfDeliveries++
		c.delivery(l.PID, ev, t)
	}
}

func (c *Collector) outOf(pid int, t time.Time) *outState {
	o := c.smtp[pid]
	if o == nil {
		o = &outState{}
		c.smtp[pid] = o
	}
	o.seen = t
	return o
}

// samePeer compares a TLS line's peer with a delivery's relay.
func samePeer(tlsPeer, relay string) bool { return tlsPeer == relay }

// delivery joins a Postfix delivery line to the TLS line its smtp process
// wrote before it (or tlsproxy's, or a reused connection's).
func (c *Collector) delivery(pid int, ev *maillog.Event, t time.Time) {
	o := c.outOf(pid, t)
	relay := c.peerString(&ev.Peer)
	qid := string(ev.QID)
	domain := c.domainOf(ev.Addr)
	newSession := false
	var seen tlsSeen
	switch {
	case o.hasPending && samePeer(o.pending.peer, relay):
		seen = o.pending
		o.hasPending = false
		newSession = !seen.reused
	case o.cur.relay == relay && o.cur.qid == qid:
		seen = o.cur.tls
	case ev.ConnUse >= 2:
		// A cached connection without a "reused" TLS line: plaintext.
		seen = tlsSeen{}
	default:
		if p, ok := c.proxy[relay]; ok && t.Sub(p.at) < 5*time.Second && !p.reused {
			seen = p
			delete(c.proxy, relay)
		}
		newSession = true
	}
	newMessage := newSession || o.cur.qid != qid || o.cur.relay != relay
	newDomain := newSession || o.cur.domain != domain
	// The queue ID is kept only until the next delivery of this process:
	// not interned, or the table would grow with the messages.
	o.cur.qid, o.cur.relay, o.cur.domain, o.cur.tls, o.cur.at = qid, relay, domain, seen, t
	if domain == "" {
		return
	}
	status := string(ev.Status)
	deferred := status == "deferred" || status == "bounced"
	rcpt := ev.Addr
	for _, k := range []peerKey{{Outbound, KindDomain, domain}, {Outbound, KindMX, relay}} {
		p := c.peerFor(k)
		if p.rcpt == "" {
			p.rcpt = c.intern(rcpt)
			p.port = ev.Peer.Port
			p.host = c.intern(ev.Peer.Name)
			p.addr = c.intern(ev.Peer.Addr)
		}
		if (k.Kind == KindDomain && newDomain) || (k.Kind == KindMX && newSession) {
			c.outSession(p, seen, t)
		}
		if newMessage {
			p.messages++
		}
		if deferred {
			p.deferred++
			p.lastDeferral = string(ev.Reason) // one per peer, replaced: not interned
		}
	}
}

func (c *Collector) internString(s string) string {
	if v, ok := c.strs[s]; ok {
		return v
	}
	c.strs[s] = s
	return s
}

// domainOf returns the lower-cased domain of an address (interned), ""
// if none.
func (c *Collector) domainOf(addr []byte) string {
	at := bytes.LastIndexByte(addr, '@')
	if at < 0 || at == len(addr)-1 {
		return ""
	}
	d := addr[at+1:]
	var buf [256]byte
	if len(d) > len(buf) {
		return ""
	}
	lower := buf[:len(d)]
	for i, ch := range d {
		if ch >= 'A' && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		lower[i] = ch
	}
	lower = bytes.TrimSuffix(lower, []byte("."))
	if len(lower) == 0 {
		return ""
	}
	return c.intern(lower)
}

// finishIn records an inbound Postfix session; startTLS is the disconnect
// line's starttls= count (-1: not known).
func (c *Collector) finishIn(s *inSession, startTLS int) {
	if startTLS > 0 && !s.tls.tls {
		// STARTTLS was used, but no TLS line: smtpd_tls_loglevel = 0.
		c.pfStartTLSUnlogged++
		s.tls.trust = maillog.TrustUnknown
		p := c.peerFor(peerKey{Inbound, KindClient, c.clientKey(s.name, s.addr)})
		p.setClient(s.name, s.addr)
		p.sessions++
		p.unlogged++
		return
	}
	p := c.peerFor(peerKey{Inbound, KindClient, c.clientKey(s.name, s.addr)})
	p.setClient(s.name, s.addr)
	c.inSession(p, s.tls, s.start)
	p.messages += s.messages
}

func (c *Collector) clientKey(name, addr string) string {
	var buf [300]byte
	b := append(buf[:0], name...)
	b = append(b, '[')
	b = append(b, addr...)
	b = append(b, ']')
	return c.intern(b)
}

// inMessage records a message from sender over a session with tls, for
// the sender-domain peer.
func (c *Collector) inMessage(name, addr string, sender []byte, tls tlsSeen, t time.Time) {
	d := c.domainOf(sender)
	if d == "" {
		return
	}
	p := c.peerFor(peerKey{Inbound, KindSender, d})
	p.messages++
	p.count(tls, t)
	p.judgeClient(c, name, addr, sender, tls)
}

func (c *Collector) addSendmail(l *maillog.Line, ev *maillog.Event) {
	t := l.Time
	s := c.sm[l.PID]
	if s == nil {
		s = &smState{}
		c.sm[l.PID] = s
	}
	s.seen = t
	switch ev.Kind {
	case maillog.StartTLS:
		c.smStartTLS++
		seen := c.seenOf(ev, t)
		if ev.Dir == maillog.Inbound {
			s.in = &seen
			s.inClient = c.clientKey(c.intern(ev.Peer.Name), c.intern(ev.Peer.Addr))
			p := c.peerFor(peerKey{Inbound, KindClient, s.inClient})
			p.setClient(c.intern(ev.Peer.Name), c.intern(ev.Peer.Addr))
			c.inSession(p, seen, t)
			return
		}
		s.out = &seen
		s.outRelay = ""
	case maillog.From:
		name, addr := c.intern(ev.Peer.Name), c.intern(ev.Peer.Addr)
		client := c.clientKey(name, addr)
		var tls tlsSeen
		if s.in != nil && s.inClient == client {
			tls = *s.in
		} else if bytes.HasPrefix(ev.Proto, []byte("ESMTPS")) {
			c.smESMTPSUnlogged++
			tls.trust = maillog.TrustUnknown
		}
		p := c.peerFor(peerKey{Inbound, KindClient, client})
		p.setClient(name, addr)
		if s.inClient != client {
			// A session without STARTTLS line: plaintext (or not logged).
			s.inClient = client
			s.in = nil
			if tls.trust == maillog.TrustUnknown && bytes.HasPrefix(ev.Proto, []byte("ESMTPS")) {
				p.sessions++
				p.unlogged++
			} else {
				c.inSession(p, tls, t)
			}
		}
		p.messages++
		c.inMessage(name, addr, ev.Addr, tls, t)
	case maillog.Delivery:
		c.smDeliveries++
		relay := c.peerString(&ev.Peer)
		domain := c.domainOf(ev.Addr)
		newSession := false
		var tls tlsSeen
		switch {
		case s.out != nil && smSameRelay(s.out, &ev.Peer):
			tls = *s.out
			newSession = s.outRelay != relay
		case s.outRelay == relay:
			// Another delivery over the same plaintext connection.
		default:
			newSession = true
			s.out = nil
		}
		s.outRelay = relay
		if domain == "" {
			return
		}
		status := strings.ToLower(string(ev.Status))
		for _, k := range []peerKey{{Outbound, KindDomain, domain}, {Outbound, KindMX, relay}} {
			p := c.peerFor(k)
			if p.rcpt == "" {
				p.rcpt = c.intern(ev.Addr)
				p.host = c.intern(bytes.Trim(ev.Peer.Name, "[]"))
				p.addr = c.intern(ev.Peer.Addr)
			}
			if newSession {
				c.outSession(p, tls, t)
			}
			p.messages++
			if status == "deferred" || status == "bounced" {
				p.deferred++
				p.lastDeferral = string(ev.Reason) // one per peer, replaced: not interned
			}
		}
	}
}

// smSameRelay compares a STARTTLS=client relay (often the name only, or
// "[addr]") with a delivery's relay ("name [addr]").
func smSameRelay(s *tlsSeen, p *maillog.Peer) bool {
	if s.peer == "" {
		return true
	}
	name := strings.TrimSuffix(strings.Trim(string(p.Name), "[]"), ".")
	sp := s.peer
	if i := strings.IndexByte(sp, '['); i >= 0 {
		addr := strings.TrimSuffix(sp[i+1:], "]")
		if addr != "" && addr == string(p.Addr) {
			return true
		}
		sp = sp[:i]
	}
	return strings.EqualFold(strings.TrimSuffix(sp, "."), name)
}

func (c *Collector) addDecision(l *maillog.Line, ev *maillog.Event) {
	name, addr := c.intern(ev.Peer.Name), c.intern(ev.Peer.Addr)
	res := c.intern(ev.Result)
	p := c.peerFor(peerKey{Inbound, KindClient, c.clientKey(name, addr)})
	p.setClient(name, addr)
	p.addLogged(res)
	if d := c.domainOf(ev.Addr); d != "" {
		c.peerFor(peerKey{Inbound, KindSender, d}).addLogged(res)
	}
}

// outSession counts one outbound session with a peer and judges it.
func (c *Collector) outSession(p *peer, tls tlsSeen, t time.Time) {
	p.count(tls, t)
	if !p.covChecked {
		p.covChecked = true
		c.outCoverage(p)
	}
	if p.answer == nil {
		return
	}
	k := judgeKey{tls: tls.tls, trust: tls.trust, bits: tls.bits}
	if j, ok := p.cache[k]; ok {
		p.addJudged(j.res, j.reason, j.refuse)
		return
	}
	out, reason := p.answer.Judge(mtapolicy.Session{TLS: tls.tls, Bits: tls.bits, Trust: tls.trust})
	res := verdict.Pass
	switch out {
	case mtapolicy.Hold:
		res = verdict.Fail
	case mtapolicy.Unknown:
		res = verdict.Undecided
	}
	if p.cache == nil {
		p.cache = map[judgeKey]judged{}
	}
	// The file's own mode: a monitor endpoint's answer never reaches the
	// MTA, so it holds nothing.
	refuse := res == verdict.Fail && !p.monitor
	p.cache[k] = judged{res: res, reason: reason, refuse: refuse}
	p.addJudged(res, reason, refuse)
}

func (c *Collector) outCoverage(p *peer) {
	m := c.opts.Model
	if m == nil {
		return
	}
	var a verdict.Answer
	if p.key.Kind == KindDomain {
		a = m.Domain(p.key.Name, p.rcpt, c.opts.Now)
	} else {
		a = m.Host(p.host, p.port, c.opts.Now)
		if a.Endpoint == "" && p.addr != "" && p.addr != p.host {
			a = m.Host(p.addr, p.port, c.opts.Now)
		}
	}
	if a.Endpoint == "" && a.Err == nil {
		return
	}
	p.endpoint = []string{a.Endpoint}
	p.answerText = a.Text
	p.monitor = a.Monitor
	if a.Err != nil {
		p.endpoint = nil
		p.lookupErr = a.Err.Error()
		return
	}
	req, err := m.Requirement(a, true)
	if err != nil {
		p.lookupErr = err.Error()
		return
	}
	p.answer = &req
}

// inSession counts one inbound session of a client peer and judges it.
func (c *Collector) inSession(p *peer, tls tlsSeen, t time.Time) {
	p.count(tls, t)
	p.judgeClient(c, p.host, p.addr, nil, tls)
}

// judgeClient judges an inbound session of client name[addr] (with
// sender, for a sender-domain peer).
func (p *peer) judgeClient(c *Collector, name, addr string, sender []byte, tls tlsSeen) {
	m := c.opts.Model
	if m == nil {
		return
	}
	k := judgeKey{tls: tls.tls, trust: tls.trust, bits: tls.bits, version: tls.version}
	if len(sender) > 0 {
		k.client = addr
		k.name = name
	}
	j, ok := p.cache[k]
	if !ok {
		a, _ := netip.ParseAddr(addr)
		s := verdict.Session{ClientAddr: a, ClientName: name, Sender: string(sender), Bits: tls.bits, Trust: tls.trust}
		if tls.tls {
			s.TLSVersion, s.Cipher = tls.version, tls.cipher
		}
		v := m.Inbound(s, c.opts.Now)
		j = judged{res: v.Result, endpoints: strings.Join(v.Endpoints, ","), refuse: v.Refuse}
		if len(v.Reasons) > 0 {
			j.reason = v.Reasons[0]
		}
		if p.cache == nil {
			p.cache = map[judgeKey]judged{}
		}
		p.cache[k] = j
	}
	if j.res == verdict.NotCovered {
		return
	}
	p.addEndpoints(j.endpoints)
	p.addJudged(j.res, j.reason, j.refuse)
}
