package heldmail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/mailq"
)

// TestClassifyPostfixCaptured reads the postqueue -j listing captured from
// a real Postfix 3.7 (TestCapturePostfixReasons) and reads each delay
// reason as the cause the policy behind it was set up to provoke.
func TestClassifyPostfixCaptured(t *testing.T) {
	f, err := os.Open("testdata/postqueue-tls.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	q, err := mailq.ParsePostqueueJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Cause{
		"a@plain.test":     NotOffered,   // encrypt, no STARTTLS
		"b@wrongname.test": NotVerified,  // secure match=sink.partner.test, certificate for wrong.partner.test
		"c@untrusted.test": NotVerified,  // verify, chain to a CA not trusted
		"d@handshake.test": Handshake,    // encrypt protocols=<=TLSv1.1, the server speaks TLS 1.2 and 1.3
		"e@lookup.test":    PolicyLookup, // the policy socketmap does not answer
	}
	n := 0
	for _, m := range q {
		for _, r := range m.Recipients {
			n++
			if got := Classify(r.Reason); got != want[r.Address] {
				t.Errorf("%s: %q is %v, want %v", r.Address, r.Reason, got, want[r.Address])
			}
		}
	}
	if n != len(want) {
		t.Errorf("%d recipients in the capture, want %d", n, len(want))
	}
}

// TestClassifySendmailCaptured reads the mailq listings captured from a
// real Sendmail 8.17 (TestCaptureSendmailReasons), one per TLS_Rcpt
// answer, and reads each status as the cause the answer provoked.
func TestClassifySendmailCaptured(t *testing.T) {
	for file, want := range map[string]Cause{
		"plain":     NotOffered,   // TEMP+ENCR:128, no STARTTLS: "encryption too weak 0 less than 128"
		"wrongname": NameMismatch, // TEMP+VERIFY+CN:sink.partner.test, certificate for wrong.partner.test
		"untrusted": NotVerified,  // TEMP+VERIFY, chain to a CA not trusted: "authentication failed"
		"lookup":    PolicyLookup, // the access map answers TEMP
	} {
		f, err := os.Open("testdata/sendmail-mailq-" + file + ".txt")
		if err != nil {
			t.Fatal(err)
		}
		q, err := mailq.ParseMailq(f, time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC))
		f.Close()
		if err != nil || len(q) != 1 || len(q[0].Recipients) != 1 {
			t.Fatalf("%s: %+v %v", file, q, err)
		}
		if r := q[0].Recipients[0]; Classify(r.Reason) != want {
			t.Errorf("%s: %q is %v, want %v", file, r.Reason, Classify(r.Reason), want)
		}
	}
}

