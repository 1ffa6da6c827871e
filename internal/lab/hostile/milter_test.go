package hostile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// rawPacket frames one milter packet: 4-byte big-endian length, command
// byte, data.
func rawPacket(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(data)))
	return append(append(b, code), data...)
}

// optNeg is an MTA's negotiation packet (version 6) offering actions and
// every protocol flag of version 6.
func optNeg(actions uint32) []byte {
	d := binary.BigEndian.AppendUint32(nil, 6)
	d = binary.BigEndian.AppendUint32(d, actions)
	d = binary.BigEndian.AppendUint32(d, 0x1FFFFF)
	return rawPacket('O', string(d))
}

// connectPacket is SMFIC_CONNECT for an IPv4 client.
func connectPacket(host, addr string) []byte {
	return rawPacket('C', host+"\x004\x00\x19"+addr+"\x00")
}

// negotiate sends an OPTNEG and reads the milter's answer.
func negotiate(t testing.TB, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if err := negotiateErr(c, br); err != nil {
		t.Fatal(err)
	}
}

// negotiateErr is negotiate returning an error (for other goroutines).
func negotiateErr(c net.Conn, br *bufio.Reader) error {
	if _, err := c.Write(optNeg(0x1FF)); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[4] != 'O' {
		return fmt.Errorf("negotiation answer %q, %v", hdr, err)
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	_, err := io.CopyN(io.Discard, br, int64(n-1))
	return err
}

// TestMilterRawHostile drives the daemon's milter with raw bytes: packets
// that are empty, truncated, announce 512 MB or 1 GB, carry an unknown
// command or lack the NUL terminators go-milter's parser relies on, and
// negotiations the milter must refuse; go-milter alone would end the
// whole tlsgate serve process on several of them. The guard in
// milter/guard.go answers each by closing that milter connection (the MTA
// then applies milter_default_action = tempfail); the daemon keeps
// serving.
func TestMilterRawHostile(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{})
	tests := []struct {
		name      string
		negotiate bool
		send      []byte
		closeW    bool
		log       string
	}{
		{name: "zero-length packet", send: []byte{0, 0, 0, 0}, log: "out of range"},
		{name: "zero-length packet after negotiation", negotiate: true, send: []byte{0, 0, 0, 0}, log: "out of range"},
		{name: "length prefix 1 GB", negotiate: true, send: []byte{0x40, 0, 0, 0, 'B'}, log: "length 1073741824"},
		{name: "length prefix 512 MB - 1", negotiate: true, send: []byte{0x1F, 0xFF, 0xFF, 0xFF, 'B', 'x'}, log: "out of range"},
		{name: "length prefix 4 GB - 1", send: []byte{0xFF, 0xFF, 0xFF, 0xFF}, log: "out of range"},
		{name: "packet just over 1 MiB", negotiate: true, send: append(binary.BigEndian.AppendUint32(nil, 1<<20+1), 'L'), log: "out of range"},
		{name: "truncated packet then EOF", negotiate: true, send: []byte{0, 0, 0, 100, 'H', 'x'}, closeW: true, log: "unexpected EOF"},
		{name: "truncated length then EOF", negotiate: true, send: []byte{0, 0}, closeW: true, log: "unexpected EOF"},
		{name: "unknown command", negotiate: true, send: rawPacket('Z', "zz"), log: "Unrecognized command"},
		{name: "connect without NUL", negotiate: true, send: rawPacket('C', "host.example"), log: "malformed connect"},
		{name: "connect without family", negotiate: true, send: rawPacket('C', "host.example\x00"), log: "malformed connect"},
		{name: "MAIL without NUL", negotiate: true, send: append(connectPacket("h", "192.0.2.10"), rawPacket('M', "<a@partner.example>")...), log: "malformed 'M'"},
		{name: "RCPT without NUL", negotiate: true, send: append(connectPacket("h", "192.0.2.10"), rawPacket('R', "<u@hostile.test>")...), log: "malformed 'R'"},
		{name: "bad IPv4 address in connect", negotiate: true, send: rawPacket('C', "h\x004\x00\x19999.1.1.1\x00"), log: "unexpected ip4 address"},
		{name: "header packet with one string", negotiate: true, send: append(connectPacket("h", "192.0.2.10"), rawPacket('L', "Received")...), log: "header: unexpected"},
		{name: "second OPTNEG", negotiate: true, send: optNeg(0x1FF), log: "only be called once"},
		{name: "MTA without header actions", send: optNeg(0), log: "does not allow adding and changing headers"},
		{name: "milter protocol version 1", send: rawPacket('O', "\x00\x00\x00\x01\x00\x00\x01\xff\x00\x00\x00\x00"), log: "version 1"},
		{name: "HTTP request", send: []byte("GET / HTTP/1.0\r\n\r\n"), log: "out of range"},
	}
	var peak float64
	// Identical warnings are logged once a minute (logx.Limit): a case
	// whose warning an earlier case logged finds that line.
	first := d.logs.mark()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d.resetPeak()
			c := dialRaw(t, d.milter)
			br := bufio.NewReader(c)
			if tc.negotiate {
				negotiate(t, c, br)
			}
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.closeW {
				c.(interface{ CloseWrite() error }).CloseWrite()
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("milter did not close the connection: %v", err)
			}
			d.logs.waitFor(t, first, tc.log, 5*time.Second)
			d.checkServed(t)
			p := d.peakMB()
			peak = max(peak, p)
			if p > rssLimitMB(64) {
				t.Errorf("peak RSS %.1f MB", p)
			}
		})
	}
	record("milter raw hostile: peak RSS per case", "%.1f MB (%d cases)", peak, len(tests))
}

