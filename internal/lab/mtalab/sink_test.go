package mtalab

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// TestSink drives the sink with net/smtp (no MTA needed).
func TestSink(t *testing.T) {
	pki := testpki.NewT(t)
	client, err := tls.LoadX509KeyPair(pki.Client.CertFile, pki.Client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		opts     SinkOptions
		tls      *tls.Config
		wantErr  string // substring of the net/smtp error, "" for success
		wantTLS  bool
		wantPeer string // CN of the client certificate the sink saw
		verified bool
	}{
		{name: "plain", opts: SinkOptions{}},
		{name: "starttls", opts: SinkOptions{TLS: pki.Sink}, tls: &tls.Config{ServerName: "sink.partner.test", RootCAs: pki.CA.Pool()}, wantTLS: true},
		{name: "client cert requested, given", opts: SinkOptions{TLS: pki.Sink, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pki.CA.Pool()},
			tls:     &tls.Config{ServerName: "sink.partner.test", RootCAs: pki.CA.Pool(), Certificates: []tls.Certificate{client}},
			wantTLS: true, wantPeer: "client.lab.test", verified: true},
		{name: "client cert requested, not given", opts: SinkOptions{TLS: pki.Sink, ClientAuth: tls.RequestClientCert},
			tls: &tls.Config{ServerName: "sink.partner.test", RootCAs: pki.CA.Pool()}, wantTLS: true},
		{name: "require TLS refuses cleartext", opts: SinkOptions{TLS: pki.Sink, RequireTLS: true}, wantErr: "530 5.7.0"},
		{name: "rcpt hook", opts: SinkOptions{Reply: func(stage, arg string) string {
			if stage == "RCPT" {
				return "550 5.1.1 no " + arg
			}
			return ""
		}}, wantErr: "550 5.1.1 no b@partner.test"},
		{name: "data hook", opts: SinkOptions{Reply: func(stage, arg string) string {
			if stage == "DATA" && strings.Contains(arg, "Subject: t") {
				return "451 4.3.0 later"
			}
			return ""
		}}, wantErr: "451 4.3.0 later"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := StartSink(t, tc.opts)
			err := send(s.Addr(), tc.tls)
			if tc.wantErr != "" {
				var te *textproto.Error
				if !errors.As(err, &te) || !strings.Contains(fmt.Sprintf("%d %s", te.Code, te.Msg), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if n := len(s.Messages()); n != 0 {
					t.Errorf("%d completed messages after a refusal", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := s.WaitMessages(1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			m := msgs[0]
			if m.From != "a@lab.test" || strings.Join(m.To, ",") != "b@partner.test,c@partner.test" || m.Helo != "client.lab.test" || !m.Completed {
				t.Errorf("message %+v", m)
			}
			if want := "Subject: t\r\n\r\n.dot\r\n..two\r\nend\r\n"; string(m.Data) != want {
				t.Errorf("data %q, want %q", m.Data, want)
			}
			if (m.TLS != nil) != tc.wantTLS {
				t.Fatalf("TLS %+v, want %v", m.TLS, tc.wantTLS)
			}
			if m.TLS != nil {
				if m.TLS.Version != tls.VersionTLS13 || m.TLS.VersionName != "TLS 1.3" || m.TLS.ServerName != "sink.partner.test" || m.TLS.CipherSuite == "" {
					t.Errorf("TLS info %+v", m.TLS)
				}
				var cn string
				if len(m.TLS.PeerCertificates) > 0 {
					cn = m.TLS.PeerCertificates[0].Subject.CommonName
				}
				if cn != tc.wantPeer || m.TLS.Verified != tc.verified {
					t.Errorf("peer %q verified %v, want %q %v", cn, m.TLS.Verified, tc.wantPeer, tc.verified)
				}
			}
			sess := s.Sessions()
			if len(sess) != 1 || (sess[0].TLS != nil) != tc.wantTLS || sess[0].Commands[0] != "EHLO client.lab.test" {
				t.Errorf("sessions %+v", sess)
			}
		})
	}
}

func send(addr string, cfg *tls.Config) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.lab.test"); err != nil {
		return err
	}
	if cfg != nil {
		if err := c.StartTLS(cfg); err != nil {
			return err
		}
	}
	if err := c.Mail("a@lab.test"); err != nil {
		return err
	}
	for _, r := range []string{"b@partner.test", "c@partner.test"} {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprint(w, "Subject: t\r\n\r\n.dot\r\n..two\r\nend\r\n")
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// TestSinkRaw covers what net/smtp does not send: an envelope that never
// completes, a long line, a bad command, and closing with a client still
// connected.
func TestSinkRaw(t *testing.T) {
	s := StartSink(t, SinkOptions{})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	expect := func(cmd, code string) {
		t.Helper()
		if cmd != "" {
			fmt.Fprintf(c, "%s\r\n", cmd)
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", cmd, err)
			}
			if !strings.HasPrefix(line, code) {
				t.Fatalf("after %q: %q, want %s", cmd, line, code)
			}
			if len(line) < 4 || line[3] != '-' {
				return
			}
		}
	}
	expect("", "220")
	expect("HELO raw.lab.test", "250")
	expect("STARTTLS", "502")
	expect("RCPT TO:<x@y>", "503")
	expect("MAIL FROM:bare@lab.test", "501")
	expect("MAIL FROM:<> SIZE=10", "250")
	expect("MAIL FROM:<again@lab.test>", "503")
	expect("RCPT TO:<long@partner.test>", "250")
	expect("DATA", "354")
	long := strings.Repeat("x", 10000)
	fmt.Fprintf(c, "%s\r\n.%s\r\n", long, long)
	expect(".", "250")
	expect("MAIL FROM:<half@lab.test>", "250")
	expect("RCPT TO:<never@partner.test>", "250")
	expect("BOGUS", "500")
	expect("NOOP", "250")
	expect("VRFY x", "252")

	msgs, err := s.WaitMessages(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msgs[0].From != "" || string(msgs[0].Data) != long+"\r\n"+long+"\r\n" {
		t.Errorf("long message: from %q, %d bytes", msgs[0].From, len(msgs[0].Data))
	}
	env := s.Envelopes()
	if len(env) != 2 || env[1].Completed || env[1].From != "half@lab.test" || env[1].To[0] != "never@partner.test" {
		t.Errorf("envelopes %+v", env)
	}
	if _, err := s.WaitMessages(2, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "1 of 2 messages") {
		t.Errorf("WaitMessages(2) err = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("connection still open after Close")
	}
	if len(s.Envelopes()) != 2 {
		t.Error("records lost at Close")
	}
}

// TestSinkDiscard: the benchmark's sink keeps nothing but its counts, over
// a pipelined STARTTLS session with dot-stuffed data.
func TestSinkDiscard(t *testing.T) {
	pki := testpki.NewT(t)
	var wrapped atomic.Int32
	s := StartSink(t, SinkOptions{TLS: pki.Sink, Discard: true, WrapConn: func(c net.Conn) net.Conn { wrapped.Add(1); return c }})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartTLS(&tls.Config{ServerName: "sink.partner.test", RootCAs: pki.CA.Pool()}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.Mail("a@lab.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("u@Gate.Partner.Test"); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "Subject: x\r\n\r\n"+strings.Repeat(".dot-stuffed line\r\n", 5000))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	c.Quit()
	if _, err := s.WaitCount("gate.partner.test", 2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, last := s.Count("Gate.Partner.Test"); n != 2 || last.IsZero() {
		t.Errorf("Count = %d, %v; want 2 and a time", n, last)
	}
	if n := s.TLSSessions(); n != 1 {
		t.Errorf("TLSSessions = %d, want 1", n)
	}
	if len(s.Messages()) != 0 || len(s.Envelopes()) != 0 || len(s.Sessions()) != 0 {
		t.Errorf("a discarding sink kept %d messages, %d envelopes, %d sessions", len(s.Messages()), len(s.Envelopes()), len(s.Sessions()))
	}
	if wrapped.Load() != 1 {
		t.Errorf("WrapConn called %d times, want 1", wrapped.Load())
	}
	if _, err := s.WaitCount("other.test", 1, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "0 of 1 messages for other.test") {
		t.Errorf("WaitCount(other.test) = %v", err)
	}
}

// TestSinkAddr: a sink listens where SinkOptions.Addr says, loopback IPv4
// only.
func TestSinkAddr(t *testing.T) {
	s := StartSink(t, SinkOptions{Addr: "127.0.0.2:0"})
	if !strings.HasPrefix(s.Addr(), "127.0.0.2:") || s.Nexthop() != fmt.Sprintf("smtp:[127.0.0.2]:%d", s.Port()) {
		t.Errorf("Addr %s Nexthop %s", s.Addr(), s.Nexthop())
	}
	for _, bad := range []string{"0.0.0.0:25", "192.0.2.1:25", "[::1]:25", "localhost:25"} {
		if _, err := NewSink(SinkOptions{Addr: bad}); err == nil || !strings.Contains(err.Error(), "want a loopback IPv4 address") {
			t.Errorf("Addr %q: %v", bad, err)
		}
	}
	if err := checkNameserver("127.0.0.1"); err != nil {
		t.Errorf("127.0.0.1: %v", err)
	}
	for _, bad := range []string{"10.0.0.53", "::1", "x"} {
		if err := checkNameserver(bad); err == nil {
			t.Errorf("nameserver %q accepted", bad)
		}
	}
}
