package policyd

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// InboundPolicy answers Postfix policy-delegation requests
// (check_policy_service) with the inbound verdict. Postfix tells milters
// nothing about fingerprints or untrusted certificates, but it sends this
// server ccert_fingerprint and ccert_pubkey_fingerprint (SHA-256 from
// compatibility_level 3.6), also for untrusted certificates; so this is
// where fingerprint pins are enforced on Postfix. Every other requirement
// is judged the same way the milter judges it.
type InboundPolicy struct {
	// Policy returns the model in force; nil means none is loaded (every
	// request is then answered with a temporary failure).
	Policy func() *policy.Policy
	// Logger receives one line per decision on a covered session.
	Logger *slog.Logger
}

var _ Decider = (*InboundPolicy)(nil)

// Decide implements Decider: DUNNO when nothing refuses (Postfix goes on
// with its other restrictions), "451 4.7.1 ..." or "550 5.7.1 ..." when an
// enforced endpoint fails, "451 4.3.0 ..." when undecidable.
func (d *InboundPolicy) Decide(ctx context.Context, req Request) string {
	p := d.Policy()
	if p == nil {
		d.log(ctx, slog.LevelWarn, req, nil, "tempfail", "no policy loaded")
		return tempFailAction()
	}
	f, err := FactsFromRequest(req)
	if err != nil {
		d.log(ctx, slog.LevelWarn, req, nil, "tempfail", err.Error())
		return tempFailAction()
	}
	v := p.Judge(&f)
	if v.Result == policy.NotCovered {
		return "DUNNO"
	}
	if !v.Refuse {
		lvl, res := slog.LevelInfo, v.Result.String()
		if v.Result == policy.Fail {
			lvl, res = slog.LevelWarn, "fail-monitor"
		}
		d.log(ctx, lvl, req, &v, res, v.Reason())
		return "DUNNO"
	}
	code, text := v.Reply()
	d.log(ctx, slog.LevelWarn, req, &v, "fail", v.Reason())
	return strconv.Itoa(code) + " " + text
}

func tempFailAction() string {
	return strconv.Itoa(policy.TempFailCode) + " " + policy.TempFailText
}

// FactsFromRequest reads the session facts from Postfix policy attributes:
// client_address (no IPv6: prefix), client_name, sender,
// encryption_protocol/cipher/keysize, and the certificate attributes.
// ccert_subject and ccert_issuer are xtext and set only for trusted
// certificates; the fingerprints are set for any certificate.
func FactsFromRequest(req Request) (policy.Facts, error) {
	var f policy.Facts
	if a := req["client_address"]; a != "" {
		addr, err := netip.ParseAddr(strings.TrimPrefix(a, "IPv6:"))
		if err != nil {
			return f, &AttrError{Name: "client_address", Value: a}
		}
		f.ClientAddr = addr
	}
	f.ClientName = req["client_name"]
	f.Sender = req["sender"]
	f.TLSVersion = req["encryption_protocol"]
	f.Cipher = req["encryption_cipher"]
	if ks := req["encryption_keysize"]; ks != "" {
		n, err := strconv.Atoi(ks)
		if err != nil || n < 0 {
			return f, &AttrError{Name: "encryption_keysize", Value: ks}
		}
		f.Bits = n
	}
	var err error
	if f.SubjectCN, err = certid.DecodeXtext(req["ccert_subject"]); err != nil {
		return f, &AttrError{Name: "ccert_subject", Value: req["ccert_subject"]}
	}
	if f.IssuerCN, err = certid.DecodeXtext(req["ccert_issuer"]); err != nil {
		return f, &AttrError{Name: "ccert_issuer", Value: req["ccert_issuer"]}
	}
	f.FingerprintsKnown = true
	for _, name := range []string{"ccert_fingerprint", "ccert_pubkey_fingerprint"} {
		v := req[name]
		if v == "" {
			continue
		}
		fp, err := certid.ParseFingerprint(v)
		if err != nil {
			// An MD5 digest (compatibility_level < 3.6) can never match
			// a SHA-256 pin: say so instead of failing silently.
			return f, &AttrError{Name: name, Value: v, Hint: "set smtpd_tls_fingerprint_digest = sha256 (or compatibility_level = 3.6)"}
		}
		f.Fingerprints = append(f.Fingerprints, fp)
	}
	switch {
	case f.TLSVersion == "":
		f.Verify = policy.VerifyNone
	case f.IssuerCN != "" || f.SubjectCN != "":
		f.Verify = policy.VerifyTrusted
	case len(f.Fingerprints) > 0:
		f.Verify = policy.VerifyUntrusted
	default:
		f.Verify = policy.VerifyNone
	}
	return f, nil
}

// AttrError reports a policy-delegation attribute tlsgate cannot use.
type AttrError struct {
	Name, Value, Hint string
}

func (e *AttrError) Error() string {
	s := "policyd: attribute " + e.Name + "=" + strconv.Quote(e.Value) + " is not valid"
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

func (d *InboundPolicy) log(ctx context.Context, lvl slog.Level, req Request, v *policy.Verdict, result, reason string) {
	if d.Logger == nil || !d.Logger.Enabled(ctx, lvl) {
		return
	}
	qid := req["queue_id"]
	attrs := []slog.Attr{
		slog.String("queue_id", qid),
		slog.String("client", req["client_name"]+"["+req["client_address"]+"]"),
		slog.String("sender", "<"+req["sender"]+">"),
		slog.String("state", req["protocol_state"]),
	}
	if v != nil {
		attrs = append(attrs, slog.String("endpoint", v.Names()))
	}
	attrs = append(attrs, slog.String("result", result))
	if v != nil && v.Refuse {
		attrs = append(attrs, slog.String("action", string(v.Action)))
	}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	if tls := req["encryption_protocol"]; tls != "" {
		attrs = append(attrs, slog.String("tls", tls), slog.String("cipher", req["encryption_cipher"]), slog.String("bits", req["encryption_keysize"]))
	}
	if fp := req["ccert_fingerprint"]; fp != "" {
		attrs = append(attrs, slog.String("fingerprint", fp))
	}
	d.Logger.LogAttrs(ctx, lvl, "tls-policy-delegation", attrs...)
}
