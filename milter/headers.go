package milter

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/emersion/go-msgauth/authres"
)

// traceToken is the comment after our host name in the by-clause of our
// Received line, "by HOST (tlsgate)". A Received header that carries it
// with our host name is ours; copies that arrive with a message are
// forged and removed.
const traceToken = "(tlsgate)"

// authMethod is the Authentication-Results method tlsgate reports.
const authMethod = "x-tls"

// Length limits for values that reach headers, counted after escaping.
const (
	maxNameText = 64  // host names, HELO names, queue IDs, cipher names
	maxCertText = 100 // certificate common names
)

// headerSpecials are escaped by headerText in addition to bytes outside
// '!'..'~': the xtext specials, and what would end a comment, a quoted
// string, a key=value pair or an Authentication-Results resinfo.
const headerSpecials = `+\()<>";=`

// headerText makes s safe for any position in a header: every byte outside
// '!'..'~' (space, CR, LF, other controls, all non-ASCII) and each of
// + \ ( ) < > " ; = is written as +XX (xtext, as Sendmail writes certificate
// macros), and the result is cut to max bytes, without splitting an escape,
// ending in "..." when cut. An empty s gives "".
func headerText(s string, max int) string {
	const hexdig = "0123456789ABCDEF"
	enc := make([]byte, 0, len(s))
	cuts := make([]int, 0, len(s)) // length of enc after each input byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || strings.IndexByte(headerSpecials, c) >= 0 {
			enc = append(enc, '+', hexdig[c>>4], hexdig[c&15])
		} else {
			enc = append(enc, c)
		}
		cuts = append(cuts, len(enc))
	}
	if max <= 0 || len(enc) <= max {
		return string(enc)
	}
	n := 0
	for _, c := range cuts {
		if c > max-3 {
			break
		}
		n = c
	}
	return string(enc[:n]) + "..."
}

// traceStamp is what the trace headers say about one message.
type traceStamp struct {
	// Host is our MTA's host name (the by-clause).
	Host string
	// AuthservID is the authserv-id of Authentication-Results.
	AuthservID string
	// Helo is the name the client gave in HELO/EHLO ("" if none).
	Helo string
	// ClientName is the client's verified host name ("" if none).
	ClientName string
	// ClientAddr is the client's address.
	ClientAddr netip.Addr
	// QueueID is the MTA's queue ID ("" if not known).
	QueueID string
	// TLSVersion, Cipher and Bits describe the session; TLSVersion is ""
	// for plaintext.
	TLSVersion, Cipher string
	Bits               int
	// Verify is the certificate state word (OK, FAIL, NO, UNVERIFIED, ...).
	Verify string
	// SubjectCN and IssuerCN are the client certificate's names, if known.
	SubjectCN, IssuerCN string
	// Endpoints are the covering endpoints' names, comma-separated ("" if
	// not covered).
	Endpoints string
	// Result is "pass", "fail" or "none" (not covered).
	Result string
	// Monitor is set when the result is a failure that was not enforced.
	Monitor bool
	// Checks are the failed requirements ("validate_cert", "cn", ...).
	Checks []string
	// Date is the time of the stamp.
	Date time.Time
}

