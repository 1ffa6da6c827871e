package metrics

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/milter"
	"github.com/tlsgate/tlsgate/policyd"
)

// agreePolicy covers one session per outcome. The exception ends at
// agreeNow + 1h.
const agreePolicy = `mta = "postfix"
[policyd]
delegation_listen = "unix:/run/tlsgate/delegation.sock"
[[endpoint]]
name  = "defer"
hosts = ["defer.example"]
  [endpoint.inbound]
  encryption = true
  min_bits   = 128
[[endpoint]]
name   = "reject"
hosts  = ["reject.example"]
action = "reject"
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name  = "watch"
hosts = ["watch.example"]
mode  = "monitor"
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name  = "partner"
hosts = [".partner.example"]
  [endpoint.inbound]
  validate_cert = true
  issuer_cn     = "Lab Test CA"
[[endpoint]]
name         = "partner-labs"
hosts        = ["labs.partner.example"]
exception_to = "partner"
reason       = "CHG-4711"
expires      = 2027-01-31T13:00:00Z
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name  = "pinned"
hosts = ["pin.example"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints  = ["sha256:9D:A6:66:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:56:B3"]
`

var agreeNow = time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC)

const agreePin = "9D:A6:66:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:56:B3"

// session is one inbound SMTP session as Postfix reports it to both
// parts: the milter's macros and the policy-delegation attributes.
type session struct {
	name   string
	sender string
	// tls is "" for plaintext; bits is the cipher strength.
	tls  string
	bits string
	// trusted: a certificate that chains to the CA store (Postfix tells
	// both parts its subject and issuer CN); issuer is its issuer's CN.
	trusted bool
	issuer  string
	// fingerprint: a certificate was presented (Postfix tells only the
	// policy-delegation server its fingerprint).
	fingerprint string
	// want is the result both parts must log and count; the pinned
	// sessions give the milter's and the delegation server's apart.
	want, milterWant string
}

func agreeSessions() []session {
	return []session{
		{name: "uncovered", sender: "a@other.example", want: "none"},
		{name: "uncovered-tls", sender: "a@other.example", tls: "TLSv1.3", bits: "256", want: "none"},
		{name: "pass", sender: "a@defer.example", tls: "TLSv1.3", bits: "256", want: "pass"},
		{name: "plaintext-defer", sender: "a@defer.example", want: "defer"},
		{name: "weak-defer", sender: "a@defer.example", tls: "TLSv1.2", bits: "112", want: "defer"},
		{name: "plaintext-reject", sender: "a@reject.example", want: "reject"},
		{name: "monitor", sender: "a@watch.example", want: "monitor"},
		{name: "monitor-pass", sender: "a@watch.example", tls: "TLSv1.3", bits: "256", want: "pass"},
		{name: "trusted-pass", sender: "a@mx.partner.example", tls: "TLSv1.3", bits: "256", trusted: true, issuer: "Lab Test CA", fingerprint: agreePin, want: "pass"},
		{name: "wrong-issuer", sender: "a@mx.partner.example", tls: "TLSv1.3", bits: "256", trusted: true, issuer: "Other CA", fingerprint: agreePin, want: "defer"},
		{name: "untrusted", sender: "a@mx.partner.example", tls: "TLSv1.3", bits: "256", fingerprint: agreePin, want: "defer"},
		{name: "exception", sender: "a@labs.partner.example", tls: "TLSv1.3", bits: "256", want: "exception"},
		{name: "exception-own-rules", sender: "a@labs.partner.example", want: "defer"},
		{name: "pinned-ok", sender: "a@pin.example", tls: "TLSv1.3", bits: "256", fingerprint: agreePin, want: "pass", milterWant: "unchecked"},
		{name: "pinned-wrong", sender: "a@pin.example", tls: "TLSv1.3", bits: "256", fingerprint: strings.Replace(agreePin, "9D", "9E", 1), want: "defer", milterWant: "unchecked"},
		{name: "pinned-plaintext", sender: "a@pin.example", want: "defer"},
	}
}

func (s session) macros(qid string) gomilter.Macros {
	m := gomilter.NewMacroBag()
	for k, v := range map[string]string{"{client_addr}": "192.0.2.7", "{client_name}": "unknown", "{client_resolve}": "OK",
		"j": "mx.lab.test", "v": "Postfix 3.7.11", "{mail_addr}": s.sender, "i": qid} {
		m.Set(gomilter.MacroName(k), v)
	}
	if s.tls != "" {
		m.Set("{tls_version}", s.tls)
		m.Set("{cipher}", "TLS_AES_256_GCM_SHA384")
		m.Set("{cipher_bits}", s.bits)
		if s.trusted {
			m.Set("{cert_subject}", "client.lab.test")
			m.Set("{cert_issuer}", s.issuer)
		}
	}
	return m
}

func (s session) request(qid string) policyd.Request {
	r := policyd.Request{"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": "192.0.2.7", "client_name": "unknown",
		"sender": s.sender, "recipient": "u@lab.test", "queue_id": qid,
		"encryption_protocol": s.tls, "encryption_cipher": "", "encryption_keysize": "0"}
	if s.tls != "" {
		r["encryption_cipher"], r["encryption_keysize"] = "TLS_AES_256_GCM_SHA384", s.bits
		if s.trusted {
			r["ccert_subject"], r["ccert_issuer"] = "client.lab.test", policy.Xtext(s.issuer)
		}
		r["ccert_fingerprint"] = s.fingerprint
	}
	return r
}

