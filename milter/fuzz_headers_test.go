package milter

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// maxHeaderValue bounds what receivedHeader and authResultsHeader may
// produce whatever the inputs: every field is cut by headerText, so the
// values stay far below the 998-byte line limit of RFC 5322 and the MTAs'
// header limits.
const maxHeaderValue = 2048

// checkOneHeaderValue asserts that v is one well-formed, unfoldable header
// value: not empty, ASCII only, no CR, every LF starts a continuation line
// that begins with a tab and carries text, no line over 200 bytes, no
// leading or trailing white space, at most maxHeaderValue bytes.
func checkOneHeaderValue(t *testing.T, name, v string) {
	t.Helper()
	if v == "" {
		t.Fatalf("%s: empty value", name)
	}
	if len(v) > maxHeaderValue {
		t.Fatalf("%s: %d bytes", name, len(v))
	}
	if strings.ContainsRune(v, '\r') {
		t.Fatalf("%s: CR in %q", name, v)
	}
	if strings.TrimSpace(v) != v {
		t.Fatalf("%s: leading or trailing white space in %q", name, v)
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
				t.Fatalf("%s: byte %#x in line %d: %q", name, c, i, line)
			}
		}
	}
	checkHeaderSafe(t, name, v) // balanced comments and quotes, no backslash
}

// FuzzStampHeaders feeds arbitrary certificate subject and issuer names,
// cipher, protocol, verify word, HELO and client names, queue ID, host and
// authserv-id to the header builders. Each result must be a single
// well-formed header value (checkOneHeaderValue); our Received line must be
// recognised as ours (so a forged copy is removed), the
// Authentication-Results value must parse with go-msgauth to our
// authserv-id and result, and every value must survive: headerText's
// encoding decodes back to the input (certid.DecodeXtext) unless cut.
func FuzzStampHeaders(f *testing.F) {
	for _, st := range stamps() {
		f.Add(st.SubjectCN, st.IssuerCN, st.Cipher, st.TLSVersion, st.Verify, st.Helo, st.ClientName, st.QueueID, st.Host, st.AuthservID, st.Bits, st.Monitor)
	}
	f.Add("evil\r\nX-Injected: yes", "a) (b \"c\" \\d", "TLS_AES_256_GCM_SHA384", "TLSv1.3", "OK", "helo", "name", "Q1", "mx.lab.test", "mx.lab.test", 256, false)
	f.Add(strings.Repeat("S", 4096), "\xff\xfe\x80", "", "", "", "", "", "", "mx.lab.test", "", -1, true)
	f.Fuzz(func(t *testing.T, subject, issuer, cipher, version, verify, helo, client, qid, host, authserv string, bits int, monitor bool) {
		st := &traceStamp{
			Host: host, AuthservID: authserv, Helo: helo, ClientName: client,
			ClientAddr: netip.MustParseAddr("192.0.2.10"), QueueID: qid,
			TLSVersion: version, Cipher: cipher, Bits: bits, Verify: verify,
			SubjectCN: subject, IssuerCN: issuer,
			Endpoints: "company-b", Result: "pass", Date: stampDate,
		}
		if monitor {
			st.Result, st.Monitor, st.Checks = "fail", true, []string{"cn", "validate_cert"}
		}
		r := receivedHeader(st)
		a := authResultsHeader(st)
		checkOneHeaderValue(t, "Received", r)
		checkOneHeaderValue(t, "Authentication-Results", a)

		if host != "" && !ForgedReceived(r, host) {
			t.Fatalf("our own Received line is not recognised as ours (host %q):\n%s", host, r)
		}
		if authserv != "" && !forgedAuthResults(a, authserv) {
			t.Fatalf("our own Authentication-Results is not recognised as ours (authserv-id %q):\n%s", authserv, a)
		}
		id, results, err := authres.Parse(unfold(a))
		if err != nil {
			t.Fatalf("authres.Parse: %v\n%s", err, a)
		}
		wantID := headerText(authserv, maxNameText)
		if wantID == "" {
			wantID = "unknown"
		}
		if id != wantID || len(results) != 1 {
			t.Fatalf("parsed authserv-id %q and %d results, want %q and 1:\n%s", id, len(results), wantID, a)
		}
		if g, ok := results[0].(*authres.GenericResult); !ok || g.Method != authMethod || string(g.Value) != st.Result {
			t.Fatalf("parsed result %#v", results[0])
		}

		for _, s := range []string{subject, issuer, cipher, version, verify, helo, client, qid, host, authserv} {
			enc := headerText(s, 0)
			if strings.IndexByte(s, 0) < 0 {
				if dec, err := certid.DecodeXtext(enc); err != nil || dec != s {
					t.Fatalf("headerText(%q) = %q decodes to %q, %v", s, enc, dec, err)
				}
			}
			if cut := headerText(s, maxCertText); len(cut) > maxCertText || (cut != enc && !strings.HasSuffix(cut, "...")) {
				t.Fatalf("headerText(%q, %d) = %q", s, maxCertText, cut)
			}
		}
	})
}

// FuzzForgedAuthResults: whatever a forged Authentication-Results value
// holds, forgedAuthResults does not panic, and it removes every value
// that RFC 8601's reading (authservIDOf) or go-msgauth's authres.Parse
// takes for our authserv-id.
func FuzzForgedAuthResults(f *testing.F) {
	for _, v := range []string{
		"mx.lab.test; x-tls=pass", "MX.Lab.Test.; none", "mx.lab.test\v; none", "\u00a0mx.lab.test 1; none",
		"(c) mx.lab(c).test (c); none", "\"mx.lab.test\"; none", "mx.lab\u200b.test; none", "other.example; none", "(", "",
	} {
		f.Add(v)
	}
	const ours = "mx.lab.test"
	f.Fuzz(func(t *testing.T, v string) {
		got := forgedAuthResults(v, ours)
		if id := authservIDOf(v); sameAuthservID(id, ours) && !got {
			t.Errorf("%q: RFC 8601 reads %q, ours, but it is kept", v, id)
		}
		if id, _, err := authres.Parse(v); err == nil && sameAuthservID(id, ours) && !got {
			t.Errorf("%q: authres.Parse reads %q, ours, but it is kept", v, id)
		}
	})
}
