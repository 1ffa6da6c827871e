package posture

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/verdict"
)

// Report is the posture report.
type Report struct {
	// Generated is the report's time (Options.Now).
	Generated time.Time `json:"generated"`
	// Since and Until bound the period read (nil: unbounded).
	Since *time.Time `json:"since,omitempty"`
	Until *time.Time `json:"until,omitempty"`
	// Policy is the configuration file the covered peers were judged with.
	Policy string `json:"policy,omitempty"`
	// Rules is the evidence a proposal needs.
	Rules Rules `json:"rules"`
	// Inputs are the logs read, in order.
	Inputs []Input `json:"inputs"`
	// Warnings say what the logs cannot support, and what to change.
	Warnings []string `json:"warnings,omitempty"`
	// Peers, outbound first, then by kind and name.
	Peers []PeerReport `json:"peers"`
}

// Rules is the evidence a proposal needs.
type Rules struct {
	MinSessions int `json:"min_sessions"`
	MinDays     int `json:"min_days"`
}

// PeerReport is one peer's row.
type PeerReport struct {
	Direction Direction `json:"direction"`
	Kind      Kind      `json:"kind"`
	Peer      string    `json:"peer"`
	// Sessions counts connections (for sender-domain peers: the sessions
	// that carried the domain's mail, one per message).
	Sessions int `json:"sessions"`
	Messages int `json:"messages"`
	// TLSSessions and PlaintextSessions split Sessions; UnloggedTLS counts
	// sessions that used STARTTLS without a TLS line in the log.
	TLSSessions       int        `json:"tls_sessions"`
	PlaintextSessions int        `json:"plaintext_sessions"`
	UnloggedTLS       int        `json:"unlogged_tls_sessions,omitempty"`
	FirstSeen         *time.Time `json:"first_seen,omitempty"`
	LastSeen          *time.Time `json:"last_seen,omitempty"`
	DaysSeen          int        `json:"days_seen"`
	LastPlaintext     *time.Time `json:"last_plaintext,omitempty"`
	// TLSVersions, Ciphers and Bits count the TLS sessions by what they
	// used; MinBits is the weakest cipher strength seen.
	TLSVersions map[string]int `json:"tls_versions,omitempty"`
	Ciphers     map[string]int `json:"ciphers,omitempty"`
	Bits        map[string]int `json:"bits,omitempty"`
	MinBits     int            `json:"min_bits,omitempty"`
	// Trust counts sessions by certificate state: anonymous, untrusted,
	// trusted, verified (and unknown when the log does not say).
	Trust map[string]int `json:"trust,omitempty"`
	// Deferred counts deliveries deferred or bounced; LastDeferral is the
	// reason of the last one.
	Deferred     int    `json:"deferred,omitempty"`
	LastDeferral string `json:"last_deferral,omitempty"`
	// Endpoints cover the peer in the current policy; Mode is "monitor"
	// when the (outbound) endpoint is not enforced; Answer is the text the
	// MTA gets under enforce.
	Endpoints []string `json:"endpoints,omitempty"`
	Monitor   bool     `json:"monitor,omitempty"`
	Answer    string   `json:"answer,omitempty"`
	LookupErr string   `json:"lookup_error,omitempty"`
	// Judgement is how the current policy judges the peer's sessions.
	Judgement *Judgement `json:"judgement,omitempty"`
	// Logged counts tlsgate's own decision lines by result.
	Logged map[string]int `json:"logged_results,omitempty"`
	// Proposal is set for uncovered peers (not for MX rows).
	Proposal *Proposal `json:"proposal,omitempty"`
	// LastSession is the TLS of the most recent session.
	LastSession *Session `json:"last_session,omitempty"`
	// Timeline has one entry per day with sessions.
	Timeline []Day `json:"timeline"`

	evidence string
}

// Judgement is how the current policy judges a covered peer's sessions,
// each as if its endpoint were enforced.
type Judgement struct {
	Pass    int `json:"pass"`
	Fail    int `json:"fail"`
	Unknown int `json:"unknown"`
	// Refused counts the sessions the file's own modes would have
	// refused (inbound) or held (outbound): failures of enforced
	// endpoints.
	Refused int `json:"refused"`
	// Summary is "would pass under enforce: N of M sessions".
	Summary string `json:"summary"`
	// Reasons count the failures (or, for unknown, what the log cannot
	// show).
	Reasons map[string]int `json:"reasons,omitempty"`
}