// TestClassify reads the reasons of Postfix's and Sendmail's sources (and
// those a real Sendmail 8.17 wrote in the held-mail test, see
// internal/lab/e2e) and leaves other reasons alone.
func TestClassify(t *testing.T) {
	for reason, want := range map[string]Cause{
		// Postfix 3.7, smtp_proto.c and smtp_tls_policy.c.
		"delivery temporarily suspended: TLS is required, but was not offered by host mx[192.0.2.1]":                                                                  NotOffered,
		"TLS is required, but host mx.b.example[192.0.2.1] refused to start TLS: host mx.b.example[192.0.2.1] said: 454 4.7.0 TLS not available due to local problem": NotOffered,
		"TLS is required, but our TLS engine is unavailable":                                                                                                          LocalTLS,
		"delivery temporarily suspended: Server certificate not verified":                                                                                             NotVerified,
		"Server certificate not trusted":                                   NotVerified,
		"TLSA lookup error for mx.b.example:25":                            PolicyLookup,
		"delivery temporarily suspended: client TLS configuration problem": PolicyLookup,
		// Sendmail 8.17 mailq, from cf/m4/proto.m4's TLS_connection and
		// tls_rcpt/tls_server (those a real Sendmail wrote are in
		// testdata/sendmail-mailq-*.txt).
		"encryption too weak 128 less than 256":                        TooWeak,
		"not authenticated":                                            NotVerified,
		"other side does not support STARTTLS":                         NotOffered,
		"Cert Subject /C=DE/CN=x does not match /C=DE/CN=y":            NameMismatch,
		"Cert Issuer /C=DE/CN=Other CA does not match /CN=Lab Test CA": NotVerified,
		"TLS handshake failed.":                                        Handshake,
		"mx.b.example not listed in SANs":                              NameMismatch,
		"Temporary system failure. Please try again later.":            PolicyLookup,
		"access map: lookup (TLS_Srv:[127.0.0.1]): deferred":           PolicyLookup,
		// Not TLS.
		"": NotTLS,
		"host 127.0.0.1[127.0.0.1] said: 451 4.3.0 try again later (in reply to RCPT TO command)":    NotTLS,
		"host mx[192.0.2.1] said: 530 5.7.0 authentication required (in reply to MAIL FROM command)": NotTLS,
		"connect to mx.b.example[192.0.2.1]:25: Connection refused":                                  NotTLS,
		"Deferred: 451 4.3.0 try again later":                                                        NotTLS,
		"Deferred: Connection refused by [127.0.0.1]":                                                NotTLS,
	} {
		if got := Classify(reason); got != want {
			t.Errorf("Classify(%q) = %v, want %v", reason, got, want)
		}
	}
}

// FuzzClassify: any reason is read without a panic, and one that is not
// about TLS stays so when a server's reply is quoted in it.
func FuzzClassify(f *testing.F) {
	f.Add("Server certificate not verified")
	f.Add("Deferred: 403 4.7.0 CN a does not match b")
	f.Add("host x said: 454 4.7.0 encryption too weak")
	f.Fuzz(func(t *testing.T, s string) {
		c := Classify(s)
		_ = c.String()
	})
}

var t0 = time.Date(2026, 12, 8, 9, 0, 0, 0, time.UTC)

func msg(id, queue string, arrival time.Time, rcpts ...string) mailq.Message {
	m := mailq.Message{ID: id, Queue: queue, Arrival: arrival}
	for i := 0; i+1 < len(rcpts); i += 2 {
		m.Recipients = append(m.Recipients, mailq.Recipient{Address: rcpts[i], Reason: rcpts[i+1]})
	}
	return m
}

// byDomain attributes b.example to "company-b" and c.example to
// "company-c", and records what it was asked.
func byDomain(asked *[]string) Attributor {
	return func(_ context.Context, addrs []string) ([]string, error) {
		*asked = append(*asked, addrs...)
		out := make([]string, len(addrs))
		for i, a := range addrs {
			switch {
			case strings.HasSuffix(a, "@b.example"):
				out[i] = "company-b"
			case strings.HasSuffix(a, "@c.example"):
				out[i] = "company-c"
			}
		}
		return out, nil
	}
}

const notVerified = "Server certificate not verified"

