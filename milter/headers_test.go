package milter

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/tlsgate/tlsgate/internal/lab/golden"
)

func TestHeaderText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mx.example.com", "mx.example.com"},
		{"", ""},
		{"Lab Test CA", "Lab+20Test+20CA"},
		{"a\r\nX-Evil: 1", "a+0D+0AX-Evil:+201"},
		{`(paren) "quote" back\slash`, `+28paren+29+20+22quote+22+20back+5Cslash`},
		{"a;b=c+d<e>", "a+3Bb+3Dc+2Bd+3Ce+3E"},
		{"bücher", "b+C3+BCcher"},
		{"tab\there\x00nul\x7f", "tab+09here+00nul+7F"},
		{"[192.0.2.1]", "[192.0.2.1]"},
	}
	for _, tc := range tests {
		if got := headerText(tc.in, 0); got != tc.want {
			t.Errorf("headerText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Truncation never splits an escape and ends in "...".
	long := strings.Repeat("é", 100)
	got := headerText(long, 20)
	if len(got) > 20 || !strings.HasSuffix(got, "...") {
		t.Errorf("headerText(long, 20) = %q", got)
	}
	if got != "+C3+A9+C3+A9+C3..." {
		t.Errorf("headerText(long, 20) = %q", got)
	}
	if got := headerText("exactly10!", 10); got != "exactly10!" {
		t.Errorf("exact fit cut: %q", got)
	}
	if got := headerText("exactly11!!", 10); got != "exactly..." {
		t.Errorf("cut: %q", got)
	}
}

// checkHeaderSafe asserts that v is a header value that cannot inject:
// printable ASCII only, folding only as "\n\t", lines short enough, and
// parentheses and quotes balanced.
func checkHeaderSafe(t *testing.T, name, v string) {
	t.Helper()
	for i, line := range strings.Split(v, "\n") {
		if i > 0 && !strings.HasPrefix(line, "\t") {
			t.Errorf("%s: continuation line %d does not start with a tab: %q", name, i, line)
		}
		if len(line) > 200 {
			t.Errorf("%s: line %d is %d bytes long", name, i, len(line))
		}
		for j := 0; j < len(line); j++ {
			c := line[j]
			if (c < ' ' && c != '\t') || c > '~' {
				t.Errorf("%s: line %d has byte %#x: %q", name, i, c, line)
			}
		}
	}
	depth := 0
	for _, c := range v {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
			if depth < 0 {
				t.Errorf("%s: unbalanced ')' in %q", name, v)
			}
		}
	}
	if depth != 0 {
		t.Errorf("%s: unbalanced '(' in %q", name, v)
	}
	if strings.Count(v, `"`)%2 != 0 {
		t.Errorf("%s: unbalanced quote in %q", name, v)
	}
	if strings.Contains(v, `\`) {
		t.Errorf("%s: backslash in %q", name, v)
	}
}

var stampDate = time.Date(2026, 11, 28, 15, 52, 52, 0, time.UTC)

func stamps() map[string]*traceStamp {
	hostile := "evil) (x\r\nX-Injected: \"yes\" \\ ü;=" + strings.Repeat("A", 300)
	return map[string]*traceStamp{
		"pass": {
			Host: "mx.lab.test", AuthservID: "mx.lab.test", Helo: "client.lab.test", ClientName: "localhost",
			ClientAddr: netip.MustParseAddr("127.0.0.1"), QueueID: "87BBD98A818",
			TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: "OK",
			SubjectCN: "client.lab.test", IssuerCN: "Lab Test CA",
			Endpoints: "company-b", Result: "pass", Date: stampDate,
		},
		"plaintext-uncovered": {
			Host: "mx.lab.test", AuthservID: "mx.lab.test", Helo: "client.lab.test",
			ClientAddr: netip.MustParseAddr("2001:db8::10"), QueueID: "87BBD98A818",
			Result: "none", Date: stampDate,
		},
		"monitor-fail": {
			Host: "mx.lab.test", AuthservID: "mx.lab.test", Helo: "client.lab.test", ClientName: "localhost",
			ClientAddr: netip.MustParseAddr("127.0.0.1"),
			TLSVersion: "TLSv1.2", Cipher: "ECDHE-RSA-AES128-GCM-SHA256", Bits: 128, Verify: "UNVERIFIED",
			Endpoints: "company-b,company-c", Result: "fail", Monitor: true, Checks: []string{"min_bits", "validate_cert"}, Date: stampDate,
		},
		"hostile": {
			Host: "mx.lab.test", AuthservID: "mx.lab.test", Helo: hostile, ClientName: hostile,
			ClientAddr: netip.MustParseAddr("127.0.0.1"), QueueID: hostile,
			TLSVersion: hostile, Cipher: hostile, Bits: 256, Verify: hostile,
			SubjectCN: hostile, IssuerCN: hostile,
			Endpoints: "company-b", Result: "fail", Monitor: true, Checks: []string{"cn"}, Date: stampDate,
		},
	}
}

func TestStampHeaders(t *testing.T) {
	for name, st := range stamps() {
		t.Run(name, func(t *testing.T) {
			r := receivedHeader(st)
			a := authResultsHeader(st)
			checkHeaderSafe(t, "Received", r)
			checkHeaderSafe(t, "Authentication-Results", a)
			if !ForgedReceived(r, st.Host) {
				t.Errorf("our own Received line is not recognised as ours:\n%s", r)
			}
			if !forgedAuthResults(a, st.AuthservID) {
				t.Errorf("our own Authentication-Results is not recognised as ours:\n%s", a)
			}
			id, results, err := authres.Parse(unfold(a))
			if err != nil {
				t.Fatalf("authres.Parse: %v\n%s", err, a)
			}
			if id != st.AuthservID || len(results) != 1 {
				t.Fatalf("parsed %q %v", id, results)
			}
			g, ok := results[0].(*authres.GenericResult)
			if !ok || g.Method != authMethod || string(g.Value) != st.Result {
				t.Errorf("parsed result %#v", results[0])
			}
			golden.Check(t, "stamp-"+name+".txt", "Received: "+r+"\nAuthentication-Results: "+a+"\n")
		})
	}
}

func TestForgedReceived(t *testing.T) {
	host := "mx.lab.test"
	for v, want := range map[string]bool{
		"from x (y [1.2.3.4])\n\tby mx.lab.test (tlsgate) id 1; Sat, 28 Nov 2026 15:52:52 +0000": true,
		"from x by MX.LAB.TEST   (TLSgate 1.0) ; date":                                           true,
		"from x\r\n\tby mx.lab.test\r\n\t( tlsgate ) id 1; date":                                 true,
		"from x by mx.lab.test (Postfix) with ESMTP id 1; date":                                  false,
		"from x by mx.partner.example (tlsgate) id 1; date":                                      false,
		"from x by other.mx.lab.test (tlsgate) id 1; date":                                       false,
		"from mx.lab.test (tlsgate) by y (Postfix); date":                                        false,
		"": false,
	} {
		if got := ForgedReceived(v, host); got != want {
			t.Errorf("ForgedReceived(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestAuthservID(t *testing.T) {
	for v, want := range map[string]string{
		"mx.lab.test; x-tls=pass":                           "mx.lab.test",
		" mx.lab.test 1; spf=pass":                          "mx.lab.test",
		"(comment) mx.lab.test; x-tls=pass":                 "mx.lab.test",
		"(nested (comment) \\) here)\r\n\tmx.lab.test;none": "mx.lab.test",
		`"mx.lab.test"; none`:                               "mx.lab.test",
		`"mx.lab\.test"; none`:                              "mx.lab.test",
		"mx.lab.test(c); none":                              "mx.lab.test",
		"other.example; none":                               "other.example",
		"(unterminated":                                     "",
		"":                                                  "",
	} {
		if got := authservIDOf(v); got != want {
			t.Errorf("authservIDOf(%q) = %q, want %q", v, got, want)
		}
	}
	if !forgedAuthResults("(x) MX.Lab.Test; x-tls=pass", "mx.lab.test") {
		t.Error("case-insensitive match failed")
	}
	if forgedAuthResults("mx.lab.test.evil; x-tls=pass", "mx.lab.test") {
		t.Error("prefix must not match")
	}
}

// TestForgedAuthResultsForms: every form of our authserv-id that some
// reader takes for ours is a forgery to remove: a trailing dot, other
// whitespace (VT, FF, NBSP, NEL) around or after it, comments anywhere,
// case, invisible format characters. Where go-msgauth's own parser reads
// the header, its reading agrees.
func TestForgedAuthResultsForms(t *testing.T) {
	const ours = "mx.lab.test"
	forged := []string{
		"mx.lab.test; x-tls=pass",
		"MX.LAB.TEST; x-tls=pass",
		"mx.lab.test.; x-tls=pass",
		"mx.lab.test..; x-tls=pass",
		"\"mx.lab.test.\"; x-tls=pass",
		"mx.lab.test\v; x-tls=pass",
		"mx.lab.test\f; x-tls=pass",
		"\vmx.lab.test; x-tls=pass",
		"\fmx.lab.test 1; x-tls=pass",
		"\u00a0mx.lab.test; x-tls=pass",
		"mx.lab.test\u00a0; x-tls=pass",
		"mx.lab.test\u00a01; x-tls=pass",
		"mx.lab.test\u0085; x-tls=pass",
		"mx.lab.test\u2003; x-tls=pass",
		"(c)mx.lab.test; x-tls=pass",
		"( nested (c) )\tmx.lab.test (c) 1 (c); x-tls=pass",
		"mx.lab(c).test; x-tls=pass",
		"mx.lab.test(c); x-tls=pass",
		"mx.lab.test (c; x-tls=pass",
		"mx.lab\u200b.test; x-tls=pass",
		"\u200emx.lab.test; x-tls=pass",
		"mx.lab.test",
		"mx.lab.test\r\n\t; x-tls=pass",
	}
	for _, v := range forged {
		if !forgedAuthResults(v, ours) {
			t.Errorf("%q is not seen as ours", v)
		}
	}
	kept := []string{
		"mx.lab.test.evil; x-tls=pass",
		"evil.mx.lab.test; x-tls=pass",
		"mx-lab.test; x-tls=pass",
		"other.example; x-tls=pass (mx.lab.test)",
		"other.example; x-tls=pass policy.endpoint=mx.lab.test",
		"(mx.lab.test) other.example; x-tls=pass",
		"\"mx.lab.test x\"; x-tls=pass",
		"; x-tls=pass",
		"",
	}
	for _, v := range kept {
		if forgedAuthResults(v, ours) {
			t.Errorf("%q is taken for ours", v)
		}
	}
	for _, v := range append(forged, kept...) {
		id, _, err := authres.Parse(v)
		if err != nil {
			continue
		}
		if sameAuthservID(id, ours) != forgedAuthResults(v, ours) && sameAuthservID(id, ours) {
			t.Errorf("authres.Parse reads %q as %q (ours), forgedAuthResults does not", v, id)
		}
	}
}