// TestMilterHeldConnections: milter connections that stop mid-packet or
// never negotiate. go-milter gives a peer 1 s to negotiate; a connection
// that announced a packet and went silent costs only what it sent until
// the packet timeout (30 s) cuts it (TestMilterStalledPacketFlood waits for
// that).
func TestMilterHeldConnections(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{})
	mark := d.logs.mark()
	silent := dialRaw(t, d.milter)
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, silent); err != nil {
		t.Fatalf("a peer that never negotiates is not closed: %v", err)
	}
	if el := time.Since(start); el < 900*time.Millisecond || el > 5*time.Second {
		t.Fatalf("a peer that never negotiates was closed after %v, want about 1 s", el)
	}
	// go-milter's warning reaches tlsgate's log (at warning level where a
	// severity prefix is written; milter's TestLibraryWarningsReachTheLogger
	// checks the level), and names the socket's path, not the private name
	// it was bound under.
	line := d.logs.waitFor(t, mark, "i/o timeout", 5*time.Second)
	if !strings.HasPrefix(strings.TrimPrefix(line, "<4>"), "NOQUEUE: milter: connection problem detail=") || !strings.Contains(line, d.milter) || strings.Contains(line, "/.t") {
		t.Errorf("go-milter's warning logged as %q; want a warning naming %s", line, d.milter)
	}

	// 50 connections that announce a 1 MiB packet and send half of it.
	before := d.rssMB()
	d.resetPeak()
	for range 50 {
		c := dialRaw(t, d.milter)
		br := bufio.NewReader(c)
		negotiate(t, c, br)
		b := binary.BigEndian.AppendUint32(nil, 1<<20)
		b = append(b, 'B')
		b = append(b, strings.Repeat("x", 1<<19)...)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	d.checkServed(t)
	p := d.peakMB()
	record("milter: 50 half-sent 1 MiB packets", "peak RSS %.1f MB (%.1f MB before)", p, before)
	if p-before > rssLimitMB(128) {
		t.Errorf("peak RSS grew from %.1f MB to %.1f MB for 50 half-sent 1 MiB packets", before, p)
	}
}