// receivedHeader returns the value of our Received trace line (without the
// "Received:" name), folded with "\n\t":
//
//	from client.lab.test (client.lab.test [192.0.2.10])
//		by mx.lab.test (tlsgate) with ESMTPS id 4Xb2kq1Z3Tz9v
//		(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=OK)
//		(subject-cn=client.lab.test issuer-cn=Lab+20Test+20CA)
//		(endpoint=company-b policy=pass);
//		Sat, 28 Nov 2026 15:52:52 +0000
//
// A plaintext session says "(no TLS: plaintext session)" instead of the
// TLS line; an uncovered peer "(endpoint=none policy=none)"; a failure in
// monitor mode "(endpoint=company-c policy=fail mode=monitor
// failed=encryption)". Every value from the client, its certificate or the
// MTA goes through headerText.
func receivedHeader(s *traceStamp) string {
	var lines []string
	helo := headerText(s.Helo, maxNameText)
	if helo == "" {
		helo = "unknown"
	}
	name := headerText(s.ClientName, maxNameText)
	if name == "" {
		name = "unknown"
	}
	addr := "unknown"
	if s.ClientAddr.IsValid() {
		if s.ClientAddr.Is6() {
			addr = "IPv6:" + s.ClientAddr.String()
		} else {
			addr = s.ClientAddr.String()
		}
	}
	lines = append(lines, "from "+helo+" ("+name+" ["+addr+"])")
	by := "by " + headerText(s.Host, maxNameText) + " " + traceToken
	if s.TLSVersion != "" {
		by += " with ESMTPS"
	}
	if s.QueueID != "" {
		by += " id " + headerText(s.QueueID, maxNameText)
	}
	lines = append(lines, by)
	if s.TLSVersion != "" {
		tls := "(version=" + headerText(s.TLSVersion, maxNameText) +
			" cipher=" + headerText(s.Cipher, maxNameText) +
			" bits=" + strconv.Itoa(s.Bits)
		if s.Verify != "" {
			tls += " verify=" + headerText(s.Verify, maxNameText)
		}
		lines = append(lines, tls+")")
		var cert []string
		if s.SubjectCN != "" {
			cert = append(cert, "subject-cn="+headerText(s.SubjectCN, maxCertText))
		}
		if s.IssuerCN != "" {
			cert = append(cert, "issuer-cn="+headerText(s.IssuerCN, maxCertText))
		}
		if len(cert) > 0 {
			lines = append(lines, "("+strings.Join(cert, " ")+")")
		}
	} else {
		lines = append(lines, "(no TLS: plaintext session)")
	}
	ep := headerText(s.Endpoints, 2*maxNameText)
	if ep == "" {
		ep = "none"
	}
	pol := "(endpoint=" + ep + " policy=" + s.Result
	if s.Monitor {
		pol += " mode=monitor"
	}
	if len(s.Checks) > 0 {
		pol += " failed=" + headerText(strings.Join(s.Checks, ","), 2*maxNameText)
	}
	lines = append(lines, pol+");")
	lines = append(lines, s.Date.Format(time.RFC1123Z))
	for i, l := range lines {
		lines[i] = foldTokens(strings.Fields(l), 8, 78)
	}
	return strings.Join(lines, "\n\t")
}

// authResultsHeader returns the value of our Authentication-Results header
// (without the name), written with go-msgauth's authres.Format and folded
// with "\n\t" where a line would exceed 76 characters:
//
//	mx.lab.test; x-tls=pass policy.endpoint=company-b smtp.bits=256
//		smtp.cipher=TLS_AES_256_GCM_SHA384 smtp.version=TLSv1.3
//
// The result is pass, fail or none (not covered by any endpoint); a
// failure names the failed checks in reason= ("validate_cert,cn"), a
// plaintext session has reason="plaintext" and no smtp.* properties.
func authResultsHeader(s *traceStamp) string {
	params := map[string]string{
		"policy.endpoint": headerText(s.Endpoints, 2*maxNameText),
	}
	if s.TLSVersion != "" {
		params["smtp.version"] = headerText(s.TLSVersion, maxNameText)
		params["smtp.cipher"] = headerText(s.Cipher, maxNameText)
		params["smtp.bits"] = strconv.Itoa(s.Bits)
	}
	switch {
	case len(s.Checks) > 0:
		params["reason"] = headerText(strings.Join(s.Checks, ","), 2*maxNameText)
	case s.TLSVersion == "":
		params["reason"] = "plaintext"
	}
	value := authres.ResultValue(s.Result)
	id := headerText(s.AuthservID, maxNameText)
	if id == "" {
		id = "unknown"
	}
	v := authres.Format(id, []authres.Result{&authres.GenericResult{
		Method: authMethod, Value: value, Params: params,
	}})
	return foldTokens(strings.Fields(v), len("Authentication-Results: "), 76)
}

// foldTokens joins space-free tokens with spaces, starting a new line
// (folded with "\n\t") before a token that would pass width.
func foldTokens(tokens []string, first, width int) string {
	var b strings.Builder
	col := first
	for i, t := range tokens {
		if i > 0 {
			if col+1+len(t) > width {
				b.WriteString("\n\t")
				col = 8
			} else {
				b.WriteByte(' ')
				col++
			}
		}
		b.WriteString(t)
		col += len(t)
	}
	return b.String()
}

// unfold turns a header value into one line with single spaces.
func unfold(v string) string {
	return strings.Join(strings.Fields(v), " ")
}

