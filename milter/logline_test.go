package milter

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/golden"
)

func TestFormatDecision(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		name string
		d    Decision
	}{
		{"pass", Decision{QueueID: "87BBD98A818", ClientName: "localhost", ClientAddr: lo, Sender: "sender@lab.test",
			Endpoints: "company-b", TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: "OK", Result: "pass"}},
		{"defer-plaintext", Decision{ClientName: "localhost", ClientAddr: lo, Sender: "sender@company-b.example",
			Endpoints: "company-b", Result: "defer", Reason: "endpoint=company-b check=encryption want=TLS got=plaintext"}},
		{"reject-ipv6-unknown", Decision{ClientAddr: netip.MustParseAddr("2001:db8::10"), Sender: "",
			Endpoints: "company-b,company-c", TLSVersion: "TLSv1.2", Cipher: "ECDHE-RSA-AES128-GCM-SHA256", Bits: 128, Verify: "UNVERIFIED",
			Result: "reject", Reason: `endpoint=company-b check=validate_cert want=trusted got=none-or-untrusted; endpoint=company-c check=cn want=mx.c.example got=""`,
			Unchecked: "company-b:fingerprints"}},
		{"monitor", Decision{QueueID: "6ASFvqYo016532", ClientName: "client.lab.test", ClientAddr: lo, Sender: "a@b.example",
			Endpoints: "company-c", TLSVersion: "TLSv1.3", Cipher: "TLS_AES_256_GCM_SHA384", Bits: 256, Verify: "FAIL",
			Result: "monitor", Reason: "endpoint=company-c check=validate_cert want=trusted got=untrusted"}},
		{"none", Decision{QueueID: "87BBD98A818", ClientAddr: lo, Sender: "x@y.example", Result: "none"}},
		{"hostile", Decision{QueueID: "Q\nID", ClientName: "evil\r\nname", ClientAddr: lo, Sender: "a b\"c\\@ü.example",
			Endpoints: "company-b", TLSVersion: "TLSv1.3", Cipher: "X Y", Bits: 256, Verify: "OK=1",
			Result: "defer", Reason: "endpoint=company-b check=cn want=a got=\"\r\nInjected: 1\xff"}},
		{"tempfail", Decision{ClientAddr: lo, Result: "tempfail", Reason: "panic in mail: boom"}},
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
