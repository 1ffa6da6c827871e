package bench

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"
)

// MailLogOptions configure GenerateMailLog.
type MailLogOptions struct {
	// Bytes is the size to write; the log ends with the session that
	// crosses it. Required.
	Bytes int64
	// Partners is the number of partner domains sessions are drawn from.
	// Each partner is seen as up to four peers (outbound domain and MX
	// host, inbound client and sender domain). Default 20,000.
	Partners int
	// Seed makes the log reproducible. Default 1.
	Seed uint64
	// Start is the time of the first line. Default 2026-11-01 00:00:00 UTC.
	Start time.Time
	// Span is the time the log covers. Default 30 days.
	Span time.Duration
}

// MailLogStats says what GenerateMailLog wrote.
type MailLogStats struct {
	Bytes, Lines, Sessions int64
}

// GenerateMailLog writes a syslog mail log of a relay that runs Postfix
// and Sendmail side by side, as the posture report reads it: inbound and
// outbound sessions with the partners (Postfix smtpd/smtp and Sendmail
// STARTTLS=server/client lines, the delivery lines they are joined to,
// tlsgate's own milter lines) between the lines that carry no TLS facts
// (cleanup, qmgr, anvil, pickup, lost connections). Each partner has a
// TLS habit of its own (verified, trusted, anonymous, untrusted, plaintext
// or mixed; TLS 1.2 or 1.3) and the time advances evenly over Span.
func GenerateMailLog(w io.Writer, o MailLogOptions) (MailLogStats, error) {
	if o.Bytes <= 0 {
		return MailLogStats{}, fmt.Errorf("bench: GenerateMailLog: Bytes must be positive")
	}
	if o.Partners <= 0 {
		o.Partners = 20000
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	}
	if o.Span <= 0 {
		o.Span = 30 * 24 * time.Hour
	}
	g := &logGen{w: bufio.NewWriterSize(w, 1<<20), rnd: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), o: o}
	// About 230 bytes per line and 6 lines per session: the step spreads
	// the sessions over Span.
	sessions := o.Bytes / (230 * 6)
	if sessions < 1 {
		sessions = 1
	}
	g.step = o.Span / time.Duration(sessions)
	g.now = o.Start
	g.pid = 1000
	for g.st.Bytes < o.Bytes {
		g.session()
		if g.err != nil {
			return g.st, g.err
		}
	}
	return g.st, g.w.Flush()
}

type logGen struct {
	w    *bufio.Writer
	rnd  *rand.Rand
	o    MailLogOptions
	now  time.Time
	step time.Duration
	st   MailLogStats
	err  error
	buf  []byte
	pid  int // the last process ID handed out
}

// nextPID hands out process IDs as the kernel does: ascending, wrapping
// at pid_max, so that no two processes of the log overlap.
func (g *logGen) nextPID() int {
	g.pid += 1 + g.rnd.IntN(4)
	if g.pid >= 4194304 {
		g.pid = 1000
	}
	return g.pid
}

// tlsHabit is a partner's TLS as the MTAs log it.
type tlsHabit struct {
	trust            string // Postfix: Verified, Trusted, Anonymous, Untrusted; "" plaintext
	verify           string // Sendmail's verify=
	version, cipher  string
	bits             int
	plaintextPercent int // of the sessions (mixed partners)
}