// ForgedReceived reports whether a Received header value claims to be our
// trace line: its by-clause names host followed by our traceToken
// (case-insensitive, any spacing or folding, also "(tlsgate 1.0)").
func ForgedReceived(value, host string) bool {
	if host == "" {
		return false
	}
	v := strings.ToLower(unfold(value))
	for _, h := range []string{strings.ToLower(host), strings.ToLower(headerText(host, maxNameText))} {
		needle := "by " + h
		for off := 0; ; {
			i := strings.Index(v[off:], needle)
			if i < 0 {
				break
			}
			rest := strings.TrimLeft(v[off+i+len(needle):], " ")
			if strings.HasPrefix(rest, "(") {
				rest = strings.TrimLeft(rest[1:], " ")
				if strings.HasPrefix(rest, "tlsgate") {
					return true
				}
			}
			off += i + len(needle)
		}
	}
	return false
}

// authservIDOf extracts the authserv-id of an Authentication-Results header
// value as RFC 8601 reads it: leading whitespace and (nested) comments are
// skipped, a quoted-string is unquoted, a token ends at whitespace, ';' or
// '('. Whitespace is any Unicode space or control character (VT, FF, NBSP,
// NEL, ...), as the readers that trim with unicode.IsSpace see it. It does
// not use authres.Parse, which comments defeat.
func authservIDOf(value string) string {
	v := value
	for {
		v = strings.TrimLeftFunc(v, isAuthSpace)
		if !strings.HasPrefix(v, "(") {
			break
		}
		end := commentEnd(v)
		if end < 0 {
			return ""
		}
		v = v[end:]
	}
	if strings.HasPrefix(v, `"`) {
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			switch v[i] {
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '"':
				return b.String()
			default:
				b.WriteByte(v[i])
			}
		}
		return ""
	}
	end := strings.IndexFunc(v, func(r rune) bool { return r == ';' || r == '(' || isAuthSpace(r) })
	if end < 0 {
		end = len(v)
	}
	return v[:end]
}

// commentEnd returns the index just after the comment v starts with
// (nested comments and quoted-pairs included), or -1 if it never ends.
func commentEnd(v string) int {
	depth := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// withoutComments returns v with every complete comment replaced by sep
// (a space, or nothing), as readers that strip comments before parsing
// see it.
func withoutComments(v, sep string) string {
	var b strings.Builder
	for len(v) > 0 {
		i := strings.IndexByte(v, '(')
		if i < 0 {
			b.WriteString(v)
			break
		}
		b.WriteString(v[:i])
		end := commentEnd(v[i:])
		if end < 0 {
			b.WriteString(v[i:])
			break
		}
		b.WriteString(sep)
		v = v[i+end:]
	}
	return b.String()
}

// msgauthID returns the authserv-id as go-msgauth's authres.Parse reads
// it: the text before the first ';', trimmed of Unicode spaces, up to the
// first Unicode space (without Parse's check of the version after it).
func msgauthID(value string) string {
	id, _, _ := strings.Cut(value, ";")
	id = strings.TrimSpace(id)
	if i := strings.IndexFunc(id, unicode.IsSpace); i > 0 {
		id = id[:i]
	}
	return id
}

// isAuthSpace reports whether r separates tokens for some reader of
// Authentication-Results: Unicode spaces (VT, FF, NBSP, NEL, ...) and
// control characters.
func isAuthSpace(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// sameAuthservID reports whether id would be taken for want: equal
// ignoring case, trailing dots (an absolute domain name) and invisible
// format characters (zero-width spaces, bidi marks, ...).
func sameAuthservID(id, want string) bool {
	norm := func(s string) string {
		s = strings.Map(func(r rune) rune {
			if unicode.Is(unicode.Cf, r) {
				return -1
			}
			return r
		}, s)
		return strings.TrimRight(s, ".")
	}
	a, b := norm(id), norm(want)
	if a == "" {
		// An authserv-id of nothing but dots is compared as written.
		a, b = id, want
	}
	return a != "" && strings.EqualFold(a, b)
}

// forgedAuthResults reports whether an Authentication-Results header value
// carries our authserv-id in any form a reader could take for ours: as
// RFC 8601 reads it (comments skipped), as go-msgauth's authres.Parse
// reads it, and with every comment removed (or replaced by a space); each
// compared with
// sameAuthservID, for the authserv-id as configured and as it is written
// into our header (headerText).
func forgedAuthResults(value, authservID string) bool {
	if authservID == "" {
		return false
	}
	ids := []string{authservIDOf(value), msgauthID(value),
		authservIDOf(withoutComments(value, " ")), authservIDOf(withoutComments(value, ""))}
	for _, want := range []string{authservID, headerText(authservID, maxNameText)} {
		for _, id := range ids {
			if sameAuthservID(id, want) {
				return true
			}
		}
	}
	return false
}
