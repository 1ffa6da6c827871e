package policy

import (
	"net/netip"
	"testing"
	"time"
)

// TestOutcomes: one verdict per outcome, and each outcome's reply and
// word (its log word and metric label).
func TestOutcomes(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "defer"
hosts = ["192.0.2.1"]
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "reject"
hosts = ["192.0.2.2"]
action = "reject"
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "watch"
hosts = ["192.0.2.3"]
mode = "monitor"
  [endpoint.inbound]
  encryption = true
[[endpoint]]
name = "pinned"
hosts = ["192.0.2.4"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["sha256:9D:A6:66:00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:56:B3"]
[[endpoint]]
name = "partner"
hosts = ["198.51.100.0/24"]
  [endpoint.inbound]
  validate_cert = true
[[endpoint]]
name = "labs"
hosts = ["198.51.100.64/26"]
exception_to = "partner"
reason = "CHG-4711"
expires = 2027-01-31
  [endpoint.inbound]
  encryption = true
`)
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	tls := func(a string) *Facts {
		return &Facts{ClientAddr: netip.MustParseAddr(a), TLSVersion: "TLSv1.3", Bits: 256, Verify: VerifyNone}
	}
	plain := func(a string) *Facts { return &Facts{ClientAddr: netip.MustParseAddr(a)} }
	// blind is what Postfix's milter sees: no fingerprints.
	blind := func(f *Facts) *Facts { f.FingerprintsKnown = false; return f }
	seeing := func(f *Facts) *Facts { f.FingerprintsKnown = true; return f }
	for _, tc := range []struct {
		name  string
		f     *Facts
		at    time.Time
		want  Outcome
		word  string
		reply string
	}{
		{"uncovered", plain("203.0.113.1"), at, OutcomeNone, "none", ""},
		{"pass", tls("192.0.2.1"), at, OutcomePass, "pass", ""},
		{"monitor", plain("192.0.2.3"), at, OutcomeMonitor, "monitor", ""},
		{"fingerprints left to another part", blind(tls("192.0.2.4")), at, OutcomeUnchecked, "unchecked", ""},
		{"fingerprints seen and missing", seeing(tls("192.0.2.4")), at, OutcomeDefer, "defer", "451 4.7.1 TLS required by local policy for this peer"},
		{"fingerprints unseen but plaintext", blind(plain("192.0.2.4")), at, OutcomeDefer, "defer", "451 4.7.1 TLS required by local policy for this peer"},
		{"exception", tls("198.51.100.70"), at, OutcomeException, "exception", ""},
		{"exception, and its own rules fail", plain("198.51.100.70"), at, OutcomeDefer, "defer", "451 4.7.1 TLS required by local policy for this peer"},
		{"exception ended", tls("198.51.100.70"), time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC), OutcomeDefer, "defer", "451 4.7.1 TLS required by local policy for this peer"},
		{"partner without exception", tls("198.51.100.7"), at, OutcomeDefer, "defer", "451 4.7.1 TLS required by local policy for this peer"},
		{"defer", plain("192.0.2.1"), at, OutcomeDefer, "defer", "451 4.7.1 TLS required by local policy for this peer"},
		{"reject", plain("192.0.2.2"), at, OutcomeReject, "reject", "550 5.7.1 TLS required by local policy for this peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := p.At(tc.at).Judge(tc.f)
			o := v.Outcome()
			if o != tc.want || o.String() != tc.word || o.Reply().String() != tc.reply || o.Refuses() != (tc.reply != "") {
				t.Errorf("outcome %v %q reply %q refuses %v; want %v %q %q (verdict %+v)", o, o, o.Reply(), o.Refuses(), tc.want, tc.word, tc.reply, v)
			}
			if o.Refuses() {
				code, text := v.Reply()
				if r := o.Reply(); code != r.Code || text != r.Message() {
					t.Errorf("Verdict.Reply = %d %q", code, text)
				}
			}
		})
	}
	tf := OutcomeTempFail.Reply()
	if tf.String() != "451 4.3.0 TLS policy check failed temporarily, try again later" || OutcomeTempFail.String() != "tempfail" || !OutcomeTempFail.Refuses() {
		t.Errorf("tempfail: %q %q", tf, OutcomeTempFail)
	}
	if tf.Code != TempFailCode || tf.Message() != TempFailText || OutcomeDefer.Reply().Message() != DeferText || OutcomeReject.Reply().Message() != RejectText {
		t.Error("the reply constants and the outcomes' replies disagree")
	}
}