var habits = []tlsHabit{
	{trust: "Trusted", verify: "OK", version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256},
	{trust: "Trusted", verify: "OK", version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256},
	{trust: "Trusted", verify: "OK", version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", bits: 128},
	{trust: "Trusted", verify: "OK", version: "TLSv1.2", cipher: "ECDHE-RSA-AES256-GCM-SHA384", bits: 256},
	{trust: "Verified", verify: "OK", version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256},
	{trust: "Verified", verify: "OK", version: "TLSv1.3", cipher: "TLS_CHACHA20_POLY1305_SHA256", bits: 256},
	{trust: "Anonymous", verify: "NO", version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256},
	{trust: "Anonymous", verify: "NO", version: "TLSv1.2", cipher: "ECDHE-RSA-AES128-GCM-SHA256", bits: 128},
	{trust: "Untrusted", verify: "FAIL", version: "TLSv1.2", cipher: "ECDHE-RSA-AES256-GCM-SHA384", bits: 256},
	{trust: "Trusted", verify: "OK", version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", bits: 256, plaintextPercent: 10},
	{},
}

func (g *logGen) line(host, prog string, pid int, format string, args ...any) {
	b := g.buf[:0]
	b = g.now.AppendFormat(b, time.Stamp)
	b = append(b, ' ')
	b = append(b, host...)
	b = append(b, ' ')
	b = append(b, prog...)
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, "]: "...)
	b = fmt.Appendf(b, format, args...)
	b = append(b, '\n')
	g.buf = b
	if g.err == nil {
		var n int
		n, g.err = g.w.Write(b)
		g.st.Bytes += int64(n)
		g.st.Lines++
	}
}

func (g *logGen) qid() string {
	return fmt.Sprintf("%05X%06X", g.rnd.IntN(1<<20), g.rnd.IntN(1<<24))
}

func (g *logGen) tick() {
	g.now = g.now.Add(time.Duration(g.rnd.Int64N(int64(2*g.step) + 1)))
}

// session writes one session with a random partner, and now and then a
// line that carries no TLS facts.
func (g *logGen) session() {
	g.st.Sessions++
	g.tick()
	p := g.rnd.IntN(g.o.Partners)
	h := habits[p%len(habits)]
	if h.plaintextPercent > 0 && g.rnd.IntN(100) < h.plaintextPercent {
		h = tlsHabit{}
	}
	dom := "p" + strconv.Itoa(p) + ".example"
	ip := fmt.Sprintf("10.%d.%d.%d", p>>16&255, p>>8&255, p&255)
	pid := g.nextPID()
	g.pid += 10 // the session's helpers: cleanup, lmtp, delivery agents
	switch r := g.rnd.IntN(100); {
	case r < 40:
		g.postfixIn(dom, ip, pid, h)
	case r < 65:
		g.postfixOut(dom, ip, pid, h)
	case r < 82:
		g.sendmailIn(dom, ip, pid, h)
	default:
		g.sendmailOut(dom, ip, pid, h)
	}
	switch r := g.rnd.IntN(100); {
	case r < 4:
		g.line("mx", "postfix/anvil", 900, "statistics: max connection rate 3/60s for (smtp:%s) at %s", ip, g.now.Format(time.Stamp))
	case r < 8:
		g.line("mx", "postfix/smtpd", g.nextPID(), "lost connection after EHLO from unknown[192.0.2.%d]", g.rnd.IntN(250))
	case r < 11:
		q := g.qid()
		g.line("mx", "postfix/pickup", 901, "%s: uid=0 from=<root>", q)
		g.line("mx", "postfix/qmgr", 902, "%s: removed", q)
	case r < 13:
		g.line("sm", "sendmail", g.nextPID(), "%s: %s [%s] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA", g.qid(), "scanner.invalid", "198.51.100."+strconv.Itoa(g.rnd.IntN(250)))
	}
}

func (g *logGen) postfixIn(dom, ip string, pid int, h tlsHabit) {
	client := "mail." + dom + "[" + ip + "]"
	q := g.qid()
	g.line("mx", "postfix/smtpd", pid, "connect from %s", client)
	starttls := 0
	if h.trust != "" {
		starttls = 1
		g.line("mx", "postfix/smtpd", pid, "%s TLS connection established from %s: %s with cipher %s (%d/%d bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
			h.trust, client, h.version, h.cipher, h.bits, h.bits)
	}
	g.line("mx", "postfix/smtpd", pid, "%s: client=%s", q, client)
	g.line("mx", "postfix/cleanup", pid+7, "%s: message-id=<%d.%s@%s>", q, g.rnd.Uint32(), q, dom)
	tls := "tls=none"
	if h.trust != "" {
		tls = fmt.Sprintf("tls=%s cipher=%s bits=%d verify=%s", h.version, h.cipher, h.bits, h.verify)
	}
	g.line("mx", "tlsgate", 800, "%s: tlsgate: result=none endpoint=none client=%s sender=<user%d@%s> %s", q, client, g.rnd.IntN(50), dom, tls)
	g.line("mx", "postfix/qmgr", 902, "%s: from=<user%d@%s>, size=%d, nrcpt=1 (queue active)", q, g.rnd.IntN(50), dom, 2000+g.rnd.IntN(80000))
	g.line("mx", "postfix/lmtp", pid+9, "%s: to=<staff%d@relay.example>, relay=mailstore[private/dovecot-lmtp], delay=0.%d, delays=0.05/0.01/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)", q, g.rnd.IntN(200), g.rnd.IntN(9)+1)
	g.line("mx", "postfix/qmgr", 902, "%s: removed", q)
	g.line("mx", "postfix/smtpd", pid, "disconnect from %s ehlo=%d starttls=%d mail=1 rcpt=1 data=1 quit=1 commands=%d", client, 1+starttls, starttls, 6+2*starttls)
}

func (g *logGen) postfixOut(dom, ip string, pid int, h tlsHabit) {
	relay := "mx" + strconv.Itoa(g.rnd.IntN(2)+1) + "." + dom + "[" + ip + "]:25"
	q := g.qid()
	g.line("mx", "postfix/qmgr", 902, "%s: from=<staff%d@relay.example>, size=%d, nrcpt=1 (queue active)", q, g.rnd.IntN(200), 2000+g.rnd.IntN(80000))
	if h.trust != "" {
		g.line("mx", "postfix/smtp", pid, "%s TLS connection established to %s: %s with cipher %s (%d/%d bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
			h.trust, relay, h.version, h.cipher, h.bits, h.bits)
	}
	g.line("mx", "postfix/smtp", pid, "%s: to=<user%d@%s>, relay=%s, delay=0.%d, delays=0.05/0.01/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as %s)", q, g.rnd.IntN(50), dom, relay, g.rnd.IntN(9)+1, g.qid())
	g.line("mx", "postfix/qmgr", 902, "%s: removed", q)
}

func (g *logGen) sendmailIn(dom, ip string, pid int, h tlsHabit) {
	relay := "mail." + dom + " [" + ip + "]"
	q := fmt.Sprintf("6B%02dK%03X%06d", g.now.Day(), g.rnd.IntN(4096), pid)
	proto := "ESMTP"
	if h.trust != "" {
		proto = "ESMTPS"
		g.line("sm", "sendmail", pid, "STARTTLS=server, relay=%s, version=%s, verify=%s, cipher=%s, bits=%d/%d", relay, h.version, h.verify, h.cipher, h.bits, h.bits)
	}
	g.line("sm", "sendmail", pid, "%s: from=<user%d@%s>, size=%d, class=0, nrcpts=1, msgid=<%d.%s@%s>, bodytype=8BITMIME, proto=%s, daemon=MTA, relay=%s",
		q, g.rnd.IntN(50), dom, 2000+g.rnd.IntN(80000), g.rnd.Uint32(), q, dom, proto, relay)
	g.line("sm", "sendmail", pid+1, "%s: to=<staff%d@relay.example>, delay=00:00:00, xdelay=00:00:00, mailer=local, pri=30095, dsn=2.0.0, stat=Sent", q, g.rnd.IntN(200))
}

func (g *logGen) sendmailOut(dom, ip string, pid int, h tlsHabit) {
	mx := "mx" + strconv.Itoa(g.rnd.IntN(2)+1) + "." + dom + "."
	q := fmt.Sprintf("6B%02dK%03X%06d", g.now.Day(), g.rnd.IntN(4096), pid)
	if h.trust != "" {
		g.line("sm", "sendmail", pid, "STARTTLS=client, relay=%s, version=%s, verify=%s, cipher=%s, bits=%d/%d", mx, h.version, h.verify, h.cipher, h.bits, h.bits)
	}
	g.line("sm", "sendmail", pid, "%s: to=<user%d@%s>, ctladdr=<staff%d@relay.example> (1000/1000), delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=120442, relay=%s [%s], dsn=2.0.0, stat=Sent (Ok: queued as %s)",
		q, g.rnd.IntN(50), dom, g.rnd.IntN(200), mx, ip, g.qid())
}
