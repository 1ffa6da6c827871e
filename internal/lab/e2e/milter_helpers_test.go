package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/milter"
)

// liveMilter is a tlsgate milter, run in the test process, on a loopback
// port for a real MTA. Its log lines are what "tlsgate serve" would log.
type liveMilter struct {
	srv  *milter.Server
	ln   net.Listener
	port int
	log  *lockedBuffer
	done chan error
}

func startLiveMilter(t *testing.T, pol *policy.Policy) *liveMilter {
	t.Helper()
	m := &liveMilter{log: &lockedBuffer{}, done: make(chan error, 1)}
	srv, err := milter.New(milter.Options{Policy: func() *policy.Policy { return pol }, Logger: slog.New(logx.NewWriter(m.log, slog.LevelInfo))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.srv, m.ln, m.port = srv, ln, ln.Addr().(*net.TCPAddr).Port
	go func() { m.done <- srv.Serve(ln) }()
	t.Cleanup(func() { m.stop(t) })
	return m
}

// stop shuts the milter down (idempotent).
func (m *liveMilter) stop(t *testing.T) {
	if m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		t.Errorf("milter shutdown: %v", err)
	}
	if err := <-m.done; err != nil {
		t.Errorf("milter serve: %v", err)
	}
	m.srv = nil
}

// lines returns the log lines so far, without their "<N>" severity
// prefixes: the text syslog would carry.
func (m *liveMilter) lines() []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(m.log.String(), "\n"), "\n") {
		if len(l) > 3 && l[0] == '<' && l[2] == '>' {
			l = l[3:]
		}
		out = append(out, l)
	}
	return out
}

