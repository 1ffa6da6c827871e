package maillog

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
	"time"
)

func readAll(t testing.TB, in string, opts Options) ([]Line, []Event, *Reader) {
	t.Helper()
	r, err := NewReader(strings.NewReader(in), opts)
	if err != nil {
		t.Fatal(err)
	}
	var lines []Line
	var evs []Event
	var ev Event
	for r.Next() {
		l := *r.Line()
		l.Host, l.Program, l.Msg = bytes.Clone(l.Host), bytes.Clone(l.Program), bytes.Clone(l.Msg)
		lines = append(lines, l)
		Parse(r.Line(), &ev)
		evs = append(evs, ev)
	}
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	return lines, evs, r
}

func TestTimestamps(t *testing.T) {
	ref := time.Date(2027, 1, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		line string
		want time.Time
	}{
		{"Dec  7 19:41:17 mx postfix/smtpd[1]: x", time.Date(2026, 12, 7, 19, 41, 17, 0, time.UTC)},
		{"Dec 07 19:41:17 mx postfix/smtpd[1]: x", time.Date(2026, 12, 7, 19, 41, 17, 0, time.UTC)},
		{"Jan  2 11:00:00 mx postfix/smtpd[1]: x", time.Date(2027, 1, 2, 11, 0, 0, 0, time.UTC)},
		// A day of clock skew after the reference is still this year.
		{"Jan  3 01:00:00 mx postfix/smtpd[1]: x", time.Date(2027, 1, 3, 1, 0, 0, 0, time.UTC)},
		{"Jan  5 01:00:00 mx postfix/smtpd[1]: x", time.Date(2026, 1, 5, 1, 0, 0, 0, time.UTC)},
		{"2026-12-07T19:41:17+0000 mx postfix/smtpd[1]: x", time.Date(2026, 12, 7, 19, 41, 17, 0, time.UTC)},
		{"2026-12-07T20:41:17+01:00 mx postfix/smtpd[1]: x", time.Date(2026, 12, 7, 19, 41, 17, 0, time.UTC)},
		{"2026-12-07T19:41:17.250000Z mx postfix/smtpd[1]: x", time.Date(2026, 12, 7, 19, 41, 17, 250000000, time.UTC)},
		{"<22>Dec  7 19:41:17 mx postfix/smtpd[1]: x", time.Date(2026, 12, 7, 19, 41, 17, 0, time.UTC)},
	} {
		lines, _, _ := readAll(t, tc.line+"\n", Options{Ref: ref, Location: time.UTC})
		if len(lines) != 1 || !lines[0].Time.Equal(tc.want) {
			t.Errorf("%q: %v, want %v", tc.line, lines, tc.want)
			continue
		}
		if string(lines[0].Program) != "postfix/smtpd" || lines[0].PID != 1 || string(lines[0].Msg) != "x" || string(lines[0].Host) != "mx" {
			t.Errorf("%q: header %+v", tc.line, lines[0])
		}
	}
}

func TestSkipped(t *testing.T) {
	in := "-- Journal begins at Mon 2026-12-07. --\n" +
		"\n" +
		"garbage\x00\xff\n" +
		"Dec  7 19:41:17 mx postfix/smtpd[1]\n" +
		"Dec 32 19:41:17 mx postfix/smtpd[1]: x\n" +
		strings.Repeat("x", 100) + "\n" +
		"Dec  7 19:41:17 mx postfix/smtpd[1]: ok\n"
	lines, _, r := readAll(t, in, Options{MaxLine: 64})
	st := r.Stats()
	if len(lines) != 1 || st.Lines != 7 || st.Meta != 2 || st.Malformed != 3 || st.TooLong != 1 {
		t.Errorf("lines %d stats %+v", len(lines), st)
	}
}

func TestGzip(t *testing.T) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("Dec  7 19:41:17 mx postfix/smtpd[1]: connect from a[192.0.2.1]\n"))
	zw.Close()
	r, err := NewReader(&b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ev Event
	if !r.Next() || !Parse(r.Line(), &ev) || ev.Kind != Connect || string(ev.Peer.Addr) != "192.0.2.1" {
		t.Fatalf("gzip line: %+v", ev)
	}
}