func TestCount(t *testing.T) {
	q := []mailq.Message{
		msg("A", "deferred", t0.Add(-2*time.Hour), "x@b.example", notVerified, "y@b.example", notVerified, "z@other.example", notVerified),
		msg("B", "deferred", t0.Add(-time.Hour), "x@b.example", "delivery temporarily suspended: "+notVerified),
		msg("C", "active", t0.Add(-30*time.Minute), "x@c.example", "TLS is required, but was not offered by host mx.c.example[192.0.2.3]",
			"y@c.example", "host mx.c.example[192.0.2.3] said: 451 try later"),
		msg("D", "deferred", t0.Add(-3*time.Hour), "x@c.example", "connect to mx.c.example[192.0.2.3]:25: Connection refused"),
		msg("E", "hold", t0.Add(-5*time.Hour), "x@b.example", notVerified),
		msg("F", "incoming", time.Time{}, "x@b.example", ""),
	}
	var asked []string
	held, err := Count(context.Background(), q, byDomain(&asked))
	if err != nil {
		t.Fatal(err)
	}
	// Only recipients with a TLS reason are asked about, none on hold.
	if strings.Join(asked, " ") != "x@b.example y@b.example z@other.example x@b.example x@c.example" {
		t.Errorf("asked about %q", asked)
	}
	want := []Held{
		{Endpoint: "company-b", Messages: 2, Recipients: 3, Oldest: t0.Add(-2 * time.Hour), Reason: notVerified, Cause: NotVerified},
		{Endpoint: "company-c", Messages: 1, Recipients: 1, Oldest: t0.Add(-30 * time.Minute), Reason: "TLS is required, but was not offered by host mx.c.example[192.0.2.3]", Cause: NotOffered},
	}
	if len(held) != len(want) {
		t.Fatalf("held %+v", held)
	}
	for i := range want {
		if held[i] != want[i] {
			t.Errorf("held[%d] = %+v\nwant     %+v", i, held[i], want[i])
		}
	}
	if age := held[0].Age(t0); age != 2*time.Hour {
		t.Errorf("age %v", age)
	}
	// Nothing about TLS: the attributor is not asked.
	asked = nil
	if held, err := Count(context.Background(), q[3:4], byDomain(&asked)); err != nil || held != nil || asked != nil {
		t.Errorf("no TLS reason: %+v %v, asked %q", held, err, asked)
	}
	bad := func(context.Context, []string) ([]string, error) { return nil, errors.New("postmap failed") }
	if _, err := Count(context.Background(), q, bad); err == nil || err.Error() != "postmap failed" {
		t.Errorf("attributor error: %v", err)
	}
}

// TestWatcherRounds: one line when an endpoint starts holding mail, none
// while it goes on, one when it stops; a queue that cannot be read is
// logged once and keeps the state.
func TestWatcherRounds(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	var queue []mailq.Message
	var readErr error
	var rounds []int
	var asked []string
	w := &Watcher{
		Read:      func(context.Context, time.Time) ([]mailq.Message, error) { return queue, readErr },
		Attribute: byDomain(&asked),
		Log:       log,
		OnRound: func(held []Held, ok bool, _ time.Time) {
			if !ok {
				rounds = append(rounds, -1)
				return
			}
			n := 0
			for _, h := range held {
				n += h.Messages
			}
			rounds = append(rounds, n)
		},
	}
	step := func(at time.Duration, wantLines ...string) {
		t.Helper()
		buf.Reset()
		w.Round(context.Background(), t0.Add(at))
		got := strings.TrimSpace(buf.String())
		if want := strings.Join(wantLines, "\n"); got != want {
			t.Errorf("at +%v:\n got %s\nwant %s", at, got, want)
		}
	}
	step(0)
	queue = []mailq.Message{msg("A", "deferred", t0.Add(-time.Hour), "x@b.example", notVerified)}
	step(time.Minute, `level=WARN msg=held-mail endpoint=company-b state=holding messages=1 recipients=1 oldest=2026-12-08T08:00:00Z age=1h1m0s cause=not-verified reason="Server certificate not verified"`)
	queue = append(queue, msg("B", "deferred", t0, "x@b.example", notVerified))
	step(2 * time.Minute)
	readErr = errors.New("mailq: postqueue -j: no answer within 30s")
	step(3*time.Minute, `level=WARN msg=held-mail-queue result=failed error="mailq: postqueue -j: no answer within 30s"`)
	step(4 * time.Minute)
	readErr, queue = nil, nil
	step(5*time.Minute, `level=INFO msg=held-mail-queue result=ok messages=0`,
		`level=INFO msg=held-mail endpoint=company-b state=released held_for=4m0s`)
	step(6 * time.Minute)
	if got := fmt.Sprint(rounds); got != "[0 1 2 -1 -1 0 0]" {
		t.Errorf("messages held per round (-1: not read): %s", got)
	}
}
