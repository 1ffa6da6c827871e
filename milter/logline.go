package milter

import (
	"net/netip"
	"strconv"
	"strings"
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
}

// FormatDecision returns the log line of a decision in the style of
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
func FormatDecision(d Decision) string {
	var b strings.Builder
	q := d.QueueID
	if q == "" {
		q = "NOQUEUE"
	}
	b.WriteString(logValue(q))
	b.WriteString(": tlsgate: client=")
	name := d.ClientName
	if name == "" {
		name = "unknown"
	}
	addr := "unknown"
	if d.ClientAddr.IsValid() {
		addr = d.ClientAddr.String()
	}
	b.WriteString(logValue(name + "[" + addr + "]"))
	b.WriteString(" sender=")
	b.WriteString(logValue("<" + d.Sender + ">"))
	ep := d.Endpoints
	if ep == "" {
		ep = "none"
	}
	b.WriteString(" endpoint=")
	b.WriteString(logValue(ep))
	if d.TLSVersion == "" {
		b.WriteString(" tls=none")
	} else {
		b.WriteString(" tls=")
		b.WriteString(logValue(d.TLSVersion))
		b.WriteString(" cipher=")
		b.WriteString(logValue(d.Cipher))
		b.WriteString(" bits=")
		b.WriteString(strconv.Itoa(d.Bits))
		if d.Verify != "" {
			b.WriteString(" verify=")
			b.WriteString(logValue(d.Verify))
		}
	}
	b.WriteString(" result=")
	b.WriteString(logValue(d.Result))
	if d.Reason != "" {
		b.WriteString(" reason=")
		b.WriteString(strconv.QuoteToASCII(d.Reason))
	}
	if d.Unchecked != "" {
		b.WriteString(" unchecked=")
		b.WriteString(strconv.QuoteToASCII(d.Unchecked))
	}
	return b.String()
}

// logValue writes v bare when it is safe, else Go-quoted in ASCII.
func logValue(v string) string {
	if v == "" {
		return `""`
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c > '~' || c == '"' || c == '\\' || c == '=' {
			return strconv.QuoteToASCII(v)
		}
	}
	return v
}
