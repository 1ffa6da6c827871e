package policyd

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// InboundPolicy answers Postfix policy-delegation requests
// (check_policy_service) with the inbound verdict. Postfix tells milters
// nothing about fingerprints or untrusted certificates, but it sends this
// server ccert_fingerprint and ccert_pubkey_fingerprint (SHA-256 from
// compatibility_level 3.6), also for untrusted certificates; so this is
// where fingerprint pins are enforced on Postfix, and its decision is the
// final word for the session (the milter, which runs at MAIL FROM and
// cannot see fingerprints, logs result=unchecked). Every other requirement
// is judged the same way the milter judges it, with the same outcome
// (policy.Outcome): the same result word and metric label.
type InboundPolicy struct {
	// Policy returns the model in force; nil means none is loaded (every
	// request is then answered with a temporary failure).
	Policy func() *policy.Policy
	// Logger receives one line per decision: at info or warn for a
	// covered session, at debug for an uncovered one (DUNNO; the milter's
	// line already records every message).
	Logger *slog.Logger
	// Now is the clock each request is judged at (an exception applies
	// until it expires). Default: time.Now.
	Now func() time.Time
	// OnDecision, if set, is called once per request (for metrics). It
	// must be fast and must not block.
	OnDecision func(InboundDecision)
}

// InboundDecision is one decision of the policy-delegation server, as
// counted by metrics.
type InboundDecision struct {
	// Result is the outcome; its word is the log word and metric label.
	Result policy.Outcome
	// Endpoints are the covering endpoints' names, comma-separated ("" if
	// none), as in the milter's decisions.
	Endpoints string
	// Duration is how long the request took to judge.
	Duration time.Duration
}

// DelegationEvent is the event that opens the policy-delegation server's
// decision lines ("QID: tls-policy-delegation result=...").
const DelegationEvent = "tls-policy-delegation"

var _ Decider = (*InboundPolicy)(nil)

// Decide implements Decider: DUNNO when nothing refuses (Postfix goes on
// with its other restrictions), "451 4.7.1 ..." or "550 5.7.1 ..." when an
// enforced endpoint fails, "451 4.3.0 ..." when undecidable: the replies
// of policy.Outcome.
func (d *InboundPolicy) Decide(ctx context.Context, req Request) string {
	start := time.Now()
	now := start
	if d.Now != nil {
		now = d.Now()
	}
	p := d.Policy()
	if p == nil {
		return d.decided(ctx, req, start, nil, policy.OutcomeTempFail, "no policy loaded")
	}
	f, fpErr, err := factsFromRequest(req)
	if err != nil {
		return d.decided(ctx, req, start, nil, policy.OutcomeTempFail, err.Error())
	}
	v := p.At(now).Judge(&f)
	if fpErr != nil {
		// A digest that is not SHA-256 can never match a pin. Clients no
		// endpoint covers, and endpoints without pins, do not need it.
		for _, ep := range v.Endpoints {
			if ep.Mode == policy.Enforce && len(ep.Inbound.Fingerprints) > 0 {
				return d.decided(ctx, req, start, &v, policy.OutcomeTempFail, fpErr.Error())
			}
		}
		for i := range v.Failures {
			if v.Failures[i].Check == policy.CheckFingerprint {
				v.Failures[i].Got = fpErr.Error()
			}
		}
	}
	return d.decided(ctx, req, start, &v, v.Outcome(), v.Reason())
}

// decided logs and counts one decision and returns its action.
func (d *InboundPolicy) decided(ctx context.Context, req Request, start time.Time, v *policy.Verdict, o policy.Outcome, reason string) string {
	action := "DUNNO"
	if r := o.Reply(); r.Code != 0 {
		action = r.String()
	}
	d.log(ctx, req, v, o, action, reason)
	if d.OnDecision != nil {
		dec := InboundDecision{Result: o, Duration: time.Since(start)}
		if v != nil {
			dec.Endpoints = v.Names()
		}
		d.OnDecision(dec)
	}
	return action
}

// FactsFromRequest reads the session facts from Postfix policy attributes:
// client_address (no IPv6: prefix), client_name, sender,
// encryption_protocol/cipher/keysize, and the certificate attributes.
// ccert_subject and ccert_issuer are xtext and set only for trusted
// certificates; the fingerprints are set for any certificate.
//
// A fingerprint that is not a SHA-256 digest (an MD5 one, before
// compatibility_level 3.6) is an error here; Decide reads it apart, so
// that it refuses only sessions whose endpoint pins fingerprints.
func FactsFromRequest(req Request) (policy.Facts, error) {
	f, fpErr, err := factsFromRequest(req)
	if err == nil {
		err = fpErr
	}
	return f, err
}

