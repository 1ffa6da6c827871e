package milter

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// ---- recording logger ----

type logRecord struct {
	Level slog.Level
	Msg   string
}

type recorder struct {
	mu   sync.Mutex
	recs []logRecord
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec.Level >= slog.LevelInfo {
		var as []slog.Attr
		rec.Attrs(func(a slog.Attr) bool { as = append(as, a); return true })
		r.recs = append(r.recs, logRecord{rec.Level, logx.Format(rec.Message, as)})
	}
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// records returns a copy of what was logged.
func (r *recorder) records() []logRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logRecord(nil), r.recs...)
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.recs))
	for i, x := range r.recs {
		out[i] = x.Msg
	}
	return out
}

// waitLines waits until n decision lines were logged (EOM and ABORT are
// processed after the client got its answer) and returns them.
func (r *recorder) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := r.lines()
		if len(l) >= n || time.Now().After(deadline) {
			if len(l) != n {
				t.Fatalf("got %d log lines, want %d:\n%s", len(l), n, strings.Join(l, "\n"))
			}
			return l
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- policies ----

const pinFP = "sha256:66:76:5D:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:6B:36"

const postfixPolicy = `
mta = "postfix"
[milter]
authserv_id = "mx.lab.test"
[policyd]
delegation_listen = "inet:127.0.0.1:10032"

[[endpoint]]
name  = "company-b"
hosts = ["192.0.2.10", "company-b.example"]
  [endpoint.inbound]
  encryption    = true
  min_bits      = 256
  validate_cert = true
  cn            = "client.lab.test"
  issuer_cn     = "Lab Test CA"

[[endpoint]]
name   = "company-r"
hosts  = ["192.0.2.20"]
action = "reject"
  [endpoint.inbound]
  encryption = true

[[endpoint]]
name  = "company-m"
hosts = ["192.0.2.30"]
mode  = "monitor"
  [endpoint.inbound]
  encryption    = true
  validate_cert = true

[[endpoint]]
name  = "company-p"
hosts = ["192.0.2.40"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = false
  fingerprints  = ["` + pinFP + `"]

[[endpoint]]
name  = "company-h"
hosts = ["192.0.2.50"]
  [endpoint.inbound]
  validate_cert = true
  match_cn      = true
`

const sendmailPolicy = `
mta = "sendmail"
[milter]
authserv_id = "sm.lab.test"

[[endpoint]]
name  = "company-b"
hosts = ["192.0.2.10"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = true
  subject_dn    = "/C=DE/O=Lab Test/CN=client.lab.test"
  issuer_dn     = "C=DE, O=Lab Test, CN=Lab Test CA"

[[endpoint]]
name  = "company-p"
hosts = ["192.0.2.40"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = false
  fingerprints  = ["` + pinFP + `"]
`

func mustPolicy(t testing.TB, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("test.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ---- a fake MTA's macros ----

var tlsMacroSet = func() map[string]bool {
	m := map[string]bool{}
	for _, n := range tlsMacros {
		m[n] = true
	}
	return m
}()

// fakeMTA hands the go-milter client macro values the way an MTA would:
// TLS macros only after STARTTLS and not at stages listed in hideTLS
// (Postfix: EOM/EOH), message macros only while a message is open.
type fakeMTA struct {
	mu      sync.Mutex
	stage   string
	conn    map[string]string
	tls     map[string]string
	msg     map[string]string
	hideTLS map[string]bool
}

func newFakeMTA(kind policy.MTA, clientAddr, clientName string) *fakeMTA {
	f := &fakeMTA{
		conn: map[string]string{"{client_addr}": clientAddr, "{client_name}": clientName, "{client_resolve}": "OK"},
		msg:  map[string]string{},
	}
	if kind == policy.Postfix {
		f.conn["j"] = "mx.lab.test"
		f.conn["v"] = "Postfix 3.7.11"
		f.hideTLS = map[string]bool{"eom": true, "data": true}
	} else {
		f.conn["j"] = "sm.lab.test"
		f.conn["v"] = "8.17.1.9"
	}
	return f
}

func (f *fakeMTA) Get(name string) string { v, _ := f.GetEx(name); return v }
func (f *fakeMTA) GetEx(name string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tlsMacroSet[name] {
		if f.tls == nil || f.hideTLS[f.stage] {
			return "", false
		}
		v, ok := f.tls[name]
		return v, ok
	}
	if v, ok := f.msg[name]; ok {
		return v, true
	}
	v, ok := f.conn[name]
	return v, ok
}

func (f *fakeMTA) set(fn func(f *fakeMTA)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// Postfix TLS macro sets as observed with Postfix 3.7.11.
func postfixTLS(trusted bool, subject, issuer string) map[string]string {
	m := map[string]string{"{tls_version}": "TLSv1.3", "{cipher}": "TLS_AES_256_GCM_SHA384", "{cipher_bits}": "256"}
	if trusted {
		m["{cert_subject}"] = subject
		m["{cert_issuer}"] = issuer
	}
	return m
}

// Sendmail TLS macro set; subject and issuer are OpenSSL one-line DNs,
// xtext-encoded here as Sendmail does.
func sendmailTLS(verify, subject, issuer, fpMacro, fp string) map[string]string {
	m := map[string]string{"{tls_version}": "TLSv1.3", "{cipher}": "TLS_AES_256_GCM_SHA384", "{cipher_bits}": "256", "{alg_bits}": "256",
		"{verify}": verify, "{cert_subject}": "", "{cert_issuer}": "", "{cn_subject}": "", "{cn_issuer}": "", "{cert_md5}": ""}
	if subject != "" {
		s, _ := certid.ParseDN(subject)
		i, _ := certid.ParseDN(issuer)
		m["{cert_subject}"] = policy.Xtext(s.OpenSSL())
		m["{cert_issuer}"] = policy.Xtext(i.OpenSSL())
		m["{cn_subject}"] = policy.Xtext(s.CN())
		m["{cn_issuer}"] = policy.Xtext(i.CN())
	}
	if fpMacro != "" {
		m[fpMacro] = fp
	}
	return m
}

// ---- harness ----

type harness struct {
	t    *testing.T
	addr string
	log  *recorder
	pol  atomic.Pointer[policy.Policy]
	srv  *Server
}

func startHarness(t *testing.T, text string, tweak func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, log: &recorder{}}
	h.pol.Store(mustPolicy(t, text))
	opts := Options{
		Policy: func() *policy.Policy { return h.pol.Load() },
		Logger: slog.New(h.log),
		Now:    func() time.Time { return stampDate },
	}
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	h.addr = ln.Addr().String()
	h.srv = srv
	return h
}

type smtpClient struct {
	t   *testing.T
	mta *fakeMTA
	cs  *gomilter.ClientSession
}

// session opens a milter session and sends the connect event.
func (h *harness) session(mta *fakeMTA, host string) *smtpClient {
	h.t.Helper()
	cl := gomilter.NewClient("tcp", h.addr)
	cs, err := cl.Session(mta)
	if err != nil {
		h.t.Fatal(err)
	}
	c := &smtpClient{t: h.t, mta: mta, cs: cs}
	h.t.Cleanup(func() { _ = cs.Close() })
	mta.set(func(f *fakeMTA) { f.stage = "connect" })
	addr := parseClientAddr(mta.conn["{client_addr}"])
	fam := gomilter.FamilyInet
	if addr.Is6() {
		fam = gomilter.FamilyInet6
	}
	act, err := cs.Conn(host, fam, 40000, addr.String())
	if err != nil || act.Type != gomilter.ActionContinue {
		h.t.Fatalf("connect: %v %v", act, err)
	}
	return c
}

func (c *smtpClient) helo(name string) {
	c.t.Helper()
	c.mta.set(func(f *fakeMTA) { f.stage = "helo" })
	act, err := c.cs.Helo(name)
	if err != nil || act.Type != gomilter.ActionContinue {
		c.t.Fatalf("helo: %v %v", act, err)
	}
}

func (c *smtpClient) starttls(tls map[string]string) {
	c.mta.set(func(f *fakeMTA) { f.tls = tls })
}

type header struct{ name, value string }

// message sends one transaction; it stops after MAIL if that is refused.
func (c *smtpClient) message(from string, rcpts []string, qid string, hdrs ...header) ([]gomilter.ModifyAction, *gomilter.Action) {
	c.t.Helper()
	c.mta.set(func(f *fakeMTA) { f.stage = "mail"; f.msg = map[string]string{"{mail_addr}": from} })
	act, err := c.cs.Mail(from, "")
	if err != nil {
		c.t.Fatalf("mail: %v", err)
	}
	if act.Type != gomilter.ActionContinue {
		return nil, act
	}
	c.mta.set(func(f *fakeMTA) { f.stage = "rcpt" })
	if len(rcpts) == 0 {
		rcpts = []string{"u@lab.test"}
	}
	for _, r := range rcpts {
		if act, err := c.cs.Rcpt(r, ""); err != nil || act.Type != gomilter.ActionContinue {
			c.t.Fatalf("rcpt: %v %v", act, err)
		}
	}
	c.mta.set(func(f *fakeMTA) { f.stage = "data"; f.msg["i"] = qid })
	if act, err := c.cs.DataStart(); err != nil || act.Type != gomilter.ActionContinue {
		c.t.Fatalf("data: %v %v", act, err)
	}
	hdrs = append(hdrs, header{"From", "<" + from + ">"}, header{"Subject", "test"})
	for _, h := range hdrs {
		if act, err := c.cs.HeaderField(h.name, h.value, nil); err != nil || act.Type != gomilter.ActionContinue {
			c.t.Fatalf("header: %v %v", act, err)
		}
	}
	if act, err := c.cs.HeaderEnd(); err != nil || act.Type != gomilter.ActionContinue {
		c.t.Fatalf("eoh: %v %v", act, err)
	}
	if _, err := c.cs.BodyChunk([]byte("hello\r\n")); err != nil {
		c.t.Fatalf("body: %v", err)
	}
	c.mta.set(func(f *fakeMTA) { f.stage = "eom" })
	mods, act, err := c.cs.End()
	if err != nil {
		c.t.Fatalf("eom: %v", err)
	}
	return mods, act
}

// abort is what Postfix sends after every transaction.
func (c *smtpClient) abort() {
	c.t.Helper()
	c.mta.set(func(f *fakeMTA) { f.stage = "abort"; f.msg = map[string]string{} })
	if err := c.cs.Abort(nil); err != nil {
		c.t.Fatalf("abort: %v", err)
	}
}

// ---- assertions ----

func wantReply(t *testing.T, act *gomilter.Action, code uint16, text string) {
	t.Helper()
	if act == nil || act.Type != gomilter.ActionRejectWithCode || act.SMTPCode != code || !strings.Contains(act.SMTPReply, text) {
		t.Fatalf("reply %v, want %d %q", act, code, text)
	}
}

type stampSeen struct {
	received, authres string
	deleted           []string // "Name#index"
}

// wantStamped checks the EOM answer: accepted, forged headers deleted
// first, then our two headers inserted at the top (Received above
// Authentication-Results).
func wantStamped(t *testing.T, mods []gomilter.ModifyAction, act *gomilter.Action) stampSeen {
	t.Helper()
	if act == nil || act.Type != gomilter.ActionAccept {
		t.Fatalf("EOM answer %v, want accept", act)
	}
	var s stampSeen
	var inserts []gomilter.ModifyAction
	for _, m := range mods {
		switch m.Type {
		case gomilter.ActionChangeHeader:
			if len(inserts) > 0 {
				t.Errorf("header deleted after insert: %+v", m)
			}
			if m.HeaderValue != "" {
				t.Errorf("header changed instead of deleted: %+v", m)
			}
			s.deleted = append(s.deleted, m.HeaderName+"#"+strconv.Itoa(int(m.HeaderIndex)))
		case gomilter.ActionInsertHeader:
			if m.HeaderIndex != 0 {
				t.Errorf("insert at %d, want 0", m.HeaderIndex)
			}
			inserts = append(inserts, m)
		default:
			t.Errorf("unexpected modification %+v", m)
		}
	}
	if len(inserts) != 2 || inserts[0].HeaderName != "Authentication-Results" || inserts[1].HeaderName != "Received" {
		t.Fatalf("inserted %+v, want Authentication-Results then Received at 0", inserts)
	}
	s.authres, s.received = inserts[0].HeaderValue, inserts[1].HeaderValue
	checkHeaderSafe(t, "Received", s.received)
	checkHeaderSafe(t, "Authentication-Results", s.authres)
	return s
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

// ---- tests ----

func TestPostfixPlaintextCoveredIsDeferred(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	mta := newFakeMTA(policy.Postfix, "192.0.2.10", "unknown")
	c := h.session(mta, "unknown")
	c.helo("client.example")
	_, act := c.message("a@x.example", []string{"u@lab.test"}, "QID1")
	wantReply(t, act, policy.DeferCode, "451 4.7.1 TLS required by local policy for this peer")
	l := h.log.waitLines(t, 1)
	wantContains(t, "log", l[0], "NOQUEUE: tlsgate: result=defer endpoint=company-b client=unknown[192.0.2.10] sender=<a@x.example> tls=none",
		`reason="endpoint=company-b check=encryption want=TLS got=plaintext"`)
}

func TestPostfixCoveredBySenderDomainOnly(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "198.51.100.7", "mail.elsewhere.example"), "mail.elsewhere.example")
	c.helo("mail.elsewhere.example")
	_, act := c.message("alice@company-b.example", []string{"u@lab.test"}, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "endpoint=company-b", "result=defer")
}

func TestPostfixRejectAction(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.20", "unknown"), "unknown")
	c.helo("r.example")
	_, act := c.message("a@r.example", []string{"u@lab.test"}, "")
	wantReply(t, act, policy.RejectCode, "550 5.7.1 TLS required by local policy for this peer")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "result=reject")
}

func TestPostfixTrustedPassIsStamped(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.helo("client.lab.test")
	c.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	c.helo("client.lab.test")
	mods, act := c.message("a@company-b.example", []string{"u@lab.test"}, "87BBD98A818")
	s := wantStamped(t, mods, act)
	wantContains(t, "Received", s.received,
		"from client.lab.test (client.lab.test [192.0.2.10])",
		"by mx.lab.test (tlsgate) with ESMTPS id 87BBD98A818",
		"(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK)",
		"(subject-cn=client.lab.test issuer-cn=Lab+20Test+20CA)",
		"(endpoint=company-b policy=pass);", "Sat, 28 Nov 2026 15:52:52 +0000")
	wantContains(t, "Authentication-Results", unfold(s.authres),
		"mx.lab.test; x-tls=pass policy.endpoint=company-b smtp.bits=256 smtp.cipher=TLS_AES_256_GCM_SHA384 smtp.version=TLSv1.3")
	c.abort()
	l := h.log.waitLines(t, 1)
	if l[0] != "87BBD98A818: tlsgate: result=pass endpoint=company-b client=client.lab.test[192.0.2.10] sender=<a@company-b.example> tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK" {
		t.Errorf("log line %q", l[0])
	}
}

func TestPostfixUntrustedOrNoCertFails(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.starttls(postfixTLS(false, "", ""))
	c.helo("client.lab.test")
	_, act := c.message("a@company-b.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "result=defer endpoint=company-b", "verify=UNVERIFIED",
		"check=validate_cert want=trusted got=none-or-untrusted")
}

func TestPostfixWrongCNAndIssuer(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.starttls(postfixTLS(true, "other.lab.test", "Other CA"))
	c.helo("client.lab.test")
	_, act := c.message("a@company-b.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "check=cn want=client.lab.test got=other.lab.test",
		`check=issuer_cn want=\"Lab Test CA\" got=\"Other CA\"`)
}

func TestPostfixCNDefaultsToVerifiedHostName(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	// company-h: match_cn without cn = the client's verified host name.
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.50", "client.lab.test"), "client.lab.test")
	c.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	c.helo("client.lab.test")
	mods, act := c.message("a@h.example", nil, "Q1")
	wantStamped(t, mods, act)
	c.abort()
	// Same certificate, but the client's name is not verified.
	c2 := h.session(newFakeMTA(policy.Postfix, "192.0.2.50", "unknown"), "unknown")
	c2.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	c2.helo("client.lab.test")
	_, act = c2.message("a@h.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	l := h.log.waitLines(t, 2)
	wantContains(t, "log", l[0], "result=pass")
	wantContains(t, "log", l[1], "check=cn", "client has no verified host name")
}

func TestPostfixMinBits(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	tls := postfixTLS(true, "client.lab.test", "Lab Test CA")
	tls["{tls_version}"], tls["{cipher}"], tls["{cipher_bits}"] = "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", "128"
	c.starttls(tls)
	c.helo("client.lab.test")
	_, act := c.message("a@company-b.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "tls=TLSv1.2 cipher=ECDHE-RSA-AES128-GCM-SHA256 bits=128", `check=min_bits want=\">=256\" got=128`)
}

// Postfix sends ABORT after every message and go-milter v0.10.1 then
// forgets the HELO-stage macros; the second message must still be judged
// on the session's TLS facts, whether or not the MTA repeats them at MAIL.
func TestSecondMessageAfterAbort(t *testing.T) {
	for _, repeatAtMail := range []bool{true, false} {
		name := "MTA repeats TLS macros at MAIL"
		if !repeatAtMail {
			name = "TLS macros only at HELO"
		}
		t.Run(name, func(t *testing.T) {
			h := startHarness(t, postfixPolicy, nil)
			mta := newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test")
			if !repeatAtMail {
				mta.hideTLS["mail"] = true
			}
			c := h.session(mta, "client.lab.test")
			c.helo("client.lab.test")
			c.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
			c.helo("client.lab.test")
			for i, qid := range []string{"QID1", "QID2", "QID3"} {
				mods, act := c.message("a@company-b.example", []string{"u@lab.test"}, qid)
				s := wantStamped(t, mods, act)
				wantContains(t, "Received", s.received, "id "+qid, "verify=OK", "policy=pass")
				c.abort()
				l := h.log.waitLines(t, i+1)
				wantContains(t, "log", l[i], qid+": tlsgate:", "tls=TLSv1.3", "result=pass")
			}
		})
	}
}

// A client may send MAIL right after STARTTLS without a second EHLO: the
// only HELO event carried no TLS macros, MAIL does.
func TestClientSkipsSecondEHLO(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.helo("client.lab.test")
	c.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	mods, act := c.message("a@company-b.example", nil, "Q1")
	s := wantStamped(t, mods, act)
	wantContains(t, "Received", s.received, "version=TLSv1.3", "policy=pass")
}

func TestPipelinedMultiRecipient(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	c.helo("client.lab.test")
	rcpts := []string{"a@lab.test", "b@lab.test", "c@lab.test", "d@lab.test"}
	mods, act := c.message("x@company-b.example", rcpts, "Q1")
	wantStamped(t, mods, act) // exactly one pair of headers for all recipients
	c.abort()
	// Refused at MAIL: no recipient is ever asked about.
	c2 := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c2.helo("client.lab.test")
	_, act = c2.message("x@company-b.example", rcpts, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	// The client may try again in the same session: judged again.
	if err := c2.cs.Abort(nil); err != nil {
		t.Fatal(err)
	}
	_, act = c2.message("y@company-b.example", rcpts, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	l := h.log.waitLines(t, 3)
	wantContains(t, "log", l[2], "sender=<y@company-b.example>", "result=defer")
}

func TestMonitorModeAcceptsAndStampsFailure(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.30", "unknown"), "unknown")
	c.helo("m.example")
	mods, act := c.message("a@m.example", []string{"u@lab.test"}, "Q1")
	s := wantStamped(t, mods, act)
	wantContains(t, "Received", s.received, "(no TLS: plaintext session)", "(endpoint=company-m policy=fail mode=monitor failed=encryption);")
	wantContains(t, "Authentication-Results", unfold(s.authres), "mx.lab.test; x-tls=fail reason=encryption policy.endpoint=company-m")
	c.abort()
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "Q1: tlsgate: result=monitor endpoint=company-m client=", "tls=none", "check=encryption")
	if h.log.recs[0].Level != slog.LevelWarn {
		t.Errorf("monitor failure logged at %v", h.log.recs[0].Level)
	}
}

func TestUncoveredPeerPassesStamped(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "IPv6:2001:db8::77", "unknown"), "unknown")
	c.helo("someone.example")
	mods, act := c.message("a@someone.example", []string{"u@lab.test"}, "Q9")
	s := wantStamped(t, mods, act)
	wantContains(t, "Received", s.received, "from someone.example (unknown [IPv6:2001:db8::77])", "(no TLS: plaintext session)", "(endpoint=none policy=none);")
	wantContains(t, "Authentication-Results", s.authres, "mx.lab.test; x-tls=none reason=plaintext")
	c.abort()
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "Q9: tlsgate: result=none endpoint=none client=unknown[2001:db8::77]", "tls=none")
}

func TestPostfixFingerprintsLeftToPolicyServer(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.40", "unknown"), "unknown")
	c.starttls(postfixTLS(false, "", ""))
	c.helo("p.example")
	mods, act := c.message("a@p.example", nil, "Q1")
	wantStamped(t, mods, act)
	c.abort()
	// Not "pass": the milter cannot see the fingerprints, and says which
	// part judges them.
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "Q1: tlsgate: result=unchecked endpoint=company-p unchecked=company-p:fingerprints judged_by=tls-policy-delegation client=")
}