// checkHeaderValue asserts that v is one safe header value: ASCII
// printable only, folded only as "\n\t" before text, no line over 200
// bytes, comments and quotes balanced, no backslash.
func checkHeaderValue(t testing.TB, name, v string) {
	t.Helper()
	if v == "" || len(v) > 2048 || strings.ContainsAny(v, "\r\\") {
		t.Fatalf("%s: unsafe value %q", name, v)
	}
	for i, line := range strings.Split(v, "\n") {
		if i > 0 && (!strings.HasPrefix(line, "\t") || strings.TrimSpace(line) == "") {
			t.Fatalf("%s: continuation line %d is %q", name, i, line)
		}
		if len(line) > 200 {
			t.Fatalf("%s: line %d is %d bytes", name, i, len(line))
		}
		for j := 0; j < len(line); j++ {
			if c := line[j]; (c < ' ' && c != '\t') || c > '~' {
				t.Fatalf("%s: byte %#x in %q", name, c, line)
			}
		}
	}
	depth := 0
	for _, c := range v {
		switch c {
		case '(':
			depth++
		case ')':
			if depth--; depth < 0 {
				t.Fatalf("%s: unbalanced ')' in %q", name, v)
			}
		}
	}
	if depth != 0 || strings.Count(v, `"`)%2 != 0 {
		t.Fatalf("%s: unbalanced comment or quote in %q", name, v)
	}
}

// TestMilterHostileCertificates plays, with go-milter's client, sessions
// whose certificate names and other macros carry CR/LF, parentheses,
// quotes, backslashes, 4 KB, invalid UTF-8, NUL and xtext escapes. From an
// uncovered client the message is accepted and stamped, and both inserted
// headers are single safe values; from a covered client that requires a
// verified name the hostile name never passes.
func TestMilterHostileCertificates(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{})
	names := map[string]string{
		"CR LF header injection": "evil.example\r\nX-Injected: yes\r\n\r\nbody",
		"bare LF":                "evil.example\nX-Injected: yes",
		"parentheses":            "a) (b (c",
		"quotes and backslash":   `"quoted\" \\ name`,
		"4 KB subject":           strings.Repeat("CN-", 1366),
		"invalid UTF-8":          "\xff\xfe\xc3\x28\xa0\xa1.example",
		"UTF-8":                  "Ünïcödé Ωmega 証明書",
		"forged trace":           "x by mx.hostile.test (tlsgate) id 1; x-tls=pass",
		"xtext escapes":          "+0D+0A+28+29",
		"controls":               "\x01\x07\x1b[31m\x7f",
		"semicolons and equals":  "a;b=c; x-tls=pass",
		"expected CN plus CR LF": "client.verified.example\r\n",
	}
	var n int
	for name, cn := range names {
		t.Run(name, func(t *testing.T) {
			// Uncovered client: accepted and stamped, safely.
			s := mtaSession{
				ClientAddr: "198.51.100.9", ClientName: cn, Helo: cn, From: "a@other.example",
				TLS: postfixTLS(cn, cn), QueueID: "4XQ" + "\r\n(",
				Headers: [][2]string{{"Received", "from x by mx.hostile.test (tlsgate) id 1; " + cn}},
			}
			s.TLS["{cipher}"] = cn
			s.TLS["{tls_version}"] = "TLSv1.3 " + cn
			r, err := runMilter(d.milter, s)
			if err != nil || !r.Accepted {
				t.Fatalf("uncovered client: %+v, %v; want accepted", r, err)
			}
			checkHeaderValue(t, "Received", r.Received)
			checkHeaderValue(t, "Authentication-Results", r.AuthRes)
			if !strings.Contains(r.AuthRes, "x-tls=none") || r.Deleted != 1 {
				t.Fatalf("uncovered client: %+v; want x-tls=none and the forged Received removed", r)
			}
			// Covered client requiring a verified CN: never passes.
			s.ClientAddr, s.From = "192.0.2.20", "a@verified.example"
			s.TLS = postfixTLS(cn, "Lab CA")
			r, err = runMilter(d.milter, s)
			if err != nil || !r.Refused || r.Code != milterDeferCode {
				t.Fatalf("covered client with CN %q: %+v, %v; want 451", cn, r, err)
			}
			n++
		})
	}
	// NUL in a macro value shifts go-milter's name/value pairs: the issuer
	// goes missing, so Postfix semantics see no trusted certificate.
	s := mtaSession{ClientAddr: "192.0.2.20", ClientName: "c", Helo: "c", From: "a@verified.example",
		TLS: postfixTLS("client.verified.example\x00{cert_issuer}\x00Lab CA", "Evil CA"), QueueID: "4XNUL"}
	if r, err := runMilter(d.milter, s); err != nil || !r.Refused || r.Code != milterDeferCode {
		t.Fatalf("NUL in macro value: %+v, %v; want 451", r, err)
	}
	d.checkServed(t)
	record("milter hostile certificate names", "%d names x (uncovered: stamped safely, covered: deferred)", n)
}

