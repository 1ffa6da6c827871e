package hostile

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDelegationHostile sends malformed and abusive policy-delegation
// requests to the daemon, each on a fresh connection. Malformed requests
// are logged and the connection is closed without a reply (as
// SMTPD_POLICY_README asks; Postfix then applies its default action);
// well-formed requests with hostile values get a temporary failure or the
// verdict of the facts they carry, on one line. After each case the daemon
// answers well-behaved clients on all listeners.
func TestDelegationHostile(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{})
	manyAttrs := func(n, size int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "attr%d=%s\n", i, strings.Repeat("v", size))
		}
		return b.String() + "\n"
	}
	tests := []struct {
		name   string
		send   string
		closeW bool   // close the write side after sending
		reply  string // "": closed without a reply
		log    string
	}{
		{name: "no blank line, then EOF", send: strings.TrimSuffix(delegationRequest("192.0.2.10", "a@partner.example", false), "\n"), closeW: true, log: "not terminated"},
		{name: "duplicate attribute", send: "request=smtpd_access_policy\nrequest=smtpd_access_policy\n\n", log: "duplicate attribute"},
		{name: "duplicate client_address", send: strings.Replace(delegationRequest("192.0.2.10", "a@partner.example", false), "\n\n", "\nclient_address=198.51.100.7\n\n", 1), log: "duplicate attribute"},
		{name: "1 MB attribute", send: "request=smtpd_access_policy\nccert_subject=" + strings.Repeat("A", 1<<20) + "\n\n", log: "line too long"},
		{name: "10000 attributes", send: manyAttrs(10000, 1), log: "too many attributes"},
		{name: "request over 64 KiB", send: manyAttrs(90, 1000), log: "request too large"},
		{name: "endless line", send: strings.Repeat("x", 200000), log: "line too long"},
		{name: "NUL in value", send: "request=smtpd_access_policy\nclient_address=192.0.2.10\x00\n\n", log: "NUL byte"},
		{name: "line without '='", send: "request=smtpd_access_policy\nclient_address\n\n", log: "without '='"},
		{name: "empty name", send: "=smtpd_access_policy\n\n", log: "empty attribute name"},
		{name: "empty request", send: "\n", log: "empty request"},
		{name: "CRLF line ends", send: "request=smtpd_access_policy\r\nclient_address=192.0.2.10\r\n\r\n", log: "without '='"},
		{name: "HTTP request", send: "GET / HTTP/1.0\r\n\r\n", log: "without '='"},
		{name: "hostile xtext subject from covered peer", send: delegationRequest("192.0.2.20", "a@verified.example", true, "ccert_subject=client.verified.example+0D+0AX:+20y", "ccert_issuer=Lab+20CA"), reply: actionDefer, log: "check=cn"},
		{name: "short fingerprint", send: delegationRequest("192.0.2.20", "a@verified.example", true, "ccert_subject=client.verified.example", "ccert_issuer=Lab+20CA", "ccert_fingerprint=AB"), reply: actionDunno, log: "result=pass endpoint=verified"}, // no pin: the fingerprint is not needed
		{name: "malformed xtext subject", send: delegationRequest("192.0.2.20", "a@verified.example", true, "ccert_subject=+ZZ+", "ccert_issuer=Lab+20CA"), reply: actionTempFail},
		{name: "encoded NUL in subject", send: delegationRequest("192.0.2.20", "a@verified.example", true, "ccert_subject=client.verified.example+00.evil", "ccert_issuer=Lab+20CA"), reply: actionTempFail},
		{name: "4 KB subject", send: delegationRequest("192.0.2.20", "a@verified.example", true, "ccert_subject="+strings.Repeat("C", 4000), "ccert_issuer=Lab+20CA"), reply: actionDefer},
		{name: "garbage fingerprint for pinned peer", send: delegationRequest("192.0.2.30", "x@other.example", true, "ccert_fingerprint="+strings.Repeat("ZZ:", 1000), "ccert_pubkey_fingerprint=()\"\\"), reply: actionTempFail, log: "result=tempfail endpoint=pinned"},
		{name: "short fingerprint for pinned peer", send: delegationRequest("192.0.2.30", "x@other.example", true, "ccert_fingerprint=AB"), reply: actionTempFail, log: "smtpd_tls_fingerprint_digest = sha256"},
		{name: "short fingerprint for uncovered peer", send: delegationRequest("203.0.113.99", "x@nowhere.example", true, "ccert_fingerprint=AB"), reply: actionDunno},
		{name: "non-UTF-8 values", send: delegationRequest("192.0.2.10", "\xff\xfe@partner.example", false, "policy_context=\xc3\x28"), reply: actionDefer, log: `sender="<\xff\xfe@partner.example>"`},
		{name: "garbage client address", send: delegationRequest("999.1.2.3", "x@other.example", false), reply: actionTempFail},
		{name: "v4-mapped IPv6 address of a covered peer", send: delegationRequest("IPv6:::ffff:192.0.2.10", "x@other.example", false), reply: actionDefer},
		{name: "unknown attributes", send: delegationRequest("198.51.100.7", "x@other.example", false, "x-evil=1", "policy_context=action=OK"), reply: actionDunno},
	}
	var peak float64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mark := d.logs.mark()
			d.resetPeak()
			defer func() {
				p := d.peakMB()
				peak = max(peak, p)
				if p > rssLimitMB(64) {
					t.Errorf("peak RSS %.1f MB", p)
				}
			}()
			c := dialRaw(t, d.delegation)
			br := bufio.NewReader(c)
			go func() {
				c.Write([]byte(tc.send))
				if tc.closeW {
					c.(interface{ CloseWrite() error }).CloseWrite()
				}
			}()
			if tc.reply != "" {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := exchangeDelegation(c, br, "")
				if err != nil || got != tc.reply {
					t.Fatalf("answer %q, %v; want %q", got, err, tc.reply)
				}
				// The connection goes on serving.
				got, err = exchangeDelegation(c, br, delegationRequest("198.51.100.7", "x@other.example", false))
				if err != nil || got != actionDunno {
					t.Fatalf("same connection afterwards: %q, %v", got, err)
				}
				if tc.log != "" {
					d.logs.waitFor(t, mark, tc.log, 5*time.Second)
				}
			} else {
				if rest := readUntilClosed(t, c, 1<<20, 10*time.Second); rest != "" {
					t.Fatalf("reply %q to a malformed request, want none", truncate(rest))
				}
				d.logs.waitFor(t, mark, tc.log, 5*time.Second)
			}
			d.checkServed(t)
		})
	}
	record("delegation hostile: peak RSS per case", "%.1f MB (%d cases)", peak, len(tests))
}

// TestDelegationPipelined: two requests in one write get two answers, in
// order.
func TestDelegationPipelined(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{Level: "warn"})
	c := dialRaw(t, d.delegation)
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	two := delegationRequest("192.0.2.10", "a@partner.example", false) + delegationRequest("198.51.100.7", "x@other.example", false)
	if _, err := c.Write([]byte(two)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{actionDefer, actionDunno} {
		got, err := exchangeDelegation(c, br, "")
		if err != nil || got != want {
			t.Fatalf("answer %d: %q, %v; want %q", i, got, err, want)
		}
	}
	d.checkServed(t)
}