func TestPanicInPolicyTempFails(t *testing.T) {
	h := startHarness(t, postfixPolicy, func(o *Options) {
		o.Policy = func() *policy.Policy { panic("model exploded") }
	})
	c := h.session(newFakeMTA(policy.Postfix, "198.51.100.1", "unknown"), "unknown")
	c.helo("x.example")
	_, act := c.message("a@x.example", nil, "")
	wantReply(t, act, policy.TempFailCode, "451 4.3.0 TLS policy check failed temporarily")
	l := h.log.waitLines(t, 1)
	wantContains(t, "log", l[0], "result=tempfail", "panic in Options.Policy: model exploded")
}

func TestNilPolicyTempFails(t *testing.T) {
	h := startHarness(t, postfixPolicy, func(o *Options) {
		o.Policy = func() *policy.Policy { return nil }
	})
	c := h.session(newFakeMTA(policy.Postfix, "198.51.100.1", "unknown"), "unknown")
	c.helo("x.example")
	_, act := c.message("a@x.example", nil, "")
	wantReply(t, act, policy.TempFailCode, "4.3.0")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "result=tempfail", "no policy loaded")
}

func TestPanicAtEndOfMessageTempFails(t *testing.T) {
	// The clock answers at MAIL FROM (the judgement) and breaks at EOM
	// (the stamp's date).
	var calls atomic.Int32
	h := startHarness(t, postfixPolicy, func(o *Options) {
		o.Now = func() time.Time {
			if calls.Add(1) > 1 {
				panic("clock broke")
			}
			return stampDate
		}
	})
	c := h.session(newFakeMTA(policy.Postfix, "198.51.100.1", "unknown"), "unknown")
	c.helo("x.example")
	_, act := c.message("a@x.example", nil, "Q1")
	wantReply(t, act, policy.TempFailCode, "451 4.3.0")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "Q1: tlsgate:", "result=tempfail", "panic in end of message: clock broke")
	// The session goes on: the next message is judged and stamped.
	c.abort()
}