func TestEvents(t *testing.T) {
	for _, tc := range []struct {
		msg   string
		prog  string
		check func(e *Event) bool
	}{
		{"Trusted TLS connection established from mx.b.example[192.0.2.10]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519", "postfix/smtpd",
			func(e *Event) bool {
				return e.Kind == TLS && e.Dir == Inbound && e.Trust == Trusted && string(e.Peer.Name) == "mx.b.example" && string(e.Version) == "TLSv1.3" && e.Bits == 256
			}},
		{"Verified TLS connection reused to mx.b.example[192.0.2.10]:25: TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)", "postfix-out/smtp",
			func(e *Event) bool {
				return e.Kind == TLS && e.Dir == Outbound && e.Reused && e.Peer.Port == 25 && e.Bits == 128 && string(e.Cipher) == "ECDHE-RSA-AES128-GCM-SHA256"
			}},
		{"Anonymous TLS connection established to mx.b.example[192.0.2.10]:25 to sni.example: TLSv1.3 with cipher X (256/256 bits)", "postfix/tlsproxy",
			func(e *Event) bool { return e.Kind == TLS && e.Proxy && e.Trust == Anonymous && e.Peer.Port == 25 }},
		{"disconnect from a[192.0.2.1] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7", "postfix/smtpd",
			func(e *Event) bool { return e.Kind == Disconnect && e.StartTLSCount == 1 }},
		{"disconnect from a[192.0.2.1] ehlo=1 mail=1 quit=1 commands=3", "postfix/smtpd",
			func(e *Event) bool { return e.Kind == Disconnect && e.StartTLSCount == 0 }},
		{"disconnect from a[192.0.2.1]", "postfix/smtpd",
			func(e *Event) bool { return e.Kind == Disconnect && e.StartTLSCount == -1 }},
		{"4Xb2kq1Z3Tz9v: client=a.example[2001:db8::1], sasl_method=PLAIN", "postfix/submission/smtpd",
			func(e *Event) bool {
				return e.Kind == Client && string(e.QID) == "4Xb2kq1Z3Tz9v" && string(e.Peer.Addr) == "2001:db8::1"
			}},
		{"ABCDEF1234: to=<u@b.example>, orig_to=<x@y>, relay=mx.b.example[192.0.2.10]:25, conn_use=3, delay=1, delays=0/0/0/0, dsn=4.7.5, status=deferred (Server certificate not verified, really)", "postfix/smtp",
			func(e *Event) bool {
				return e.Kind == Delivery && e.ConnUse == 3 && string(e.Status) == "deferred" && string(e.Reason) == "Server certificate not verified, really" && string(e.Addr) == "u@b.example"
			}},
		{"ABCDEF1234: to=<u@b.example>, relay=none, delay=1, dsn=4.4.1, status=deferred (connect to x: refused)", "postfix/smtp",
			func(e *Event) bool { return e.Kind == Delivery }}, // not a session: no network relay (Parse returns false)
		{"STARTTLS=client, relay=mx.b.example., version=TLSv1.2, verify=FAIL, cipher=ECDHE-RSA-AES256-GCM-SHA384, bits=256/256", "sm-mta",
			func(e *Event) bool {
				return e.Kind == StartTLS && e.Dir == Outbound && e.Trust == Untrusted && e.Bits == 256
			}},
		{"6B7JfVnp031297: from=<a@t.test>, size=95, class=0, nrcpts=1, msgid=<x@y>, proto=ESMTPS, daemon=MTA, relay=mx.t.test [127.0.0.2] (may be forged)", "sendmail",
			func(e *Event) bool {
				return e.Kind == From && string(e.Proto) == "ESMTPS" && string(e.Peer.Addr) == "127.0.0.2" && string(e.Peer.Name) == "mx.t.test"
			}},
		{"6B7JfVnp031297: to=<u@x>,<v@x>, delay=00:00:00, xdelay=00:00:00, mailer=esmtp, pri=1, relay=[127.0.0.1] [127.0.0.1], dsn=2.0.0, stat=Sent (Ok: queued as 1.1)", "sendmail",
			func(e *Event) bool {
				return e.Kind == Delivery && string(e.Status) == "Sent" && string(e.Peer.Name) == "[127.0.0.1]" && string(e.Peer.Addr) == "127.0.0.1"
			}},
		{`4BC3D1E2F: tlsgate: client=mx.b.example[192.0.2.10] sender=<a@b.example> endpoint=b tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK result=fail reason="endpoint=b check=cn want=x got=y"`, "tlsgate",
			func(e *Event) bool {
				return e.Kind == Decision && string(e.Result) == "fail" && string(e.Endpoint) == "b" && e.Bits == 256 && string(e.Addr) == "a@b.example"
			}},
		{`NOQUEUE: tlsgate: client="we ird[192.0.2.10]" sender=<> endpoint=none tls=none result=none`, "tlsgate",
			func(e *Event) bool {
				return e.Kind == Decision && string(e.Peer.Addr) == "192.0.2.10" && e.Version == nil
			}},
	} {
		l := Line{Program: []byte(tc.prog), Msg: []byte(tc.msg)}
		var e Event
		Parse(&l, &e)
		if !tc.check(&e) {
			t.Errorf("%s: %q: %+v", tc.prog, tc.msg, e)
		}
	}
}

// FuzzParse feeds arbitrary input through the reader and the event
// parser: nothing may panic, every line must be accounted for, and events
// must be internally consistent.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"Dec  7 19:41:17 mx postfix/smtpd[1]: Trusted TLS connection established from a[1.2.3.4]: TLSv1.3 with cipher X (256/256 bits)\n",
		"2026-12-07T19:41:17+0000 mx postfix/smtp[2]: ABCDE: to=<u@d>, relay=h[1.2.3.4]:25, conn_use=2, status=sent (ok)\n",
		"Dec  7 19:41:31 sm sendmail[3]: STARTTLS=server, relay=h [1.2.3.4], version=TLSv1.3, verify=OK, cipher=C, bits=128/128\n",
		"Dec  7 19:41:31 sm sendmail[3]: ABCDE12345: from=<a@b>, proto=ESMTPS, relay=h [1.2.3.4]\n",
		"Dec  7 19:41:31 mx tlsgate[4]: ABCDE: tlsgate: client=\"x\\\"y\"[1.2.3.4] sender=<a@b> result=pass\n",
		"\x1f\x8b\x08garbage",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data), Options{MaxLine: 512})
		if err != nil {
			return
		}
		var ev Event
		n := int64(0)
		for r.Next() {
			n++
			l := r.Line()
			if Parse(l, &ev) {
				if ev.Kind == None || ev.Bits < 0 || ev.Peer.Port < 0 {
					t.Fatalf("inconsistent event %+v from %q", ev, l.Msg)
				}
			}
		}
		st := r.Stats()
		if n > st.Lines || n+st.Malformed+st.TooLong+st.Meta > st.Lines+1 {
			t.Fatalf("lines %d returned, stats %+v", n, st)
		}
	})
}