// Session is the TLS of one session.
type Session struct {
	Time time.Time `json:"time"`
	// TLS is false for a plaintext session.
	TLS     bool   `json:"tls"`
	Version string `json:"version,omitempty"`
	Cipher  string `json:"cipher,omitempty"`
	Bits    int    `json:"bits,omitempty"`
	// Trust is anonymous, untrusted, trusted, verified or unknown.
	Trust string `json:"trust,omitempty"`
}

// Describe returns "TLSv1.3, 256 bits, verified" or "plaintext".
func (s *Session) Describe() string {
	if !s.TLS {
		if s.Trust == "unknown" {
			return "TLS not logged"
		}
		return "plaintext"
	}
	return fmt.Sprintf("%s, %d bits, %s", s.Version, s.Bits, s.Trust)
}

// Proposal is what posture proposes for an uncovered peer.
type Proposal struct {
	// Status is "ready", "not-ready" or "insufficient-evidence".
	Status string `json:"status"`
	// Text is "ready: encryption, min_bits = 128", "ready: verified",
	// "not ready: 3 plaintext sessions, last 2026-11-30", ...
	Text         string `json:"text"`
	Encryption   bool   `json:"encryption,omitempty"`
	MinBits      int    `json:"min_bits,omitempty"`
	ValidateCert bool   `json:"validate_cert,omitempty"`
}

// Day is one day of a peer's timeline: sessions by level.
type Day struct {
	Day       string `json:"day"`
	Plaintext int    `json:"plaintext,omitempty"`
	Anonymous int    `json:"anonymous,omitempty"`
	Untrusted int    `json:"untrusted,omitempty"`
	Trusted   int    `json:"trusted,omitempty"`
	Verified  int    `json:"verified,omitempty"`
	Unknown   int    `json:"unknown,omitempty"`
}

// count returns the sessions of level lv.
func (d Day) count(lv int) int {
	return [nLevels]int{d.Plaintext, d.Anonymous, d.Untrusted, d.Trusted, d.Verified, d.Unknown}[lv]
}

func rank(d Direction, k Kind) int {
	r := map[Kind]int{KindDomain: 0, KindMX: 1, KindClient: 2, KindSender: 3}[k]
	if d == Inbound {
		r += 10
	}
	return r
}

// Report builds the report of everything read so far.
func (c *Collector) Report() *Report {
	// Sessions still open at the end of the input count as they are.
	for pid, s := range c.smtpd {
		c.finishIn(s, -1)
		delete(c.smtpd, pid)
	}
	r := &Report{
		Generated: c.opts.Now.UTC(),
		Rules:     Rules{MinSessions: c.opts.MinSessions, MinDays: c.opts.MinDays},
		Inputs:    c.inputs,
	}
	if r.Inputs == nil {
		r.Inputs = []Input{}
	}
	if !c.opts.Since.IsZero() {
		t := c.opts.Since.UTC()
		r.Since = &t
	}
	if !c.opts.Until.IsZero() {
		t := c.opts.Until.UTC()
		r.Until = &t
	}
	if c.opts.Model != nil {
		r.Policy = c.opts.Model.Policy().File
	}
	r.Warnings = c.warnings()
	outNoTLS := c.pfDeliveries > 0 && c.pfOutTLS == 0
	for _, p := range c.peers {
		if p.sessions == 0 && p.logged == nil {
			continue
		}
		r.Peers = append(r.Peers, c.peerReport(p, outNoTLS))
	}
	sort.Slice(r.Peers, func(i, j int) bool {
		a, b := &r.Peers[i], &r.Peers[j]
		if ra, rb := rank(a.Direction, a.Kind), rank(b.Direction, b.Kind); ra != rb {
			return ra < rb
		}
		return a.Peer < b.Peer
	})
	if r.Peers == nil {
		r.Peers = []PeerReport{}
	}
	return r
}