func TestForgedHeadersRemoved(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	c.helo("client.lab.test")
	mods, act := c.message("a@company-b.example", nil, "Q1",
		header{"Received", "from a (b [1.2.3.4]) by mx.partner.example (Postfix) id X; date"},
		header{"Authentication-Results", "mx.partner.example; spf=pass smtp.mailfrom=a@company-b.example"},
		header{"Received", "from evil (evil [6.6.6.6])\n\tby mx.lab.test (tlsgate) with ESMTPS\n\t(version=TLSv1.3 verify=OK)\n\t(endpoint=company-b policy=pass); date"},
		header{"authentication-results", "(sneaky comment) MX.LAB.TEST; x-tls=pass policy.endpoint=company-b"},
		header{"Received", "from c by mx.partner.example (tlsgate) id Y; date"},
		header{"Authentication-Results", `"mx.lab.test"; x-tls=pass`},
		header{"RECEIVED", "from d by mx.lab.test ( TLSgate ) id Z; date"},
		header{"Authentication-Results", "mx.lab.test.\v; x-tls=pass"},
		header{"Authentication-Results", "mx.lab(c).test\u00a01; x-tls=pass"},
		header{"Authentication-Results", "mx.lab.test.evil; x-tls=pass"},
	)
	s := wantStamped(t, mods, act)
	want := []string{"Authentication-Results#5", "Authentication-Results#4", "Authentication-Results#3", "Authentication-Results#2", "Received#4", "Received#2"}
	if strings.Join(s.deleted, " ") != strings.Join(want, " ") {
		t.Errorf("deleted %v, want %v", s.deleted, want)
	}
}

