package policyd

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
)

const inboundConf = `mta = "postfix"
[policyd]
delegation_listen = "inet:127.0.0.1:10032"
[[endpoint]]
name = "pinned"
hosts = ["pin.example"]
action = "reject"
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["9DA666000102030405060708090A0B0C0D0E0F101112131415161718191A56B3"]
[[endpoint]]
name = "trusted"
hosts = ["127.0.0.0/8"]
  [endpoint.inbound]
  cn = "client.lab.test"
  issuer_cn = "Lab Test CA"
[[endpoint]]
name = "watch"
hosts = ["watch.example"]
mode = "monitor"
  [endpoint.inbound]
  encryption = true
`

// Attribute sets as the lab saw Postfix 3.7 send them (real-mta-lab.md, D).
func req(kv ...string) Request {
	r := Request{"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": "192.0.2.7", "client_name": "unknown",
		"encryption_protocol": "", "encryption_cipher": "", "encryption_keysize": "0"}
	for i := 0; i < len(kv); i += 2 {
		r[kv[i]] = kv[i+1]
	}
	return r
}

func TestInboundPolicyDecide(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte(inboundConf))
	if err != nil {
		t.Fatal(err)
	}
	d := &InboundPolicy{Policy: func() *policy.Policy { return p }}
	const pin = "9D:A6:66:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:56:B3"
	other := strings.Replace(pin, "9D", "48", 1)
	tls := []string{"encryption_protocol", "TLSv1.3", "encryption_cipher", "TLS_AES_256_GCM_SHA384", "encryption_keysize", "256"}
	const md5 = "D1:8A:D0:34:DD:CD:0B:D9:D7:F4:CE:8A:62:96:14:9C"
	tests := []struct {
		name string
		r    Request
		want string
	}{
		{"uncovered", req("sender", "a@other.example"), "DUNNO"},
		{"pinned plaintext", req("sender", "a@pin.example"), "550 5.7.1 TLS required by local policy for this peer"},
		{"pinned self-signed ok", req(append(tls, "sender", "a@pin.example", "ccert_fingerprint", pin, "ccert_pubkey_fingerprint", other)...), "DUNNO"},
		{"pinned by pubkey", req(append(tls, "sender", "a@pin.example", "ccert_fingerprint", other, "ccert_pubkey_fingerprint", pin)...), "DUNNO"},
		{"pinned wrong cert", req(append(tls, "sender", "a@pin.example", "ccert_fingerprint", strings.Replace(pin, "9D", "9E", 1))...), "550 5.7.1 TLS required by local policy for this peer"},
		{"pinned no cert", req(append(tls, "sender", "a@pin.example")...), "550 5.7.1 TLS required by local policy for this peer"},
		{"trusted ok", req(append(tls, "client_address", "127.0.0.1", "ccert_subject", "client.lab.test", "ccert_issuer", "Lab+20Test+20CA", "ccert_fingerprint", pin)...), "DUNNO"},
		{"trusted wrong issuer", req(append(tls, "client_address", "127.0.0.1", "ccert_subject", "client.lab.test", "ccert_issuer", "Other+20CA", "ccert_fingerprint", pin)...), "451 4.7.1 TLS required by local policy for this peer"},
		{"untrusted", req(append(tls, "client_address", "127.0.0.1", "ccert_fingerprint", pin)...), "451 4.7.1 TLS required by local policy for this peer"},
		{"monitor", req("sender", "x@watch.example"), "DUNNO"},
		{"bad address", req("client_address", "not-an-ip", "sender", "a@pin.example"), "451 4.3.0 TLS policy check failed temporarily, try again later"},
		{"md5 fingerprint", req(append(tls, "sender", "a@pin.example", "ccert_fingerprint", md5)...), "451 4.3.0 TLS policy check failed temporarily, try again later"},
		// Clients no endpoint covers, and endpoints without pins, do not
		// need the fingerprint.
		{"md5 fingerprint uncovered", req(append(tls, "sender", "a@other.example", "ccert_fingerprint", md5)...), "DUNNO"},
		{"md5 fingerprint unpinned", req(append(tls, "client_address", "127.0.0.1", "ccert_subject", "client.lab.test", "ccert_issuer", "Lab+20Test+20CA", "ccert_fingerprint", md5)...), "DUNNO"},
		{"md5 fingerprint unpinned untrusted", req(append(tls, "client_address", "127.0.0.1", "ccert_fingerprint", md5)...), "451 4.7.1 TLS required by local policy for this peer"},
		{"md5 fingerprint monitor", req(append(tls, "sender", "x@watch.example", "ccert_fingerprint", md5)...), "DUNNO"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := d.Decide(context.Background(), tc.r); got != tc.want {
				t.Errorf("Decide = %q, want %q", got, tc.want)
			}
		})
	}
	none := &InboundPolicy{Policy: func() *policy.Policy { return nil }}
	if got := none.Decide(context.Background(), req()); !strings.HasPrefix(got, "451 4.3.0") {
		t.Errorf("no policy: %q", got)
	}
}

