// Package verdict asks tlsgate's endpoint model (internal/policy) what it
// says about sessions seen in the mail log, queued next hops and probed
// servers. It is the one place where the posture report, whatif and probe
// call the model's lookup and judge functions, so that a change of their
// signatures is a local edit here.
//
// Inbound, a session is judged as the milter would judge it
// ([policy.View.Judge]); outbound, the model's answer for a next hop is
// the text the MTA would receive ([policy.View.Outbound]), also for an
// endpoint in monitor mode (as if it were enforced: "would pass under
// enforce"). What the MTA then does with that text is package mtapolicy's
// business.
package verdict

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/maillog"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// Model wraps a loaded policy.
type Model struct {
	p *policy.Policy
}

// New returns the model of p.
func New(p *policy.Policy) *Model { return &Model{p: p} }

// Policy returns the wrapped policy.
func (m *Model) Policy() *policy.Policy { return m.p }

// Sendmail reports whether the policy is written for Sendmail.
func (m *Model) Sendmail() bool { return m.p.MTA == policy.Sendmail }

// Result is an inbound judgement.
type Result int

// Inbound results.
const (
	// NotCovered: no endpoint covers the session.
	NotCovered Result = iota
	// Pass: every covering endpoint is satisfied.
	Pass
	// Fail: a requirement is missed.
	Fail
	// Undecided: what the log shows passes, but a requirement needs facts
	// the log does not have (certificate names, fingerprints).
	Undecided
)

// String returns none, pass, fail or unknown.
func (r Result) String() string {
	switch r {
	case Pass:
		return "pass"
	case Fail:
		return "fail"
	case Undecided:
		return "unknown"
	}
	return "none"
}

// Session is an inbound session as a log shows it.
type Session struct {
	ClientAddr netip.Addr
	ClientName string
	// Sender is the envelope sender ("" when judging the client alone).
	Sender string
	// TLSVersion is "" for a plaintext session.
	TLSVersion, Cipher string
	Bits               int
	// Trust is the client certificate's state as the MTA logged it.
	Trust maillog.Trust
}

// Inbound is the model's judgement of an inbound session.
type Inbound struct {
	Result Result
	// Endpoints are the covering endpoints' names.
	Endpoints []string
	// Refuse: under the file's own modes the milter would refuse the mail
	// (an enforced endpoint fails).
	Refuse bool
	// Reasons are the failed checks ("endpoint=... check=... want=...
	// got=..."), or for Undecided the checks the log cannot show.
	Reasons []string
}

// Inbound judges s with the model at time now.
func (m *Model) Inbound(s Session, now time.Time) Inbound {
	f := policy.Facts{
		ClientAddr: s.ClientAddr,
		ClientName: s.ClientName,
		Sender:     s.Sender,
		TLSVersion: s.TLSVersion,
		Cipher:     s.Cipher,
		Bits:       s.Bits,
		Verify:     verifyOf(s.Trust),
		// The logs show no fingerprints: such requirements are unchecked.
		FingerprintsKnown: false,
	}
	v := m.p.At(now).Judge(&f)
	out := Inbound{Refuse: v.Refuse}
	for _, ep := range v.Endpoints {
		out.Endpoints = append(out.Endpoints, ep.Name)
	}
	switch v.Result {
	case policy.NotCovered:
		out.Result = NotCovered
		return out
	case policy.Pass:
		out.Result = Pass
	case policy.Fail:
		out.Result = Pass // until a failure the log can show is found
	}
	var unknown []string
	for _, fl := range v.Failures {
		if nameCheck(fl.Check) && fl.Got == "" {
			// A trusted certificate whose names the log does not show.
			unknown = append(unknown, fl.String())
			continue
		}
		out.Result = Fail
		out.Reasons = append(out.Reasons, fl.String())
	}
	for _, fl := range v.Unchecked {
		unknown = append(unknown, fl.String())
	}
	if out.Result == Pass && len(unknown) > 0 {
		out.Result = Undecided
		out.Reasons = unknown
	}
	if out.Result != Fail {
		// A refusal only from checks the log cannot show is not evidence.
		out.Refuse = false
	}
	return out
}