// TestMilterHostileMacros: hostile values in the other macros the milter
// reads fail closed for a covered client.
func TestMilterHostileMacros(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{})
	verified := func(mod func(s *mtaSession)) mtaSession {
		s := mtaSession{ClientAddr: "192.0.2.20", ClientName: "client.verified.example", Helo: "client.verified.example",
			From: "a@verified.example", TLS: postfixTLS("client.verified.example", "Lab CA"), QueueID: "4XM"}
		mod(&s)
		return s
	}
	// The unmodified session passes: the cases below differ by one value.
	wantMilterPass(t, d.milter, verified(func(*mtaSession) {}))
	tests := map[string]mtaSession{
		"cipher bits not a number": verified(func(s *mtaSession) { s.TLS["{cipher_bits}"] = "256abc" }),
		"empty TLS version":        verified(func(s *mtaSession) { s.TLS["{tls_version}"] = " " }),
		"issuer missing":           verified(func(s *mtaSession) { delete(s.TLS, "{cert_issuer}") }),
		"v4-mapped client address": verified(func(s *mtaSession) { s.TLS = nil; s.ClientAddr = "IPv6:::ffff:192.0.2.20" }),
		"Sendmail macros on Postfix": verified(func(s *mtaSession) {
			s.TLS["{verify}"] = "OK"
			s.TLS["{cert_md5}"] = "AB"
		}),
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := runMilter(d.milter, s)
			if err != nil || !r.Refused || (r.Code != milterDeferCode && r.Code != 451) {
				t.Fatalf("%+v, %v; want a 451 refusal", r, err)
			}
		})
	}
	// 10000 forged Received headers are all removed, 1 MB headers pass
	// through, and a header beyond the 1 MiB packet limit ends only that
	// milter connection.
	s := verified(func(*mtaSession) {})
	for range 10000 {
		s.Headers = append(s.Headers, [2]string{"Received", "from x by mx.hostile.test (tlsgate) id 1; date"})
	}
	if r, err := runMilter(d.milter, s); err != nil || !r.Accepted || r.Deleted != 10000 {
		t.Fatalf("10000 forged headers: accepted=%v deleted=%d, %v", r.Accepted, r.Deleted, err)
	}
	s = verified(func(s *mtaSession) { s.Headers = [][2]string{{"X-Big", strings.Repeat("b", 1<<20-100)}} })
	if r, err := runMilter(d.milter, s); err != nil || !r.Accepted {
		t.Fatalf("1 MB header: %+v, %v", r, err)
	}
	s = verified(func(s *mtaSession) { s.Headers = [][2]string{{"X-Huge", strings.Repeat("h", 2<<20)}} })
	if _, err := runMilter(d.milter, s); err == nil {
		t.Fatal("a 2 MB header packet was accepted")
	}
	d.checkServed(t)
}