func TestTLSMapLookup(t *testing.T) {
	maps := map[string]*TLSMap{}
	for _, mta := range []string{"postfix", "sendmail"} {
		p, err := policy.Parse("t.toml", []byte(`mta = "`+mta+`"
[[endpoint]]
name = "b"
hosts = ["b.example"]
  [endpoint.outbound]
  encryption = true
`))
		if err != nil {
			t.Fatal(err)
		}
		maps[mta] = &TLSMap{Policy: func() *policy.Policy { return p }}
	}
	ctx := context.Background()
	for _, tc := range []struct{ mta, name, key, want string }{
		{"postfix", "tlspolicy", "B.example", "OK encrypt"},
		{"postfix", "tlspolicy", "[b.example]:25", "OK encrypt"},
		{"postfix", "tlspolicy", "c.example", "NOTFOUND "},
		{"postfix", "tlspolicy", "[b.example", `TEMP cannot decide key: policy: next hop "[b.example": missing ']'`},
		{"postfix", "access", "tls_rcpt:u@b.example", "TEMP unknown map access; this tlsgate serves tlspolicy"},
		// Sendmail asks on the map name of its K line: map_name (tlsgate's
		// own socket map) or "access" (an access map served by tlsgate).
		{"sendmail", "tlspolicy", "tls_rcpt:u@b.example", "OK TEMP+ENCR:40"},
		{"sendmail", "access", "tls_rcpt:u@b.example", "OK TEMP+ENCR:40"},
		{"sendmail", "tlspolicy", "connect:127.0.0.1", "NOTFOUND "},
		{"sendmail", "other", "tls_rcpt:u@b.example", "TEMP unknown map other; this tlsgate serves tlspolicy"},
	} {
		if got := maps[tc.mta].Lookup(ctx, tc.name, tc.key).String(); got != tc.want {
			t.Errorf("%s: Lookup(%s, %s) = %q, want %q", tc.mta, tc.name, tc.key, got, tc.want)
		}
	}
	none := &TLSMap{Policy: func() *policy.Policy { return nil }}
	if got := none.Lookup(ctx, "tlspolicy", "b.example"); got.Status != StatusTemp {
		t.Errorf("no policy: %v", got)
	}
}

// TestTLSMapLongHostileKey: a 10 KB key of control bytes (4 bytes each
// once escaped) gets a TEMP reply and a log line of bounded size, both
// naming only the first 200 bytes of the key.
func TestTLSMapLongHostileKey(t *testing.T) {
	p, err := policy.Parse("t.toml", []byte("mta = \"postfix\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logs logBuf
	m := &TLSMap{Policy: func() *policy.Policy { return p }, Logger: slog.New(logx.NewWriter(&logs, slog.LevelDebug))}
	key := "[" + strings.Repeat("\x01\x1b", 5000)
	r := m.Lookup(context.Background(), "tlspolicy", key)
	if r.Status != StatusTemp || len(r.Data) > 300 || !strings.Contains(r.Data, "bytes)") {
		t.Fatalf("reply %s (%d bytes), want TEMP cut to about 200 bytes", r.Status, len(r.Data))
	}
	line := logs.String()
	if len(line) > 2000 || strings.Count(line, "\n") != 1 || !strings.Contains(line, "(10001 bytes)") {
		t.Fatalf("log line of %d bytes: %.300q", len(line), line)
	}
	r = m.Lookup(context.Background(), strings.Repeat("m", 10000), "b.example")
	if r.Status != StatusTemp || len(r.Data) > 300 {
		t.Fatalf("unknown long map name: %s (%d bytes)", r.Status, len(r.Data))
	}
}
