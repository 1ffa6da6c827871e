package main

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// probeConfig writes a configuration whose CA store holds the lab CA and
// whose endpoint covers 127.0.0.1 outbound with validate_cert and
// cn = "sink.partner.test" (Postfix: "secure match=sink.partner.test").
func probeConfig(t *testing.T, pki *testpki.PKI, mode string) string {
	t.Helper()
	dir := t.TempDir()
	store := filepath.Join(dir, "ca")
	os.MkdirAll(store, 0o755)
	ca, err := os.ReadFile(pki.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(store, "lab-ca.pem"), ca, 0o644)
	conf := fmt.Sprintf(`mta = "postfix"
[certs]
ca_store    = %q
server_cert = %q
server_key  = %q

[[endpoint]]
name  = "partner"
hosts = ["partner.test", "127.0.0.1"]   # the probe dials the address
mode  = %q
  [endpoint.outbound]
  validate_cert = true
  cn            = "sink.partner.test"
`, store, pki.Server.ChainFile, pki.Server.KeyFile, mode)
	path := filepath.Join(dir, "tlsgate.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestProbeCommand probes the lab's TLS sinks and prints the endpoint's
// outbound verdict on each.
func TestProbeCommand(t *testing.T) {
	pki := testpki.NewT(t)
	conf := probeConfig(t, pki, "enforce")
	for _, tc := range []struct {
		name string
		cert *testpki.Cert
		code int
		want []string
	}{
		{"good", pki.Sink, exitOK, []string{
			"TLS:         TLSv1.3", "CN:        sink.partner.test", "SANs:      DNS:sink.partner.test",
			"verifies:    yes, against our CA store", "client cert: sent",
			"endpoint:    partner (enforce): secure match=sink.partner.test", "verdict:     would deliver"}},
		{"wrong name", pki.WrongCN, exitFail, []string{
			"CN:        wrong.partner.test", "verifies:    yes",
			"verdict:     would stay queued: the certificate names wrong.partner.test, want sink.partner.test"}},
		{"self-signed", pki.SelfSigned, exitFail, []string{
			"verifies:    NO", "verdict:     would stay queued: the server certificate does not verify against our CA store"}},
		{"no STARTTLS", nil, exitFail, []string{
			"STARTTLS:    not offered", "verdict:     would stay queued: TLS is required, but the server did not use it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: tc.cert, ClientAuth: tls.RequestClientCert})
			out, errs, code := runCLI(t, "probe", "-c", conf, "--helo", "mx.lab.test", fmt.Sprintf("[127.0.0.1]:%d", sink.Port()))
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.code, out, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	t.Run("monitor", func(t *testing.T) {
		sink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.WrongCN})
		out, _, code := runCLI(t, "probe", "-c", probeConfig(t, pki, "monitor"), fmt.Sprintf("[127.0.0.1]:%d", sink.Port()))
		if code != exitFail || !strings.Contains(out, "partner (monitor, judged as if enforced)") {
			t.Errorf("exit %d\n%s", code, out)
		}
	})
	t.Run("hostile names", func(t *testing.T) {
		evil, err := pki.Issue(testpki.Options{Name: "evil", Signer: pki.CA, KeyType: testpki.ECDSAP256,
			Subject:  pkix.Name{CommonName: "sink\x1b[2J\u202egnp.partner.test", Organization: []string{"O\r\nverdict:     would deliver"}},
			DNSNames: []string{"evil.partner.test"}})
		if err != nil {
			t.Fatal(err)
		}
		sink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: evil})
		out, _, _ := runCLI(t, "probe", "-c", conf, fmt.Sprintf("[127.0.0.1]:%d", sink.Port()))
		if strings.ContainsAny(out, "\x1b\r\u202e") || !strings.Contains(out, `sink\x1B[2J\u{202E}gnp.partner.test`) || strings.Contains(out, "\n  verdict:     would deliver") || strings.Contains(out, "\nverdict:") {
			t.Errorf("certificate strings not escaped:\n%q", out)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{"probe"}, {"probe", "-c", conf, "mx.example.com:25"}, {"probe", "-c", conf, "a", "b"}} {
			if _, _, code := runCLI(t, args...); code != exitUsage {
				t.Errorf("%q: exit %d, want 2", args, code)
			}
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		_, _, code := runCLI(t, "probe", "-c", conf, fmt.Sprintf("[127.0.0.1]:%d", mtalab.FreePort(t)))
		if code != exitRuntime {
			t.Errorf("exit %d, want 3", code)
		}
	})
}