func nameCheck(c policy.Check) bool {
	switch c {
	case policy.CheckCN, policy.CheckSubjectDN, policy.CheckIssuerDN, policy.CheckIssuerCN:
		return true
	}
	return false
}

func verifyOf(t maillog.Trust) policy.Verify {
	switch t {
	case maillog.Untrusted:
		return policy.VerifyUntrusted
	case maillog.Trusted, maillog.Verified:
		return policy.VerifyTrusted
	}
	return policy.VerifyNone
}

// Answer is the model's outbound answer for a next hop.
type Answer struct {
	// Endpoint covers the next hop ("" = none).
	Endpoint string
	// Monitor: the endpoint is in monitor mode, so the MTA gets no answer
	// today and applies its default.
	Monitor bool
	// Text is the answer the MTA gets when the endpoint is enforced
	// ("" when not covered or without outbound requirements).
	Text string
	// Key is the lookup key that found the endpoint.
	Key string
	// Err is a lookup error (the daemon would answer TEMP).
	Err error
}

// Active reports whether the MTA receives Text today.
func (a Answer) Active() bool { return a.Text != "" && !a.Monitor }

// Requirement parses Text in the MTA's grammar; with enforced false a
// monitor endpoint's text is ignored (the MTA's default applies).
func (m *Model) Requirement(a Answer, enforced bool) (mtapolicy.Requirement, error) {
	text := a.Text
	if !enforced && a.Monitor {
		text = ""
	}
	if m.Sendmail() {
		return mtapolicy.ParseSendmail(text)
	}
	return mtapolicy.ParsePostfix(text)
}

// Domain answers for mail to rcpt (an address in domain) routed by the
// domain: Postfix asks the domain, then ".parent" for each parent domain,
// and stops at the first endpoint; Sendmail asks tls_rcpt:RCPT.
func (m *Model) Domain(domain, rcpt string, now time.Time) Answer {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if m.Sendmail() {
		if rcpt == "" {
			rcpt = "postmaster@" + domain
		}
		return m.lookup("tls_rcpt:"+strings.ToLower(rcpt), now)
	}
	a := m.lookup(domain, now)
	for d := domain; a.Endpoint == "" && a.Err == nil; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		d = d[i+1:]
		a = m.lookup("."+d, now)
	}
	return a
}

// Host answers for a next hop given as a host (name or address) and port
// (0: the default): Postfix asks "[host]:port" (or "[host]"), Sendmail
// tls_srv:host.
func (m *Model) Host(host string, port int, now time.Time) Answer {
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if m.Sendmail() {
		return m.lookup("tls_srv:"+strings.ToLower(host), now)
	}
	key := "[" + host + "]"
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		key = "[IPv6:" + host + "]"
	}
	if port != 0 && port != 25 {
		key += ":" + strconv.Itoa(port)
	}
	return m.lookup(key, now)
}

// Key answers a lookup key verbatim, as the MTA would send it.
func (m *Model) Key(key string, now time.Time) Answer {
	return m.lookup(key, now)
}

func (m *Model) lookup(key string, now time.Time) Answer {
	a, err := m.p.At(now).Outbound(key)
	if err != nil {
		return Answer{Key: key, Err: err}
	}
	if a.Endpoint == nil {
		return Answer{}
	}
	return Answer{Endpoint: a.Endpoint.Name, Monitor: a.Monitor(), Text: a.Rules, Key: key}
}

// Covers reports the endpoints covering an inbound client by address and
// name (no sender) at time now.
func (m *Model) Covers(addr netip.Addr, name string, now time.Time) []string {
	var out []string
	for _, ep := range m.p.At(now).Covering(addr, name, "") {
		out = append(out, ep.Name)
	}
	return out
}
