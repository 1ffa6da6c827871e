package milter

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/golden"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/policyd"
)

func TestFormatDecision(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		name string
		d    Decision
	}{
		{"pass", Decision{QueueID: "87BBD98A818", ClientName: "localhost", ClientAddr: lo, Sender: "sender@lab.test",
			Endpoints: "company-b", TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: "OK", Result: policy.OutcomePass}},
		{"defer-plaintext", Decision{ClientName: "localhost", ClientAddr: lo, Sender: "sender@company-b.example",
			Endpoints: "company-b", Result: policy.OutcomeDefer, Reason: "endpoint=company-b check=encryption want=TLS got=plaintext"}},
		{"reject-ipv6-unknown", Decision{ClientAddr: netip.MustParseAddr("2001:db8::10"), Sender: "",
			Endpoints: "company-b,company-c", TLSVersion: "TLSv1.2", Cipher: "ECDHE-RSA-AES128-GCM-SHA256", Bits: 128, Verify: "UNVERIFIED",
			Result: policy.OutcomeReject, Reason: `endpoint=company-b check=validate_cert want=trusted got=none-or-untrusted; endpoint=company-c check=cn want=mx.c.example got=""`,
			Unchecked: "company-b:fingerprints"}},
		{"monitor", Decision{QueueID: "6ASFvqYo016532", ClientName: "client.lab.test", ClientAddr: lo, Sender: "a@b.example",
			Endpoints: "company-c", TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: "FAIL",
			Result: policy.OutcomeMonitor, Reason: "endpoint=company-c check=validate_cert want=trusted got=untrusted"}},
		{"none", Decision{QueueID: "87BBD98A818", ClientAddr: lo, Sender: "x@y.example", Result: policy.OutcomeNone}},
		{"hostile", Decision{QueueID: "Q\nID", ClientName: "evil\r\nname", ClientAddr: lo, Sender: "a b\"c\\@ü.example",
			Endpoints: "company-b", TLSVersion: "TLSv1.3", Cipher: "X Y", Bits: 256, Verify: "OK=1",
			Result: policy.OutcomeDefer, Reason: "endpoint=company-b check=cn want=a got=\"\r\nInjected: 1\xff"}},
		{"tempfail", Decision{ClientAddr: lo, Result: policy.OutcomeTempFail, Reason: "panic in mail: boom"}},
		{"unchecked", Decision{QueueID: "87BBD98A818", ClientAddr: netip.MustParseAddr("192.0.2.7"), Sender: "a@pin.example",
			Endpoints: "pinned", TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: "UNVERIFIED",
			Result: policy.OutcomeUnchecked, Unchecked: "pinned:fingerprints"}},
		{"exception", Decision{QueueID: "87BBD98A818", ClientName: "mx1.sub.company-b.example", ClientAddr: lo, Sender: "a@sub.company-b.example",
			Endpoints: "company-b-sub", Exceptions: "company-b-sub", Result: policy.OutcomeException}},
		{"sender-says-pass", Decision{ClientAddr: lo, Sender: `"x result=pass endpoint=none"@company-b.example`,
			Endpoints: "company-b", Result: policy.OutcomeDefer, Reason: "endpoint=company-b check=encryption want=TLS got=plaintext"}},
	}
	var all strings.Builder
	for _, c := range cases {
		line := formatDecision(c.d)
		for i := 0; i < len(line); i++ {
			if line[i] < ' ' || line[i] > '~' {
				t.Errorf("%s: byte %#x in %q", c.name, line[i], line)
			}
		}
		all.WriteString(c.name + ": " + line + "\n")
	}
	golden.Check(t, "decisions.log", all.String())
}

// TestDecisionFieldsFirst: tlsgate's own fields come before anything the
// peer supplied, so that the first result= of a line is the real one even
// when the sender or the client's name spells out another.
func TestDecisionFieldsFirst(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, d := range []Decision{
		{ClientAddr: lo, Sender: `"x result=pass endpoint=none exception=x"@company-b.example`, Endpoints: "company-b", Result: policy.OutcomeDefer},
		{ClientName: "result=pass", ClientAddr: lo, Sender: "result=pass@example", Endpoints: "company-b", Result: policy.OutcomeReject,
			TLSVersion: "TLSv1.3", Cipher: "result=pass", Bits: 128, Verify: "result=pass", Reason: "got=\"result=pass\""},
		{ClientAddr: lo, Sender: "x@y", Endpoints: "sub", Exceptions: "sub", Result: policy.OutcomeException},
		{ClientAddr: lo, Sender: "result=pass", Endpoints: "pinned", Unchecked: "pinned:fingerprints", Result: policy.OutcomeUnchecked},
	} {
		line := formatDecision(d)
		first := func(field string) string {
			m := regexp.MustCompile(`\b` + field + `=([a-z,-]*)`).FindStringSubmatch(line)
			if m == nil {
				return ""
			}
			return m[1]
		}
		if got := first("result"); got != d.Result.String() {
			t.Errorf("first result= of %q is %q, want %q", line, got, d.Result)
		}
		if got := first("endpoint"); got != d.Endpoints {
			t.Errorf("first endpoint= of %q is %q, want %q", line, got, d.Endpoints)
		}
		if d.Exceptions != "" {
			if got := first("exception"); got != d.Exceptions {
				t.Errorf("first exception= of %q is %q, want %q", line, got, d.Exceptions)
			}
		}
		own := strings.Index(line, " client=")
		for _, f := range []string{"result=", "endpoint=", "exception=", "unchecked=", "judged_by="} {
			if i := strings.Index(line, " "+f); i > own && (f != "exception=" || d.Exceptions != "") && (f[0] != 'u' && f[0] != 'j' || d.Unchecked != "") {
				t.Errorf("%s after client= in %q", f, line)
			}
		}
	}
}

// TestJudgedByNamesDelegation: judged_by= names the policy-delegation
// server by the event its own lines carry, so that an admin can grep for
// it (the milter does not import policyd, which carries the discovery
// engine, so the two constants are tied here).
func TestJudgedByNamesDelegation(t *testing.T) {
	if judgedBy != policyd.DelegationEvent {
		t.Errorf("judged_by=%s, but the delegation server logs as %s", judgedBy, policyd.DelegationEvent)
	}
}