func TestHostileCertificateValuesInHeaders(t *testing.T) {
	hostile := []string{
		"evil\r\nX-Injected: yes",
		`a) (b "c" \d`,
		"Ünïcödé Ωmega 証明書",
		strings.Repeat("long-subject-", 40),
		"semi;colon=equals<angle>+plus",
	}
	for _, mtaKind := range []policy.MTA{policy.Postfix, policy.Sendmail} {
		for _, cn := range hostile {
			t.Run(string(mtaKind), func(t *testing.T) {
				text := postfixPolicy
				if mtaKind == policy.Sendmail {
					text = sendmailPolicy
				}
				h := startHarness(t, text, nil)
				mta := newFakeMTA(mtaKind, "198.51.100.9", "unknown")
				c := h.session(mta, "unknown")
				if mtaKind == policy.Postfix {
					c.starttls(postfixTLS(true, cn, cn))
				} else {
					tls := sendmailTLS("FAIL", "", "", "{cert_md5}", "D1:8A")
					tls["{cn_subject}"], tls["{cn_issuer}"] = policy.Xtext(cn), policy.Xtext(cn)
					tls["{cert_subject}"] = policy.Xtext("/CN=" + cn)
					c.starttls(tls)
				}
				c.helo(cn) // a hostile HELO name too
				mods, act := c.message("a@x.example", nil, "Q1")
				s := wantStamped(t, mods, act) // checks printable ASCII, folding, balance
				if strings.Contains(s.received, "X-Injected: yes") || strings.Contains(s.received, "\r") {
					t.Errorf("injection in %q", s.received)
				}
				wantContains(t, "Received", s.received, "subject-cn=")
				c.abort()
				for _, l := range h.log.waitLines(t, 1) {
					for i := 0; i < len(l); i++ {
						if l[i] < ' ' || l[i] > '~' {
							t.Errorf("log line has byte %#x: %q", l[i], l)
						}
					}
				}
			})
		}
	}
}