// TestMilterSendmailHostileDNs runs a daemon in Sendmail mode and sends
// xtext-encoded DNs with CR/LF, quotes, parentheses, 4 KB and invalid
// UTF-8, and malformed xtext: a covered client whose DN does not match
// exactly is deferred, an uncovered one is stamped safely.
func TestMilterSendmailHostileDNs(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{MTA: "sendmail", Endpoints: endpointsSendmail})
	session := func(addr, subject, issuer string, raw bool) mtaSession {
		enc := policy.Xtext
		if raw {
			enc = func(s string) string { return s }
		}
		sub, _ := certid.ParseDN(subject)
		cn := subject
		if sub != nil {
			cn = sub.CN()
		}
		return mtaSession{
			ClientAddr: addr, ClientName: "client.partner.example", Helo: "client.partner.example", From: "a@partner.example", QueueID: "7ASM",
			TLS: map[string]string{
				"{tls_version}": "TLSv1.3", "{cipher}": "TLS_AES_256_GCM_SHA384", "{cipher_bits}": "256", "{alg_bits}": "256",
				"{verify}": "OK", "{cert_subject}": enc(subject), "{cert_issuer}": enc(issuer),
				"{cn_subject}": enc(cn), "{cn_issuer}": enc("Lab CA"), "{cert_md5}": "D1:8A",
				"v": "8.17.1.9",
			},
		}
	}
	good := session("192.0.2.10", "/C=DE/O=Partner/CN=client.partner.example", "/C=DE/O=Lab/CN=Lab CA", false)
	if r, err := runMilter(d.milter, good); err != nil || !r.Accepted || !strings.Contains(r.AuthRes, "x-tls=pass") {
		t.Fatalf("matching DN: %+v, %v; want pass", r, err)
	}
	hostile := map[string]struct {
		subject string
		raw     bool
	}{
		"CR LF in CN":            {subject: "/C=DE/O=Partner/CN=client.partner.example\r\nX-Injected: yes"},
		"extra RDN":              {subject: "/C=DE/O=Partner/CN=client.partner.example/CN=evil"},
		"quotes and parentheses": {subject: `/C=DE/O=Partner "(x)"/CN=client.partner.example`},
		"4 KB DN":                {subject: "/C=DE/O=" + strings.Repeat("P", 4000) + "/CN=client.partner.example"},
		"invalid UTF-8":          {subject: "/C=DE/O=Partner\xff/CN=client.partner.example"},
		"malformed xtext":        {subject: "/C=DE/O=Partner/CN=client.partner.example+ZZ", raw: true},
		"encoded NUL":            {subject: "/C=DE/O=Partner/CN=client.partner.example+00", raw: true},
		"not a DN":               {subject: "client.partner.example"},
	}
	for name, h := range hostile {
		t.Run(name, func(t *testing.T) {
			s := session("192.0.2.10", h.subject, "/C=DE/O=Lab/CN=Lab CA", h.raw)
			r, err := runMilter(d.milter, s)
			if err != nil || !r.Refused || r.Code != milterDeferCode {
				t.Fatalf("covered client: %+v, %v; want 451", r, err)
			}
			s.ClientAddr, s.From = "198.51.100.9", "a@other.example"
			r, err = runMilter(d.milter, s)
			if err != nil || !r.Accepted {
				t.Fatalf("uncovered client: %+v, %v; want accepted", r, err)
			}
			checkHeaderValue(t, "Received", r.Received)
			checkHeaderValue(t, "Authentication-Results", r.AuthRes)
		})
	}
	// The daemon serves on.
	if r, err := d.lookup("access", "tls_rcpt:u@nowhere.example"); err != nil || r.String() != answerNotFound {
		t.Fatalf("socketmap afterwards: %q, %v", r.String(), err)
	}
	if r, err := runMilter(d.milter, good); err != nil || !r.Accepted {
		t.Fatalf("matching DN afterwards: %+v, %v", r, err)
	}
}
