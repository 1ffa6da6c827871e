package demo

import (
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

func TestHeaderLines(t *testing.T) {
	msg := "Received: from a\r\n\tby b;\r\n\tdate\r\nSubject: x\r\n\r\nbody\r\nNot: a header\r\n"
	got := headerLines([]byte(msg))
	want := []string{"Received: from a\n    by b;\n    date", "Subject: x"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("headerLines = %q; want %q", got, want)
	}
}

func TestPostfixLine(t *testing.T) {
	for in, want := range map[string]string{
		"Nov 28 16:59:54 mx.lab.test postfix/smtp[13187]: 961D29862F5: to=<a@b>": "postfix/smtp[13187]: 961D29862F5: to=<a@b>",
		"Dec  1 01:02:03 mx postfix/smtpd[1]: x":                                 "postfix/smtpd[1]: x",
		"no prefix":                                                              "no prefix",
	} {
		if got := postfixLine(in); got != want {
			t.Errorf("postfixLine(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestSummaryString(t *testing.T) {
	want := "accepted and stamped: 1, refused: 2, delivered over verified TLS: 1, kept in queue: 1"
	if got := Want.String(); got != want {
		t.Errorf("Want.String() = %q; want %q", got, want)
	}
}

func TestConfigTemplateLoads(t *testing.T) {
	path := t.TempDir() + "/tlsgate.toml"
	if err := writeConfig(path, configValues{MilterPort: 1, SocketmapPort: 2, CABundle: "/ca.pem",
		ServerCert: "/s.crt", ServerKey: "/s.key", IssuerCN: caName}); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		t.Fatalf("the demo's policy file does not load: %v", err)
	}
	if len(p.Endpoints) != 2 || p.Endpoints[0].Inbound.IssuerCN != caName {
		t.Errorf("endpoints = %+v", p.Endpoints)
	}
	for key, want := range map[string]string{
		"[" + bServerName + "]:2525": "OK secure match=" + bServerName,
		"[" + cServerName + "]:2526": "OK encrypt",
		"[127.0.0.1]:2527":           "NOTFOUND", // our mailbox server
	} {
		a, err := p.Outbound(key)
		got := "NOTFOUND"
		if a.Found {
			got = "OK " + a.Text
		}
		if err != nil || !strings.HasPrefix(got, want) {
			t.Errorf("Outbound(%q) = %q, %v; want %q...", key, got, err, want)
		}
	}
}