func TestSendmailDNMatching(t *testing.T) {
	h := startHarness(t, sendmailPolicy, nil)
	// Good: DNs match although written differently in the policy.
	mta := newFakeMTA(policy.Sendmail, "192.0.2.10", "client.lab.test")
	c := h.session(mta, "client.lab.test")
	c.starttls(sendmailTLS("OK", "/C=DE/O=Lab Test/CN=client.lab.test", "/C=DE/O=Lab Test/CN=Lab Test CA", "{cert_md5}", "D1:8A:D0:34:DD:CD:0B:D9:D7:F4:CE:8A:62:96:14:9C"))
	c.helo("client.lab.test")
	mta.set(func(f *fakeMTA) { f.msg["i"] = "6ASFvqYo016532" })
	mods, act := c.message("a@x.example", nil, "6ASFvqYo016532")
	s := wantStamped(t, mods, act)
	wantContains(t, "Received", s.received, "by sm.lab.test (tlsgate) with ESMTPS id 6ASFvqYo016532", "verify=OK", "(subject-cn=client.lab.test issuer-cn=Lab+20Test+20CA)", "policy=pass")
	wantContains(t, "Authentication-Results", s.authres, "sm.lab.test; x-tls=pass")
	c.abort()

	// Wrong issuer DN (same CN, other O).
	c = h.session(newFakeMTA(policy.Sendmail, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.starttls(sendmailTLS("OK", "/C=DE/O=Lab Test/CN=client.lab.test", "/C=DE/O=Other Org/CN=Lab Test CA", "", ""))
	c.helo("client.lab.test")
	_, act = c.message("a@x.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")

	// Self-signed: {verify}=FAIL.
	c = h.session(newFakeMTA(policy.Sendmail, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.starttls(sendmailTLS("FAIL", "/C=DE/O=Lab Test/CN=client.lab.test", "/C=DE/O=Lab Test/CN=client.lab.test", "", ""))
	c.helo("client.lab.test")
	_, act = c.message("a@x.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")

	l := h.log.waitLines(t, 3)
	wantContains(t, "log", l[0], "6ASFvqYo016532: tlsgate: result=pass ", "verify=OK")
	wantContains(t, "log", l[1], "check=issuer_dn")
	wantContains(t, "log", l[2], "tlsgate: result=defer ", "verify=FAIL", "check=validate_cert want=trusted got=untrusted")
}

func TestSendmailFingerprints(t *testing.T) {
	h := startHarness(t, sendmailPolicy, nil)
	fp := strings.TrimPrefix(pinFP, "sha256:")
	// SHA-256 {cert_fp} matching the pin: pass, although self-signed.
	c := h.session(newFakeMTA(policy.Sendmail, "192.0.2.40", "unknown"), "unknown")
	c.starttls(sendmailTLS("FAIL", "/CN=p.example", "/CN=p.example", "{cert_fp}", fp))
	c.helo("p.example")
	mods, act := c.message("a@p.example", nil, "Q1")
	wantStamped(t, mods, act)
	c.abort()
	// Only {cert_md5} (Sendmail's default): fails closed, and says why.
	c = h.session(newFakeMTA(policy.Sendmail, "192.0.2.40", "unknown"), "unknown")
	c.starttls(sendmailTLS("FAIL", "/CN=p.example", "/CN=p.example", "{cert_md5}", "D1:8A:D0:34:DD:CD:0B:D9:D7:F4:CE:8A:62:96:14:9C"))
	c.helo("p.example")
	_, act = c.message("a@p.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	// Another certificate.
	c = h.session(newFakeMTA(policy.Sendmail, "192.0.2.40", "unknown"), "unknown")
	c.starttls(sendmailTLS("FAIL", "/CN=p.example", "/CN=p.example", "{cert_fp}", strings.Repeat("AB:", 31)+"AB"))
	c.helo("p.example")
	_, act = c.message("a@p.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	l := h.log.waitLines(t, 3)
	wantContains(t, "log", l[0], "result=pass")
	wantContains(t, "log", l[1], "check=fingerprints", "only an MD5 fingerprint", "CertFingerprintAlgorithm=sha256")
	wantContains(t, "log", l[2], "check=fingerprints", "AB:AB")
}

// A session keeps the model it started with; new sessions get the new one.
func TestReloadAffectsNewSessionsOnly(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "198.51.100.5", "unknown"), "unknown")
	c.helo("x.example")
	mods, act := c.message("a@x.example", nil, "Q1")
	wantStamped(t, mods, act)
	c.abort()
	h.pol.Store(mustPolicy(t, postfixPolicy+`
[[endpoint]]
name  = "new"
hosts = ["198.51.100.5"]
  [endpoint.inbound]
  encryption = true
`))
	mods, act = c.message("a@x.example", nil, "Q2")
	wantStamped(t, mods, act) // old model: not covered
	c.abort()
	c2 := h.session(newFakeMTA(policy.Postfix, "198.51.100.5", "unknown"), "unknown")
	c2.helo("x.example")
	_, act = c2.message("a@x.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	l := h.log.waitLines(t, 3)
	wantContains(t, "log", l[1], "Q2:", "result=none")
	wantContains(t, "log", l[2], "endpoint=new", "result=defer")
}

// A message that ends without EOM (RSET, QUIT, all recipients refused) is
// still logged once, at ABORT or when the MTA closes the connection.
func TestDecisionLoggedOnAbortAndClose(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Postfix, "198.51.100.5", "unknown"), "unknown")
	c.helo("x.example")
	act, err := c.cs.Mail("a@x.example", "")
	if err != nil || act.Type != gomilter.ActionContinue {
		t.Fatal(act, err)
	}
	c.abort()
	h.log.waitLines(t, 1)
	c.mta.set(func(f *fakeMTA) { f.stage = "mail" })
	if _, err := c.cs.Mail("b@x.example", ""); err != nil {
		t.Fatal(err)
	}
	_ = c.cs.Close()
	l := h.log.waitLines(t, 2)
	wantContains(t, "log", l[0], "NOQUEUE: tlsgate:", "sender=<a@x.example>", "result=none")
	wantContains(t, "log", l[1], "sender=<b@x.example>", "result=none")
}

// Reading Sendmail's macros with Postfix's rules would take the empty
// {cert_issuer} of a certificate-less session for "trusted": refuse.
func TestMTAMismatchTempFails(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	c := h.session(newFakeMTA(policy.Sendmail, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.starttls(sendmailTLS("NO", "", "", "{cert_md5}", ""))
	c.helo("client.lab.test")
	_, act := c.message("a@company-b.example", nil, "")
	wantReply(t, act, policy.TempFailCode, "4.3.0")
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "result=tempfail", `mta = \"postfix\"`, "{verify}")

	h2 := startHarness(t, sendmailPolicy, nil)
	c = h2.session(newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test"), "client.lab.test")
	c.helo("client.lab.test")
	_, act = c.message("a@company-b.example", nil, "")
	wantReply(t, act, policy.TempFailCode, "4.3.0")
	wantContains(t, "log", h2.log.waitLines(t, 1)[0], "result=tempfail", "Postfix 3.7.11")
}

// When the MTA reuses a milter connection for another SMTP session
// (SMFIC_QUIT_NC), nothing of the first session's TLS state survives.
func TestMilterConnectionReuse(t *testing.T) {
	h := startHarness(t, postfixPolicy, nil)
	mta := newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test")
	c := h.session(mta, "client.lab.test")
	c.starttls(postfixTLS(true, "client.lab.test", "Lab Test CA"))
	c.helo("client.lab.test")
	mods, act := c.message("a@company-b.example", nil, "Q1")
	wantStamped(t, mods, act)
	c.abort()
	// New SMTP session on the same milter connection: plaintext.
	mta2 := newFakeMTA(policy.Postfix, "192.0.2.10", "client.lab.test")
	if err := c.cs.Reset(mta2); err != nil {
		t.Fatal(err)
	}
	c.mta = mta2
	mta2.set(func(f *fakeMTA) { f.stage = "connect" })
	if act, err := c.cs.Conn("client.lab.test", gomilter.FamilyInet, 40001, "192.0.2.10"); err != nil || act.Type != gomilter.ActionContinue {
		t.Fatal(act, err)
	}
	c.helo("client.lab.test")
	_, act = c.message("a@company-b.example", nil, "")
	wantReply(t, act, policy.DeferCode, "4.7.1")
	l := h.log.waitLines(t, 2)
	wantContains(t, "log", l[1], "tlsgate: result=defer ", "tls=none")
}

// TestExceptionDecisions: while an exception runs, the decisions it makes
// say exception=NAME (result=exception when the endpoint it relaxes would
// have refused the session); from its expiry on, the same session is
// judged by that endpoint, on the milter's clock, without a reload.
func TestExceptionDecisions(t *testing.T) {
	const pol = `mta = "sendmail"
[[endpoint]]
name  = "company-b"
hosts = [".company-b.example"]
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name         = "company-b-labs"
hosts        = ["labs.company-b.example", ".labs.company-b.example"]
exception_to = "company-b"
reason       = "CHG-4711"
expires      = 2027-01-31T12:00:00Z
  [endpoint.inbound]
  encryption = true
`
	var now atomic.Pointer[time.Time]
	set := func(t time.Time) { now.Store(&t) }
	set(time.Date(2027, 1, 31, 11, 59, 59, 0, time.UTC))
	h := startHarness(t, pol, func(o *Options) { o.Now = func() time.Time { return *now.Load() } })
	send := func(qid string) *gomilter.Action {
		c := h.session(newFakeMTA(policy.Sendmail, "192.0.2.10", "mx.labs.company-b.example"), "mx.labs.company-b.example")
		c.starttls(sendmailTLS("NO", "", "", "", ""))
		c.helo("mx.labs.company-b.example")
		_, act := c.message("a@labs.company-b.example", []string{"u@lab.test"}, qid)
		c.abort()
		return act
	}
	if act := send("Q1"); act.Type != gomilter.ActionAccept {
		t.Fatalf("before expiry: %+v, want accepted", act)
	}
	wantContains(t, "log", h.log.waitLines(t, 1)[0], "Q1: tlsgate: result=exception endpoint=company-b-labs exception=company-b-labs client=")
	set(time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC))
	wantReply(t, send("Q2"), policy.DeferCode, "4.7.1")
	l := h.log.waitLines(t, 2)[1]
	wantContains(t, "log", l, "NOQUEUE: tlsgate: result=defer endpoint=company-b client=", "check=validate_cert")
	if strings.Contains(l, "exception=") {
		t.Errorf("an expired exception is named: %s", l)
	}
}