// lineFor waits for the decision line of sender.
func (m *liveMilter) lineFor(t *testing.T, sender string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range m.lines() {
			if strings.Contains(l, "sender=<"+sender+">") {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision logged for %s:\n%s", sender, strings.Join(m.lines(), "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mustPolicy parses a policy text or fails the test.
func mustPolicy(t *testing.T, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("test.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wantContains fails the test (and goes on) for each of subs that s,
// described by what, lacks.
func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q:\n%s", what, sub, s)
		}
	}
}

// mail is one message of an SMTP session.
type mail struct {
	from    string
	to      []string
	headers string // extra header lines, CRLF-terminated
}

// smtpResult is what happened to one message.
type smtpResult struct {
	err   error // nil: accepted (250 after DATA)
	stage string
}

func (r smtpResult) code() int {
	var te *textproto.Error
	if errors.As(r.err, &te) {
		return te.Code
	}
	return 0
}

// sendSession runs one SMTP session with net/smtp: EHLO, optional
// STARTTLS (net/smtp repeats EHLO afterwards), then each message; a
// refused message is followed by RSET and the next one is tried.
func sendSession(t *testing.T, addr string, tlsCfg *tls.Config, msgs ...mail) []smtpResult {
	t.Helper()
	return sendSessionFrom(t, "", addr, tlsCfg, msgs...)
}

// sendSessionFrom is sendSession from the local address src (see greet).
func sendSessionFrom(t *testing.T, src, addr string, tlsCfg *tls.Config, msgs ...mail) []smtpResult {
	t.Helper()
	c, err := greet(addr, src, tlsCfg, 5*time.Minute)
	if err != nil {
		t.Fatalf("SMTP session from %q to %s: %v", src, addr, err)
	}
	defer c.Close()
	var res []smtpResult
	for i, m := range msgs {
		r := func() smtpResult {
			if err := c.Mail(m.from); err != nil {
				return smtpResult{err, "MAIL"}
			}
			for _, to := range m.to {
				if err := c.Rcpt(to); err != nil {
					return smtpResult{err, "RCPT"}
				}
			}
			w, err := c.Data()
			if err != nil {
				return smtpResult{err, "DATA"}
			}
			fmt.Fprintf(w, "%sFrom: <%s>\r\nTo: <%s>\r\nSubject: message %d\r\nMessage-ID: <%d.%d@client.lab.test>\r\n\r\nbody\r\n",
				m.headers, m.from, strings.Join(m.to, ">, <"), i+1, time.Now().UnixNano(), i)
			if err := w.Close(); err != nil {
				return smtpResult{err, "END"}
			}
			return smtpResult{}
		}()
		if r.err != nil {
			if err := c.Reset(); err != nil {
				// The server may have dropped us (421): report what we have.
				res = append(res, r)
				return res
			}
		}
		res = append(res, r)
	}
	_ = c.Quit()
	return res
}

// clientTLS is a client configuration trusting the lab CA, with an
// optional client certificate.
func clientTLS(t *testing.T, pki *testpki.PKI, cert *testpki.Cert) *tls.Config {
	t.Helper()
	cfg := &tls.Config{ServerName: "mx.lab.test", RootCAs: pki.CA.Pool()}
	if cert != nil {
		kp, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		// Present the certificate even when the server's list of
		// acceptable CAs does not name its issuer (a self-signed one):
		// Go's default would then send none.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	return cfg
}

// issueClient makes a CA-signed client certificate with the given subject.
func issueClient(t *testing.T, pki *testpki.PKI, name string, subject pkix.Name) *testpki.Cert {
	t.Helper()
	c, err := pki.Issue(testpki.Options{Name: name, Subject: subject, Signer: pki.CA, KeyType: testpki.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// headerBlock returns the header part of a message, unfolded into lines.
func headerBlock(data []byte) []string {
	s := string(data)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		s = s[:i]
	}
	var out []string
	for _, l := range strings.Split(s, "\r\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(out) > 0 {
			out[len(out)-1] += " " + strings.TrimSpace(l)
			continue
		}
		out = append(out, l)
	}
	return out
}

// fieldsNamed returns the unfolded values of the header fields called name.
func fieldsNamed(hdrs []string, name string) []string {
	var out []string
	for _, h := range hdrs {
		if i := strings.IndexByte(h, ':'); i > 0 && strings.EqualFold(h[:i], name) {
			out = append(out, strings.TrimSpace(h[i+1:]))
		}
	}
	return out
}

// rawSkipEHLO speaks SMTP by hand: EHLO, STARTTLS, and then MAIL without
// the second EHLO (allowed unless smtpd_helo_required), so the MTA sends
// no post-TLS HELO event to the milter. The message must be accepted.
func rawSkipEHLO(t *testing.T, addr string, cfg *tls.Config, from, to string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(conn)
	expect := func(tp *textproto.Conn, code int) {
		t.Helper()
		if _, msg, err := tp.ReadResponse(code); err != nil {
			t.Fatalf("want %d: %v %s", code, err, msg)
		}
	}
	cmd := func(tp *textproto.Conn, code int, format string, args ...any) {
		t.Helper()
		if err := tp.PrintfLine(format, args...); err != nil {
			t.Fatal(err)
		}
		expect(tp, code)
	}
	expect(tp, 220)
	cmd(tp, 250, "EHLO client.lab.test")
	cmd(tp, 220, "STARTTLS")
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tp = textproto.NewConn(tc)
	cmd(tp, 250, "MAIL FROM:<%s>", from)
	cmd(tp, 250, "RCPT TO:<%s>", to)
	cmd(tp, 354, "DATA")
	w := tp.DotWriter()
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: no second EHLO\r\n\r\nbody\r\n", from, to)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	expect(tp, 250)
	_ = tp.PrintfLine("QUIT")
}

// waitDelivered waits up to timeout for sink's copy of the message from
// sender and returns its header fields.
func waitDelivered(t *testing.T, sink *mtalab.Sink, sender string, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, m := range sink.Messages() {
			if m.From == sender {
				return headerBlock(m.Data)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never reached the sink", sender)
	return nil
}

// wantRefused fails unless MAIL FROM was refused with code and text.
func wantRefused(t *testing.T, r smtpResult, code int, text string) {
	t.Helper()
	if r.err == nil || r.stage != "MAIL" || r.code() != code || !strings.Contains(r.err.Error(), text) {
		t.Fatalf("got %s: %v, want MAIL refused with %d %s", r.stage, r.err, code, text)
	}
}

// wantAccepted fails unless the whole transaction was accepted.
func wantAccepted(t *testing.T, r smtpResult) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("refused at %s: %v", r.stage, r.err)
	}
}