// factsFromRequest reads the facts; a fingerprint it cannot read is
// reported apart (fpErr), with the facts otherwise complete: the
// certificate counts as presented and untrusted.
func factsFromRequest(req Request) (f policy.Facts, fpErr, err error) {
	if a := req["client_address"]; a != "" {
		addr, err := netip.ParseAddr(strings.TrimPrefix(a, "IPv6:"))
		if err != nil {
			return f, nil, &AttrError{Name: "client_address", Value: a}
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
			return f, nil, &AttrError{Name: "encryption_keysize", Value: ks}
		}
		f.Bits = n
	}
	if f.SubjectCN, err = certid.DecodeXtext(req["ccert_subject"]); err != nil {
		return f, nil, &AttrError{Name: "ccert_subject", Value: req["ccert_subject"]}
	}
	if f.IssuerCN, err = certid.DecodeXtext(req["ccert_issuer"]); err != nil {
		return f, nil, &AttrError{Name: "ccert_issuer", Value: req["ccert_issuer"]}
	}
	f.FingerprintsKnown = true
	for _, name := range []string{"ccert_fingerprint", "ccert_pubkey_fingerprint"} {
		v := req[name]
		if v == "" {
			continue
		}
		fp, perr := certid.ParseFingerprint(v)
		if perr != nil {
			// An MD5 digest (compatibility_level < 3.6) can never match
			// a SHA-256 pin: say so, and what fixes it.
			if fpErr == nil {
				fpErr = &AttrError{Name: name, Value: v, Hint: fingerprintHint}
			}
			continue
		}
		f.Fingerprints = append(f.Fingerprints, fp)
	}
	switch {
	case f.TLSVersion == "":
		f.Verify = policy.VerifyNone
	case f.IssuerCN != "" || f.SubjectCN != "":
		f.Verify = policy.VerifyTrusted
	case len(f.Fingerprints) > 0 || fpErr != nil:
		f.Verify = policy.VerifyUntrusted
	default:
		f.Verify = policy.VerifyNone
	}
	return f, fpErr, nil
}

// fingerprintHint is the main.cf setting that makes Postfix send SHA-256
// fingerprints, as tlsgate mta-config prints it.
const fingerprintHint = "Postfix sends no SHA-256 digest: set smtpd_tls_fingerprint_digest = sha256 in main.cf, as tlsgate mta-config prints it (or compatibility_level = 3.6)"

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

// log writes one decision line: tlsgate's own fields (result, endpoint,
// exception, action) first, then what Postfix and the client supplied
// (state, client, sender, TLS facts, fingerprint) and the reason, so
// that nothing a client sends comes before the result:
//
//	NOQUEUE: tls-policy-delegation result=reject endpoint=pinned
//	action="550 5.7.1 TLS required by local policy for this peer" state=RCPT
//	client=unknown[192.0.2.7] sender=<a@pin.example> reason="..."
func (d *InboundPolicy) log(ctx context.Context, req Request, v *policy.Verdict, o policy.Outcome, action, reason string) {
	lvl := slog.LevelInfo
	switch {
	case o == policy.OutcomeNone:
		lvl = slog.LevelDebug
	case o == policy.OutcomeMonitor || o.Refuses():
		lvl = slog.LevelWarn
	}
	if d.Logger == nil || !d.Logger.Enabled(ctx, lvl) {
		return
	}
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs, slog.String(logx.QueueIDKey, req["queue_id"]), slog.String("result", o.String()))
	if v != nil {
		ep := v.Names()
		if ep == "" {
			ep = "none"
		}
		attrs = append(attrs, slog.String("endpoint", ep))
		if x := v.ExceptionNames(); x != "" {
			attrs = append(attrs, slog.String("exception", x))
		}
	}
	attrs = append(attrs,
		slog.String("action", action),
		slog.String("state", req["protocol_state"]),
		slog.String("client", req["client_name"]+"["+req["client_address"]+"]"),
		slog.String("sender", "<"+req["sender"]+">"))
	if tls := req["encryption_protocol"]; tls != "" {
		attrs = append(attrs, slog.String("tls", tls), slog.String("cipher", req["encryption_cipher"]), slog.String("bits", req["encryption_keysize"]))
	}
	if fp := req["ccert_fingerprint"]; fp != "" {
		attrs = append(attrs, slog.String("fingerprint", fp))
	}
	if reason != "" {
		attrs = append(attrs, slog.String("reason", reason))
	}
	d.Logger.LogAttrs(ctx, lvl, DelegationEvent, attrs...)
}