// syncBuffer is a log sink that tests read while servers write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPartsAgree drives the same sessions through the milter and the
// policy-delegation server, each wired to metrics as tlsgate serve wires
// them, and checks that both log the same result= and count the same
// endpoint and result labels: the model's outcome, computed once. Where
// Postfix hides a fact from the milter (a client certificate's
// fingerprint), the milter says unchecked and the delegation server
// decides.
func TestPartsAgree(t *testing.T) {
	p, err := policy.Parse("agree.toml", []byte(agreePolicy))
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	var logs syncBuffer
	log := slog.New(logx.NewWriter(&logs, slog.LevelDebug))
	clock := func() time.Time { return agreeNow }

	ms, err := milter.New(milter.Options{Policy: func() *policy.Policy { return p }, Logger: log, Now: clock, OnDecision: m.MilterDecision})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ms.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms.Shutdown(ctx)
		<-done
	}()
	dp := &policyd.InboundPolicy{Policy: func() *policy.Policy { return p }, Logger: log, Now: clock, OnDecision: m.DelegationDecision}

	resultOf := regexp.MustCompile(`^(\S+): (tlsgate:|tls-policy-delegation) result=([a-z]+) endpoint=([a-z,-]+) `)
	for i, s := range agreeSessions() {
		qid := "Q" + string(rune('A'+i))
		mark := len(logs.String())
		milterSession(t, ln.Addr().String(), s, qid)
		// Postfix asks the delegation server at RCPT TO, after the
		// milter let MAIL FROM through; asked on its own, it must judge
		// the sessions the milter refuses the same way.
		dp.Decide(context.Background(), s.request(qid))
		mlt := s.want
		if s.milterWant != "" {
			mlt = s.milterWant
		}
		got := map[string][2]string{}
		for _, line := range strings.Split(strings.TrimSpace(logs.String()[mark:]), "\n") {
			mm := resultOf.FindStringSubmatch(line)
			if mm == nil {
				t.Errorf("%s: unexpected line %q", s.name, line)
				continue
			}
			got[mm[2]] = [2]string{mm[3], mm[4]}
		}
		if r := got["tlsgate:"][0]; r != mlt {
			t.Errorf("%s: milter logged result=%s, want %s", s.name, r, mlt)
		}
		if r := got["tls-policy-delegation"][0]; r != s.want {
			t.Errorf("%s: delegation server logged result=%s, want %s", s.name, r, s.want)
		}
		if s.milterWant == "" && got["tlsgate:"] != got["tls-policy-delegation"] {
			t.Errorf("%s: the parts disagree: milter %v, delegation %v", s.name, got["tlsgate:"], got["tls-policy-delegation"])
		}
	}

	// The counters: each part counted each session under the labels its
	// line gave.
	want := map[[3]string]float64{}
	for _, s := range agreeSessions() {
		v := p.At(agreeNow).Judge(&policy.Facts{ClientAddr: mustAddr("192.0.2.7"), Sender: s.sender})
		ep := v.Names()
		mlt := s.want
		if s.milterWant != "" {
			mlt = s.milterWant
		}
		want[[3]string{"milter", ep, mlt}]++
		want[[3]string{"delegation", ep, s.want}]++
	}
	for k, n := range want {
		if got := testutil.ToFloat64(m.Decisions.WithLabelValues(k[0], k[1], k[2])); got != n {
			t.Errorf("decisions{part=%q,endpoint=%q,result=%q} = %v, want %v", k[0], k[1], k[2], got, n)
		}
	}
	if n := testutil.CollectAndCount(m.Decisions); n != len(want) {
		t.Errorf("%d decision series, want %d", n, len(want))
	}
}

// milterSession plays one Postfix SMTP session for s against the milter
// at addr: connect, EHLO, MAIL FROM, and, if MAIL is accepted, one
// recipient, the message and ABORT (as Postfix sends after each message).
func milterSession(t *testing.T, addr string, s session, qid string) {
	t.Helper()
	cs, err := gomilter.NewClient("tcp", addr).Session(s.macros(qid))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if act, err := cs.Conn("unknown", gomilter.FamilyInet, 40000, "192.0.2.7"); err != nil || act.Type != gomilter.ActionContinue {
		t.Fatalf("%s: connect: %v %v", s.name, act, err)
	}
	if act, err := cs.Helo("client.lab.test"); err != nil || act.Type != gomilter.ActionContinue {
		t.Fatalf("%s: helo: %v %v", s.name, act, err)
	}
	act, err := cs.Mail(s.sender, "")
	if err != nil {
		t.Fatalf("%s: mail: %v", s.name, err)
	}
	if act.Type != gomilter.ActionContinue {
		return
	}
	if _, err := cs.Rcpt("u@lab.test", ""); err != nil {
		t.Fatalf("%s: rcpt: %v", s.name, err)
	}
	if _, err := cs.DataStart(); err != nil {
		t.Fatalf("%s: data: %v", s.name, err)
	}
	if _, err := cs.HeaderField("Subject", "test", nil); err != nil {
		t.Fatalf("%s: header: %v", s.name, err)
	}
	if _, err := cs.HeaderEnd(); err != nil {
		t.Fatalf("%s: eoh: %v", s.name, err)
	}
	if _, err := cs.BodyChunk([]byte("hello\r\n")); err != nil {
		t.Fatalf("%s: body: %v", s.name, err)
	}
	if _, _, err := cs.End(); err != nil {
		t.Fatalf("%s: eom: %v", s.name, err)
	}
	if err := cs.Abort(nil); err != nil {
		t.Fatalf("%s: abort: %v", s.name, err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
