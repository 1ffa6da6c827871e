package maillog

import (
	"bytes"
	"strconv"
)

// Kind says what a line reports.
type Kind uint8

// Event kinds.
const (
	// None: the line says nothing that matters for TLS.
	None Kind = iota
	// TLS is Postfix's TLS summary ("Trusted TLS connection established
	// from host[addr]: TLSv1.3 with cipher ... (256/256 bits)"), from
	// smtpd, smtp, lmtp or tlsproxy.
	TLS
	// Connect is smtpd's "connect from host[addr]".
	Connect
	// Disconnect is smtpd's "disconnect from host[addr] ehlo=2
	// starttls=1 ..."; StartTLS holds the starttls count.
	Disconnect
	// Client is smtpd's "QID: client=host[addr]".
	Client
	// From is qmgr's "QID: from=<sender>, ..." or Sendmail's
	// "QID: from=<sender>, ..., proto=ESMTPS, ..., relay=host [addr]".
	From
	// Removed is qmgr's "QID: removed".
	Removed
	// Delivery is a delivery attempt over the network: Postfix
	// "QID: to=<rcpt>, relay=host[addr]:port, ..., status=sent (...)" or
	// Sendmail "QID: to=<rcpt>, ..., mailer=esmtp, ..., relay=host [addr],
	// ..., stat=Sent (...)".
	Delivery
	// StartTLS is Sendmail's "STARTTLS=server|client, relay=..., version=...,
	// verify=..., cipher=..., bits=N/M".
	StartTLS
	// Decision is tlsgate's own per-message line ("QID: tlsgate:
	// result=... endpoint=... client=... sender=<...> tls=...").
	Decision
)

// MTA says which program wrote a line.
type MTA uint8

// Writers of lines.
const (
	UnknownMTA MTA = iota
	Postfix
	Sendmail
	Tlsgate
)

// Direction of a session, seen from our MTA.
type Direction uint8

// Directions.
const (
	// Inbound: a client connects to us (smtpd, STARTTLS=server).
	Inbound Direction = iota + 1
	// Outbound: we connect to a server (smtp, STARTTLS=client).
	Outbound
)

// Trust is the certificate state of a TLS session, in Postfix's words.
type Trust uint8

// Trust levels, weakest first.
const (
	// TrustUnknown: not reported.
	TrustUnknown Trust = iota
	// Anonymous: no certificate (inbound: the client sent none or was
	// not asked; Sendmail verify=NO/NOT).
	Anonymous
	// Untrusted: a certificate that does not chain to a trusted CA
	// (Sendmail verify=FAIL and other failures).
	Untrusted
	// Trusted: the chain verified (Sendmail verify=OK); the name was not
	// checked or did not have to match.
	Trusted
	// Verified: the chain verified and the name matched (Postfix client
	// side at the verify/secure levels).
	Verified
)

var trustNames = [...]string{"unknown", "anonymous", "untrusted", "trusted", "verified"}

// String returns anonymous, untrusted, trusted, verified or unknown.
func (t Trust) String() string {
	if int(t) < len(trustNames) {
		return trustNames[t]
	}
	return "unknown"
}

// ParseTrust reads the words String returns.
func ParseTrust(s string) (Trust, bool) {
	for i, n := range trustNames {
		if n == s {
			return Trust(i), true
		}
	}
	return TrustUnknown, false
}

// Peer is a host as Postfix and Sendmail write it: "name[addr]:port",
// "name [addr]", "[addr]" or "name".
type Peer struct {
	Name, Addr []byte
	Port       int
}

// Event is what one line reports. Byte slices point into the line and are
// valid until the next call of [Reader.Next]; an Event is reused.
type Event struct {
	Kind Kind
	MTA  MTA
	Dir  Direction
	// QID is the queue ID, nil for lines without one (NOQUEUE, TLS and
	// STARTTLS lines).
	QID []byte
	// Peer is the other side: the TLS peer, the client (Connect,
	// Disconnect, Client, Sendmail From), the relay (Delivery) or the
	// decision's client.
	Peer Peer
	// TLS facts (TLS, StartTLS, Decision): Trust, Version ("TLSv1.3";
	// empty for a plaintext decision), Cipher, Bits (the bits used).
	Trust   Trust
	Version []byte
	Cipher  []byte
	Bits    int
	// Verify is Sendmail's verify= word, or the decision's verify=.
	Verify []byte
	// Reused marks "TLS connection reused" (Postfix connection cache).
	Reused bool
	// Proxy marks a TLS line written by tlsproxy.
	Proxy bool
	// Addr is the sender (From, Decision) or the recipient (Delivery),
	// without angle brackets.
	Addr []byte
	// ConnUse is Postfix's conn_use= (0 when absent: a new connection).
	ConnUse int
	// Status is the delivery status word in lower case as written by
	// Postfix (sent, deferred, bounced) or Sendmail's stat= first word
	// (Sent, Deferred, ...); Reason is the text in parentheses after it.
	Status, Reason []byte
	// StartTLSCount is the disconnect line's starttls= count: -1 when the
	// line has no command counts (Postfix before 3.0).
	StartTLSCount int
	// Proto is Sendmail's proto= on From (ESMTP, ESMTPS, ...).
	Proto []byte
	// Mailer is Sendmail's mailer= on Delivery.
	Mailer []byte
	// Endpoint and Result are the decision's endpoint= and result=.
	Endpoint, Result []byte
}