func (c *Collector) warnings() []string {
	var w []string
	if c.pfStartTLSUnlogged > 0 {
		w = append(w, fmt.Sprintf("%d inbound Postfix session(s) used STARTTLS but no TLS summary line was logged: smtpd_tls_loglevel is 0 (the default); set smtpd_tls_loglevel = 1 in main.cf so that inbound TLS can be judged", c.pfStartTLSUnlogged))
	}
	if c.pfDeliveries > 0 && c.pfOutTLS == 0 {
		w = append(w, fmt.Sprintf("%d outbound Postfix deliveries and not one TLS summary line: smtp_tls_loglevel is 0 (the default); set smtp_tls_loglevel = 1 in main.cf. Until then outbound TLS cannot be judged and no outbound endpoint is proposed", c.pfDeliveries))
	}
	if c.smLines > 0 && c.smStartTLS == 0 && (c.smESMTPSUnlogged > 0 || c.smDeliveries > 0) {
		w = append(w, "Sendmail lines but not one STARTTLS= line: Sendmail logs TLS only at LogLevel 9 or higher; set define(`confLOG_LEVEL', `9') in the .mc file (O LogLevel=9 in sendmail.cf). Until then Sendmail's TLS cannot be judged")
	} else if c.smESMTPSUnlogged > 0 {
		w = append(w, fmt.Sprintf("%d Sendmail message(s) arrived with proto=ESMTPS but without a STARTTLS=server line: check that LogLevel is 9 or higher", c.smESMTPSUnlogged))
	}
	for _, in := range c.inputs {
		if len(in.Skipped) == 0 {
			continue
		}
		var parts []string
		for _, k := range []string{"malformed", "too_long", "corrupt_compressed"} {
			if n := in.Skipped[k]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, strings.ReplaceAll(k, "_", " ")))
			}
		}
		if len(parts) > 0 {
			w = append(w, fmt.Sprintf("%s: skipped %s", in.Name, strings.Join(parts, ", ")))
		}
	}
	if c.events == 0 && len(c.inputs) > 0 {
		w = append(w, "no Postfix, Sendmail or tlsgate lines found in the input")
	}
	return w
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func (c *Collector) peerReport(p *peer, outNoTLS bool) PeerReport {
	pr := PeerReport{
		Direction:         p.key.Dir,
		Kind:              p.key.Kind,
		Peer:              p.key.Name,
		Sessions:          p.sessions,
		Messages:          p.messages,
		TLSSessions:       p.tlsSessions,
		PlaintextSessions: p.plain,
		UnloggedTLS:       p.unlogged,
		FirstSeen:         tp(p.first),
		LastSeen:          tp(p.last),
		DaysSeen:          len(p.days),
		LastPlaintext:     tp(p.lastPlain),
		TLSVersions:       p.versions,
		Ciphers:           p.ciphers,
		MinBits:           p.minBits(),
		Deferred:          p.deferred,
		LastDeferral:      p.lastDeferral,
		Endpoints:         p.endpoint,
		Monitor:           p.monitor,
		Answer:            p.answerText,
		LookupErr:         p.lookupErr,
		Logged:            p.logged,
		Timeline:          []Day{},
	}
	if len(p.bits) > 0 {
		pr.Bits = map[string]int{}
		for b, n := range p.bits {
			pr.Bits[strconv.Itoa(b)] = n
		}
	}
	for lv := lvAnonymous; lv < nLevels; lv++ {
		if p.levels[lv] > 0 {
			if pr.Trust == nil {
				pr.Trust = map[string]int{}
			}
			pr.Trust[levelNames[lv]] = p.levels[lv]
		}
	}
	days := make([]int32, 0, len(p.days))
	for d := range p.days {
		days = append(days, d)
	}
	sort.Slice(days, func(i, j int) bool { return days[i] < days[j] })
	for _, d := range days {
		row := p.days[d]
		pr.Timeline = append(pr.Timeline, Day{
			Day:       time.Unix(int64(d)*86400, 0).UTC().Format("2006-01-02"),
			Plaintext: int(row[lvPlain]), Anonymous: int(row[lvAnonymous]), Untrusted: int(row[lvUntrusted]),
			Trusted: int(row[lvTrusted]), Verified: int(row[lvVerified]), Unknown: int(row[lvUnknown]),
		})
	}
	if !p.lastAt.IsZero() {
		ls := p.lastSession
		pr.LastSession = &Session{Time: p.lastAt.UTC(), TLS: ls.tls, Version: ls.version, Cipher: ls.cipher, Bits: ls.bits}
		if ls.tls || ls.trust != 0 {
			pr.LastSession.Trust = ls.trust.String()
		}
	}
	blind := outNoTLS && p.key.Dir == Outbound
	total := p.judged[verdict.Pass] + p.judged[verdict.Fail] + p.judged[verdict.Undecided]
	if len(p.endpoint) > 0 && total > 0 && !blind {
		j := &Judgement{Pass: p.judged[verdict.Pass], Fail: p.judged[verdict.Fail], Unknown: p.judged[verdict.Undecided], Refused: p.refused, Reasons: p.reasons}
		j.Summary = fmt.Sprintf("would pass under enforce: %d of %d sessions", j.Pass, total)
		if j.Unknown > 0 {
			j.Summary += fmt.Sprintf(" (%d cannot be judged from the log)", j.Unknown)
		}
		pr.Judgement = j
	}
	if len(p.endpoint) == 0 && p.key.Kind != KindMX && p.sessions > 0 {
		pr.Proposal = c.propose(p, blind)
	}
	pr.evidence = evidence(p)
	return pr
}

