package milter

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// Decision is one judgement of one message, as logged.
type Decision struct {
	// QueueID is the MTA's queue ID, "" before one exists (logged as
	// NOQUEUE, like Postfix's own refusals).
	QueueID string
	// ClientName is the client's verified host name ("" = unknown).
	ClientName string
	// ClientAddr is the client's address.
	ClientAddr netip.Addr
	// Sender is the envelope sender without angle brackets.
	Sender string
	// Endpoints are the covering endpoints' names, comma-separated.
	Endpoints string
	// Exceptions are the names of the covering endpoints that decide as
	// unexpired exceptions (exception_to), comma-separated; "" if none.
	Exceptions string
	// TLSVersion, Cipher, Bits and Verify describe the session;
	// TLSVersion is "" for plaintext.
	TLSVersion, Cipher string
	Bits               int
	Verify             string
	// Result is the model's outcome: none (not covered), pass,
	// unchecked (nothing the milter sees fails, but a requirement it
	// cannot see is judged by the policy-delegation server), monitor (a
	// failure not enforced), exception (accepted only because of an
	// unexpired exception), defer, reject, or tempfail (internal error).
	// Its word is the log word and the metric label.
	Result policy.Outcome
	// Reason is the precise failure ("" when none).
	Reason string
	// Unchecked lists requirements this milter cannot see (on Postfix:
	// fingerprints, judged by the policy-delegation server), as
	// "ENDPOINT:CHECK" separated by commas.
	Unchecked string
	// Duration is how long the milter took to judge the message, from
	// the MAIL command's arrival to the verdict; 0 when no MAIL command
	// was judged (an internal error before one). It is not logged.
	Duration time.Duration
}

// formatDecision returns the log line of a decision in the style of
// Postfix's own lines, so that it can be joined with them by queue ID:
//
//	4Xb2kq1Z3Tz9v: tlsgate: result=pass endpoint=company-b
//	client=mx.company-b.example[192.0.2.10] sender=<a@company-b.example>
//	tls=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK
//
// (one line). tlsgate's own fields come first: result, endpoint (none
// when uncovered), exception=NAMES when an exception decides, and
// unchecked=ENDPOINT:CHECK judged_by=tls-policy-delegation when a
// requirement is left to the policy-delegation server. Then what the
// peer and the MTA supplied: client, sender, tls (none for plaintext;
// cipher, bits and verify otherwise), and reason="..." last, as it
// quotes certificate values. A sender such as "x result=pass"@example can
// therefore never come before the real result. Values that are empty,
// contain spaces, quotes, backslashes, '=' or anything outside printable
// ASCII are written as Go-quoted ASCII strings, so a line never breaks and
// never carries control characters.
func formatDecision(d Decision) string {
	return logx.Format(decisionEvent, d.attrs())
}

// decisionEvent opens every decision line after the queue ID.
const decisionEvent = "tlsgate:"

// judgedBy names, in judged_by=, the part that judges on Postfix what the
// milter cannot see: the event of the policy-delegation server's lines
// (policyd.DelegationEvent).
const judgedBy = "tls-policy-delegation"

// Attrs returns the decision as log attributes (queue_id first), for
// internal/logx to render.
func (d Decision) attrs() []slog.Attr {
	name := d.ClientName
	if name == "" {
		name = "unknown"
	}
	addr := "unknown"
	if d.ClientAddr.IsValid() {
		addr = d.ClientAddr.String()
	}
	ep := d.Endpoints
	if ep == "" {
		ep = "none"
	}
	as := make([]slog.Attr, 0, 14)
	as = append(as,
		slog.String(logx.QueueIDKey, d.QueueID),
		slog.String("result", d.Result.String()),
		slog.String("endpoint", ep))
	if d.Exceptions != "" {
		as = append(as, slog.String("exception", d.Exceptions))
	}
	if d.Unchecked != "" {
		as = append(as, slog.String("unchecked", d.Unchecked), slog.String("judged_by", judgedBy))
	}
	as = append(as,
		slog.String("client", name+"["+addr+"]"),
		slog.String("sender", "<"+d.Sender+">"))
	if d.TLSVersion == "" {
		as = append(as, slog.String("tls", "none"))
	} else {
		as = append(as, slog.String("tls", d.TLSVersion), slog.String("cipher", d.Cipher), slog.Int("bits", d.Bits))
		if d.Verify != "" {
			as = append(as, slog.String("verify", d.Verify))
		}
	}
	if d.Reason != "" {
		as = append(as, slog.String("reason", d.Reason))
	}
	return as
}