func (e *Event) reset() {
	*e = Event{StartTLSCount: -1}
}

var (
	pfxTLS         = []byte(" TLS connection ")
	pfxEstablished = []byte("established ")
	pfxReused      = []byte("reused ")
	pfxTo          = []byte("to ")
	pfxFrom        = []byte("from ")
	pfxWithCipher  = []byte(" with cipher ")
	pfxConnect     = []byte("connect from ")
	pfxDisconnect  = []byte("disconnect from ")
	pfxStartTLSEq  = []byte(" starttls=")
	pfxClientEq    = []byte("client=")
	pfxFromEq      = []byte("from=<")
	pfxToEq        = []byte("to=<")
	pfxRemoved     = []byte("removed")
	pfxSMStartTLS  = []byte("STARTTLS=")
	pfxTlsgate     = []byte("tlsgate: ")
	sepComma       = []byte(", ")
)

// Parse fills ev from l and reports whether the line is an event.
func Parse(l *Line, ev *Event) bool {
	ev.reset()
	msg := l.Msg
	// tlsgate writes "<6>" severity prefixes when journald is not there
	// to strip them.
	if len(msg) > 3 && msg[0] == '<' && msg[2] == '>' && isDigit(msg[1]) {
		msg = msg[3:]
	}
	prog := l.Program
	switch {
	case bytes.IndexByte(prog, '/') >= 0:
		ev.MTA = Postfix
		return parsePostfix(prog[bytes.LastIndexByte(prog, '/')+1:], msg, ev)
	case isSendmail(prog):
		ev.MTA = Sendmail
		return parseSendmail(msg, ev)
	}
	return parseDecision(msg, ev)
}

func isSendmail(p []byte) bool {
	return bytes.Equal(p, []byte("sendmail")) || bytes.Equal(p, []byte("sm-mta")) ||
		bytes.Equal(p, []byte("sm-msp-queue")) || bytes.HasSuffix(p, []byte("/sendmail"))
}

// cutQID splits "QID: rest". A queue ID is 5 to 20 letters and digits.
func cutQID(msg []byte) (qid, rest []byte, ok bool) {
	i := 0
	for i < len(msg) && i <= 20 && isAlnum(msg[i]) {
		i++
	}
	if i < 5 || i+2 > len(msg) || msg[i] != ':' || msg[i+1] != ' ' {
		return nil, msg, false
	}
	return msg[:i], msg[i+2:], true
}

func isAlnum(c byte) bool {
	return isDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
}