// propose applies the rules to an uncovered peer.
func (c *Collector) propose(p *peer, blind bool) *Proposal {
	span := 0
	if !p.first.IsZero() {
		span = int(p.last.Sub(p.first) / (24 * time.Hour))
	}
	switch {
	case blind:
		return &Proposal{Status: "not-ready", Text: "not ready: the log has no outbound TLS lines (smtp_tls_loglevel = 0)"}
	case p.sessions < c.opts.MinSessions || span < c.opts.MinDays:
		return &Proposal{Status: "insufficient-evidence", Text: fmt.Sprintf("not enough evidence: %d sessions over %d days (need %d over %d)", p.sessions, span, c.opts.MinSessions, c.opts.MinDays)}
	case p.plain > 0:
		return &Proposal{Status: "not-ready", Text: fmt.Sprintf("not ready: %s, last %s", plural(p.plain, "plaintext session"), p.lastPlain.UTC().Format("2006-01-02"))}
	case p.unlogged > 0 || p.levels[lvUnknown] > 0:
		return &Proposal{Status: "not-ready", Text: fmt.Sprintf("not ready: %d sessions whose TLS the log does not show (raise the log level)", p.unlogged+p.levels[lvUnknown])}
	}
	pr := &Proposal{Status: "ready", Encryption: true}
	words := []string{"encryption"}
	if p.levels[lvTrusted]+p.levels[lvVerified] == p.tlsSessions {
		pr.ValidateCert = true
		words = []string{"verified"}
	}
	if p.minBits() >= 128 {
		pr.MinBits = 128
		words = append(words, "min_bits = 128")
	}
	pr.Text = "ready: " + strings.Join(words, ", ")
	return pr
}

// evidence is the TOML comment behind a proposal.
func evidence(p *peer) string {
	var parts []string
	parts = append(parts, fmt.Sprintf("%d sessions, %d messages", p.sessions, p.messages))
	if !p.first.IsZero() {
		parts = append(parts, fmt.Sprintf("%s..%s", p.first.UTC().Format("2006-01-02"), p.last.UTC().Format("2006-01-02")))
	}
	if v := p.lowestVersion(); v != "" {
		parts = append(parts, "lowest "+v)
	}
	if b := p.minBits(); b > 0 {
		parts = append(parts, fmt.Sprintf("min %d bits", b))
	}
	var mix []string
	for lv := lvPlain; lv < nLevels; lv++ {
		if p.levels[lv] > 0 {
			mix = append(mix, fmt.Sprintf("%s %d", levelNames[lv], p.levels[lv]))
		}
	}
	if len(mix) > 0 {
		parts = append(parts, strings.Join(mix, ", "))
	}
	return strings.Join(parts, "; ")
}

// plural writes "1 plaintext session" or "3 plaintext sessions".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
