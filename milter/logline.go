package milter

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/tlsgate/tlsgate/internal/logx"
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
	// TLSVersion, Cipher, Bits and Verify describe the session;
	// TLSVersion is "" for plaintext.
	TLSVersion, Cipher string
	Bits               int
	Verify             string
	// Result is pass, defer, reject, monitor (a failure not enforced),
	// none (not covered) or tempfail (internal error).
	Result string
	// Reason is the precise failure ("" when none).
	Reason string
	// Unchecked lists requirements this milter cannot see (on Postfix:
	// fingerprints, judged by the policy-delegation server).
	Unchecked string
	// Duration is how long the milter took to judge the message, from
	// the MAIL command's arrival to the verdict; 0 when no MAIL command
	// was judged (an internal error before one). It is not logged.
	Duration time.Duration
}

// formatDecision returns the log line of a decision in the style of
// Postfix's own lines, so that it can be joined with them by queue ID:
//
//	4Xb2kq1Z3Tz9v: tlsgate: client=mx.company-b.example[192.0.2.10]
//	sender=<a@company-b.example> endpoint=company-b tls=TLSv1.3
//	cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK result=pass
//
// (one line). A plaintext session has tls=none and no cipher, bits or
// verify; an uncovered one endpoint=none; reason="..." and unchecked="..."
// follow the result when set. Values that are empty, contain spaces,
// quotes, backslashes, '=' or anything outside printable ASCII are written
// as Go-quoted ASCII strings, so a line never breaks and never carries
// control characters.
func formatDecision(d Decision) string {
	return logx.Format(decisionEvent, d.attrs())
}

// decisionEvent opens every decision line after the queue ID.
const decisionEvent = "tlsgate:"

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
	as := make([]slog.Attr, 0, 12)
	as = append(as,
		slog.String(logx.QueueIDKey, d.QueueID),
		slog.String("client", name+"["+addr+"]"),
		slog.String("sender", "<"+d.Sender+">"),
		slog.String("endpoint", ep))
	if d.TLSVersion == "" {
		as = append(as, slog.String("tls", "none"))
	} else {
		as = append(as, slog.String("tls", d.TLSVersion), slog.String("cipher", d.Cipher), slog.Int("bits", d.Bits))
		if d.Verify != "" {
			as = append(as, slog.String("verify", d.Verify))
		}
	}
	as = append(as, slog.String("result", d.Result))
	if d.Reason != "" {
		as = append(as, slog.String("reason", d.Reason))
	}
	if d.Unchecked != "" {
		as = append(as, slog.String("unchecked", d.Unchecked))
	}
	return as
}