func parsePostfix(daemon, msg []byte, ev *Event) bool {
	if len(msg) == 0 {
		return false
	}
	switch string(daemon) { // no allocation: the compiler compares in place
	case "smtpd":
		switch {
		case bytes.HasPrefix(msg, pfxConnect):
			ev.Kind, ev.Dir = Connect, Inbound
			return parsePeer(msg[len(pfxConnect):], ev)
		case bytes.HasPrefix(msg, pfxDisconnect):
			ev.Kind, ev.Dir = Disconnect, Inbound
			rest := msg[len(pfxDisconnect):]
			sp := bytes.IndexByte(rest, ' ')
			peer := rest
			if sp >= 0 {
				peer = rest[:sp]
				if bytes.IndexByte(rest, '=') > 0 {
					ev.StartTLSCount = 0
					if i := bytes.Index(rest, pfxStartTLSEq); i >= 0 {
						n, _ := leadingInt(rest[i+len(pfxStartTLSEq):])
						ev.StartTLSCount = n
					}
				}
			}
			return parsePeer(peer, ev)
		case msg[0] >= 'A' && msg[0] <= 'V' && bytes.Contains(msg[:min(len(msg), 32)], pfxTLS):
			ev.Dir = Inbound
			return parseTLS(msg, ev)
		}
		if qid, rest, ok := cutQID(msg); ok && bytes.HasPrefix(rest, pfxClientEq) {
			ev.Kind, ev.Dir, ev.QID = Client, Inbound, qid
			rest = rest[len(pfxClientEq):]
			if i := bytes.IndexByte(rest, ','); i >= 0 {
				rest = rest[:i]
			}
			return parsePeer(rest, ev)
		}
	case "smtp", "lmtp", "tlsproxy":
		if msg[0] >= 'A' && msg[0] <= 'V' && bytes.Contains(msg[:min(len(msg), 32)], pfxTLS) {
			ev.Dir = Outbound
			ev.Proxy = daemon[0] == 't'
			return parseTLS(msg, ev)
		}
		if daemon[0] == 't' {
			return false
		}
		if qid, rest, ok := cutQID(msg); ok && bytes.HasPrefix(rest, pfxToEq) {
			ev.QID = qid
			return parsePostfixDelivery(rest, ev)
		}
	case "qmgr":
		if qid, rest, ok := cutQID(msg); ok {
			switch {
			case bytes.HasPrefix(rest, pfxFromEq):
				ev.Kind, ev.QID = From, qid
				addr, ok := angle(rest[len(pfxFromEq)-1:])
				ev.Addr = addr
				return ok
			case bytes.Equal(rest, pfxRemoved):
				ev.Kind, ev.QID = Removed, qid
				return true
			}
		}
	}
	return false
}

// parseTLS reads a Postfix TLS summary; ev.Dir is set by the caller.
func parseTLS(msg []byte, ev *Event) bool {
	sp := bytes.IndexByte(msg, ' ')
	if sp < 0 {
		return false
	}
	switch string(msg[:sp]) {
	case "Anonymous":
		ev.Trust = Anonymous
	case "Untrusted":
		ev.Trust = Untrusted
	case "Trusted":
		ev.Trust = Trusted
	case "Verified":
		ev.Trust = Verified
	default:
		return false
	}
	rest := msg[sp:]
	if !bytes.HasPrefix(rest, pfxTLS) {
		return false
	}
	rest = rest[len(pfxTLS):]
	switch {
	case bytes.HasPrefix(rest, pfxEstablished):
		rest = rest[len(pfxEstablished):]
	case bytes.HasPrefix(rest, pfxReused):
		rest = rest[len(pfxReused):]
		ev.Reused = true
	default:
		return false
	}
	switch {
	case bytes.HasPrefix(rest, pfxTo):
		rest = rest[len(pfxTo):]
	case bytes.HasPrefix(rest, pfxFrom):
		rest = rest[len(pfxFrom):]
	default:
		return false
	}
	colon := bytes.Index(rest, []byte(": "))
	if colon < 0 {
		return false
	}
	peer := rest[:colon]
	if sp := bytes.IndexByte(peer, ' '); sp >= 0 { // "host[addr]:port to SNI"
		peer = peer[:sp]
	}
	if !parsePeer(peer, ev) {
		return false
	}
	rest = rest[colon+2:]
	w := bytes.Index(rest, pfxWithCipher)
	if w <= 0 {
		return false
	}
	ev.Version = rest[:w]
	rest = rest[w+len(pfxWithCipher):]
	par := bytes.Index(rest, []byte(" ("))
	if par <= 0 {
		return false
	}
	ev.Cipher = rest[:par]
	bits, ok := leadingInt(rest[par+2:])
	if !ok {
		return false
	}
	ev.Bits = bits
	ev.Kind = TLS
	return true
}

// parsePostfixDelivery reads "to=<rcpt>, [orig_to=<...>, ]relay=...,
// [conn_use=N, ]delay=..., ..., status=WORD (reason)".
func parsePostfixDelivery(rest []byte, ev *Event) bool {
	addr, ok := angle(rest[len(pfxToEq)-1:])
	if !ok {
		return false
	}
	ev.Addr = addr
	ev.Kind, ev.Dir = Delivery, Outbound
	haveRelay := false
	for len(rest) > 0 {
		var field []byte
		if i := bytes.Index(rest, sepComma); i >= 0 {
			field, rest = rest[:i], rest[i+2:]
		} else {
			field, rest = rest, nil
		}
		switch {
		case bytes.HasPrefix(field, []byte("relay=")):
			v := field[len("relay="):]
			if bytes.IndexByte(v, '[') < 0 {
				return false // relay=none, local, virtual: not a network delivery
			}
			if !parsePeer(v, ev) {
				return false
			}
			haveRelay = true
		case bytes.HasPrefix(field, []byte("conn_use=")):
			ev.ConnUse, _ = leadingInt(field[len("conn_use="):])
		case bytes.HasPrefix(field, []byte("status=")):
			// The status is the last field; the reason may contain ", ".
			if len(rest) > 0 {
				field = field[:len(field)+2+len(rest)]
			}
			ev.Status, ev.Reason = statusReason(field[len("status="):])
			rest = nil
		}
	}
	return haveRelay && ev.Status != nil
}

// statusReason splits "sent (250 2.0.0 Ok)" into "sent" and "250 2.0.0 Ok".
func statusReason(v []byte) ([]byte, []byte) {
	sp := bytes.IndexByte(v, ' ')
	if sp < 0 {
		return v, nil
	}
	reason := v[sp+1:]
	if len(reason) >= 2 && reason[0] == '(' && reason[len(reason)-1] == ')' {
		reason = reason[1 : len(reason)-1]
	}
	return v[:sp], reason
}

// parsePeer reads "name[addr]:port", "name[addr]", "name [addr]", "[addr]"
// or a bare name into ev.Peer.
func parsePeer(b []byte, ev *Event) bool {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return false
	}
	open := bytes.IndexByte(b, '[')
	if open < 0 {
		ev.Peer.Name = b
		return validHost(b)
	}
	close := bytes.IndexByte(b[open:], ']')
	if close < 0 {
		return false
	}
	close += open
	name := bytes.TrimRight(b[:open], " ")
	addr := b[open+1 : close]
	rest := b[close+1:]
	// Sendmail writes "[addr] [addr]" for a literal relay: the name is the
	// bracketed literal.
	if len(name) == 0 && len(rest) > 2 && rest[0] == ' ' && rest[1] == '[' {
		name = b[open : close+1]
		return parsePeerAddr(name, rest[1:], ev)
	}
	ev.Peer.Name, ev.Peer.Addr = name, addr
	if len(rest) > 1 && rest[0] == ':' {
		ev.Peer.Port, _ = leadingInt(rest[1:])
	}
	// The name is as the MTA wrote it (tlsgate quotes odd ones); the
	// address must look like one.
	return len(addr) > 0 && validHost(addr)
}

func parsePeerAddr(name, b []byte, ev *Event) bool {
	close := bytes.IndexByte(b, ']')
	if close < 1 {
		return false
	}
	ev.Peer.Name, ev.Peer.Addr = name, b[1:close]
	return validHost(ev.Peer.Addr)
}

// validHost accepts printable ASCII without spaces or brackets.
func validHost(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '<' || c == '>' {
			return false
		}
	}
	return true
}

// angle returns the address inside "<...>" at the start of b.
func angle(b []byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != '<' {
		return nil, false
	}
	end := bytes.IndexByte(b, '>')
	if end < 0 {
		return nil, false
	}
	return b[1:end], true
}

// leadingInt parses the digits at the start of b.
func leadingInt(b []byte) (int, bool) {
	n, i := 0, 0
	for i < len(b) && isDigit(b[i]) && i < 9 {
		n = n*10 + int(b[i]-'0')
		i++
	}
	return n, i > 0
}

func parseSendmail(msg []byte, ev *Event) bool {
	if bytes.HasPrefix(msg, pfxSMStartTLS) {
		return parseSMStartTLS(msg[len(pfxSMStartTLS):], ev)
	}
	qid, rest, ok := cutQID(msg)
	if !ok {
		return false
	}
	ev.QID = qid
	switch {
	case bytes.HasPrefix(rest, pfxFromEq):
		ev.Kind, ev.Dir = From, Inbound
		addr, ok := angle(rest[len(pfxFromEq)-1:])
		if !ok {
			return false
		}
		ev.Addr = addr
		relay := false
		smFields(rest, func(k, v []byte) {
			switch string(k) {
			case "proto":
				ev.Proto = v
			case "relay":
				relay = parsePeer(v, ev)
			}
		})
		return relay
	case bytes.HasPrefix(rest, pfxToEq):
		ev.Kind, ev.Dir = Delivery, Outbound
		addr, ok := angle(rest[len(pfxToEq)-1:])
		if !ok {
			return false
		}
		ev.Addr = addr
		relay := false
		smFields(rest, func(k, v []byte) {
			switch string(k) {
			case "mailer":
				ev.Mailer = v
			case "relay":
				relay = bytes.IndexByte(v, '[') >= 0 && parsePeer(v, ev)
			case "stat":
				ev.Status, ev.Reason = statusReason(v)
			}
		})
		switch string(ev.Mailer) {
		case "local", "prog", "*file*", "*include*":
			return false
		}
		return relay && ev.Status != nil
	}
	return false
}

// smFields calls fn for each "key=value" of a Sendmail line; the stat=
// field runs to the end of the line.
func smFields(b []byte, fn func(k, v []byte)) {
	for len(b) > 0 {
		var field []byte
		if i := bytes.Index(b, sepComma); i >= 0 {
			field, b = b[:i], b[i+2:]
		} else {
			field, b = b, nil
		}
		eq := bytes.IndexByte(field, '=')
		if eq <= 0 {
			continue
		}
		k := field[:eq]
		if string(k) == "stat" && len(b) > 0 {
			field = field[:len(field)+2+len(b)]
			b = nil
		}
		fn(k, field[eq+1:])
	}
}

// parseSMStartTLS reads "server|client, relay=..., version=..., verify=...,
// cipher=..., bits=N/M".
func parseSMStartTLS(b []byte, ev *Event) bool {
	switch {
	case bytes.HasPrefix(b, []byte("server, ")):
		ev.Dir = Inbound
	case bytes.HasPrefix(b, []byte("client, ")):
		ev.Dir = Outbound
	default:
		return false
	}
	relay := false
	smFields(b[len("server, "):], func(k, v []byte) {
		switch string(k) {
		case "relay":
			relay = parsePeer(v, ev)
		case "version":
			ev.Version = v
		case "verify":
			ev.Verify = v
		case "cipher":
			ev.Cipher = v
		case "bits":
			ev.Bits, _ = leadingInt(v)
		}
	})
	if !relay || len(ev.Version) == 0 || len(ev.Verify) == 0 {
		return false
	}
	ev.Trust = SendmailTrust(ev.Verify)
	ev.Kind = StartTLS
	return true
}

// SendmailTrust maps Sendmail's verify= to a trust level: OK is Trusted
// (the chain verified; Sendmail checks names only in rulesets), NO and NOT
// (no certificate, or none asked for) are Anonymous, anything else (FAIL,
// TEMP, PROTOCOL, SOFTWARE, ...) is Untrusted.
func SendmailTrust(v []byte) Trust {
	switch string(v) {
	case "OK":
		return Trusted
	case "NO", "NOT", "NONE":
		return Anonymous
	}
	return Untrusted
}

// parseDecision reads tlsgate's "QID: tlsgate: result=... endpoint=...
// client=... sender=<...> tls=... [cipher=... bits=... verify=...]", its
// fields in any order.
func parseDecision(msg []byte, ev *Event) bool {
	var rest []byte
	if bytes.HasPrefix(msg, []byte("NOQUEUE: ")) {
		rest = msg[len("NOQUEUE: "):]
	} else {
		qid, r, ok := cutQID(msg)
		if !ok {
			return false
		}
		ev.QID, rest = qid, r
	}
	if !bytes.HasPrefix(rest, pfxTlsgate) {
		return false
	}
	rest = rest[len(pfxTlsgate):]
	ev.MTA, ev.Kind, ev.Dir = Tlsgate, Decision, Inbound
	client := false
	for len(rest) > 0 {
		eq := bytes.IndexByte(rest, '=')
		if eq <= 0 {
			break
		}
		k := rest[:eq]
		v, next, ok := decisionValue(rest[eq+1:])
		if !ok {
			return false
		}
		rest = next
		switch string(k) {
		case "client":
			client = parsePeer(v, ev)
		case "sender":
			ev.Addr, _ = angle(v)
		case "endpoint":
			ev.Endpoint = v
		case "tls":
			if string(v) != "none" {
				ev.Version = v
			}
		case "cipher":
			ev.Cipher = v
		case "bits":
			ev.Bits, _ = leadingInt(v)
		case "verify":
			ev.Verify = v
		case "result":
			ev.Result = v
		}
	}
	return client && len(ev.Result) > 0
}

// decisionValue reads one value: a bare token up to the next space, or a
// Go-quoted string (unquoted into a new slice: rare, so the allocation
// does not matter).
func decisionValue(b []byte) (v, rest []byte, ok bool) {
	if len(b) > 0 && b[0] == '"' {
		end := 1
		for end < len(b) && b[end] != '"' {
			if b[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(b) {
			return nil, nil, false
		}
		s, err := strconv.Unquote(string(b[:end+1]))
		if err != nil {
			return nil, nil, false
		}
		rest = bytes.TrimLeft(b[end+1:], " ")
		return []byte(s), rest, true
	}
	sp := bytes.IndexByte(b, ' ')
	if sp < 0 {
		return b, nil, true
	}
	return b[:sp], b[sp+1:], true
}
