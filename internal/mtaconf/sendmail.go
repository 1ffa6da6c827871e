package mtaconf

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Sendmail is what tlsgate needs in sendmail.mc: lines for before the
// MAILER() lines (defines, FEATURE, the milter) and lines for after them
// (cf/m4/cfhead.m4 wants the LOCAL_* rulesets after MAILER()).
//
// The access map stays the administrator's (Debian's mc has
// FEATURE(`access_db', , `skip'), a hash db of /etc/mail/access):
// tlsgate's answers come from a socket map of their own, consulted by
// Local_tls_server, Local_tls_rcpt and Local_srv_features rulesets that
// Sendmail's tls_server, tls_rcpt and srv_features rulesets run first.
// When tlsgate covers the peer its requirement decides (TLS_connection,
// Sendmail's own check of an access-map requirement); when it does not,
// Sendmail's rulesets go on with the access db as before. A lookup that
// fails (tlsgate down, TEMP) refuses the server before MAIL FROM
// (4.3.0) or tempfails the client: the socket map has -T<TMPF> and the
// rulesets test for it. An access map chaining the socket map and the
// hash db in a "sequence" map would lose that: a sequence map has no
// -T<TMPF>, so a failed lookup looks like "not found" to the rulesets and
// a covered peer's mail would go out in clear while tlsgate is down.
type Sendmail struct {
	// Before and After are the .mc lines; Text and ApplySendmail put each
	// part between BlockBegin and BlockEnd lines. Other parts of tlsgate
	// add theirs (a FEATURE before MAILER(), a ruleset after it) here.
	Before, After []string
	// Notes explain choices and what the administrator must do by hand.
	Notes []string
	// Conflicts are parts of the .mc tlsgate cannot merge with by itself;
	// each says what to do. Apply refuses while there are any.
	Conflicts []string
}

// Markers around tlsgate's blocks in sendmail.mc; [ApplySendmail]
// replaces the blocks between them.
const (
	BlockBegin = "dnl tlsgate mta-config: begin"
	BlockEnd   = "dnl tlsgate mta-config: end"
)

// SendmailAfterMailer is the line of Sendmail's output after which the
// lines belong after the MAILER() lines of the .mc file; the lines before
// it belong before them (FEATURE() must precede MAILER()).
const SendmailAfterMailer = "dnl ---- the lines below go after the MAILER() lines of the .mc ----"

// MC is a sendmail.mc file as tlsgate merges with it.
type MC struct {
	// Path is where it was read from.
	Path  string
	lines []string
	// in marks the lines inside tlsgate's own blocks.
	in []bool
	// insert is the first MAILER_DEFINITIONS or MAILER( line outside
	// tlsgate's blocks, or len(lines).
	insert int
}

var (
	mailerLine = regexp.MustCompile("^\\s*(MAILER_DEFINITIONS|MAILER\\()")
	defineLine = regexp.MustCompile("^\\s*define\\(\\s*`(\\w+)'\\s*,\\s*`([^`']*)'\\s*\\)")
)

// ParseMC reads sendmail.mc text. It fails on a tlsgate block that does
// not end.
func ParseMC(path string, b []byte) (*MC, error) {
	text := strings.TrimSuffix(string(b), "\n")
	mc := &MC{Path: path}
	if text != "" {
		mc.lines = strings.Split(text, "\n")
	}
	mc.in = make([]bool, len(mc.lines))
	open := -1
	for i, l := range mc.lines {
		switch {
		case strings.HasPrefix(l, BlockBegin):
			if open >= 0 {
				return nil, fmt.Errorf("%s:%d: tlsgate block inside the one from line %d", path, i+1, open+1)
			}
			open = i
		case strings.HasPrefix(l, BlockEnd):
			if open < 0 {
				return nil, fmt.Errorf("%s:%d: end of a tlsgate block that did not begin", path, i+1)
			}
			for j := open; j <= i; j++ {
				mc.in[j] = true
			}
			open = -1
		}
	}
	if open >= 0 {
		return nil, fmt.Errorf("%s:%d: tlsgate block does not end (no %q line)", path, open+1, BlockEnd)
	}
	mc.insert = len(mc.lines)
	for i, l := range mc.lines {
		if !mc.in[i] && mailerLine.MatchString(l) {
			mc.insert = i
			break
		}
	}
	return mc, nil
}

// own reports the administrator's lines (not tlsgate's, not dnl
// comments) with their index.
func (mc *MC) own(f func(i int, line string)) {
	for i, l := range mc.lines {
		if mc.in[i] || strings.HasPrefix(strings.TrimSpace(l), "dnl") {
			continue
		}
		f(i, l)
	}
}

// define returns the value of the last define(`macro', `value') before
// the MAILER() lines, and whether there is one.
func (mc *MC) define(macro string) (string, bool) {
	val, ok := "", false
	mc.own(func(i int, l string) {
		if m := defineLine.FindStringSubmatch(l); m != nil && m[1] == macro && i < mc.insert {
			val, ok = m[2], true
		}
	})
	return val, ok
}

// hook reports the line of the administrator's own LOCAL_* ruleset hook,
// or 0.
func (mc *MC) hook(name string) int {
	at := 0
	mc.own(func(i int, l string) {
		if at == 0 && strings.HasPrefix(strings.TrimSpace(l), name) {
			at = i + 1
		}
	})
	return at
}

// SendmailFiles say what the .mc lines must account for in the files
// tlsgate names for Sendmail.
type SendmailFiles struct {
	// GroupReadableKey reports that [certs] server_key is readable by its
	// group (Debian's 0640 root:smmsp sendmail-common.key).
	GroupReadableKey bool
}

// StatSendmailFiles looks at the files p names.
func StatSendmailFiles(p *policy.Policy) SendmailFiles {
	var f SendmailFiles
	if k := p.Settings.ServerKey; k != "" {
		if fi, err := os.Stat(k); err == nil && fi.Mode().Perm()&0o040 != 0 {
			f.GroupReadableKey = true
		}
	}
	return f
}

var mapName = regexp.MustCompile(`^[A-Za-z0-9_.]+$`)

// ForSendmail derives the .mc lines p needs, merged with mc (nil when no
// .mc is known: the lines are then written to fit any).
func ForSendmail(p *policy.Policy, f SendmailFiles, mc *MC) (*Sendmail, error) {
	if p.MTA != policy.Sendmail {
		return nil, fmt.Errorf("mtaconf: %s is written for mta = %q, not sendmail", p.File, p.MTA)
	}
	if mc == nil {
		mc = &MC{}
	}
	s := p.Settings
	askCert, outbound := false, false
	for _, ep := range p.Endpoints {
		askCert = askCert || ep.Inbound.RequestCert
		outbound = outbound || ep.Outbound.Active()
	}
	out := &Sendmail{}
	var b []string
	w := func(format string, a ...any) { b = append(b, fmt.Sprintf(format, a...)) }
	define := func(macro, value string) {
		if v, ok := mc.define(macro); ok && v == value {
			out.Notes = append(out.Notes, fmt.Sprintf("%s already defines %s as tlsgate needs it", mc.Path, macro))
			return
		}
		w("define(`%s', `%s')dnl", macro, value)
	}

	// Wiring of an earlier tlsgate outside the markers (pasted by hand)
	// would make a second access map or milter.
	for _, sock := range []string{s.Milter.Addr, s.Socketmap.Addr} {
		if sock == "" {
			continue
		}
		spec := sendmailSocket(sock)
		mc.own(func(i int, l string) {
			if strings.Contains(l, spec) {
				out.Conflicts = append(out.Conflicts, fmt.Sprintf("%s:%d is tlsgate wiring from an earlier install (%s): remove it, and a LOCAL_TRY_TLS ruleset of tlsgate's after the MAILER() lines", mc.Path, i+1, spec))
			}
		})
	}
	w("dnl After any include(`/etc/mail/tls/starttls.m4'), so that these settings win.")
	if s.CABundle != "" {
		w("dnl CA certificates: the bundle root writes from tlsgate's CA store (Sendmail uses only")
		w("dnl files root owns); CACertPath is its directory, which must hold no OpenSSL hash links")
		define("confCACERT_PATH", filepath.Dir(s.CABundle))
		define("confCACERT", s.CABundle)
	}
	if s.ServerCert != "" {
		define("confSERVER_CERT", s.ServerCert)
		define("confSERVER_KEY", s.ServerKey)
		define("confCLIENT_CERT", s.ServerCert)
		define("confCLIENT_KEY", s.ServerKey)
		if f.GroupReadableKey {
			w("dnl the key is readable by its group: Sendmail uses it only with GroupReadableKeyFile")
			w("ifdef(`confDONT_BLAME_SENDMAIL', `ifelse(index(defn(`confDONT_BLAME_SENDMAIL'), `GroupReadableKeyFile'), `-1', `define(`confDONT_BLAME_SENDMAIL', defn(`confDONT_BLAME_SENDMAIL')`,GroupReadableKeyFile')')', `define(`confDONT_BLAME_SENDMAIL', `GroupReadableKeyFile')')dnl")
		}
	}
	w("dnl {cert_fp} carries the SHA-256 digest fingerprints are compared with")
	define("confCERT_FINGERPRINT_ALGORITHM", "sha256")
	policyMap := s.Socketmap.Addr != "" && (outbound || askCert)
	if policyMap && !mapName.MatchString(s.MapName) {
		return nil, fmt.Errorf("mtaconf: [policyd] map_name = %q cannot name a Sendmail map (letters, digits, _ and . only)", s.MapName)
	}
	if policyMap {
		w("dnl tlsgate's rulesets use Sendmail's TLS_connection, which exists only with an access map;")
		w("dnl yours stays as it is, else an optional (empty) one is added")
		w("ifdef(`_ACCESS_TABLE_', `', `FEATURE(`access_db', `hash -o -T<TMPF> /etc/mail/access')')dnl")
	}
	if s.Milter.Addr != "" {
		w("dnl F=T: while the milter is down, SMTP clients get 4xx and retry. tlsgate's milter")
		w("dnl comes first in InputMailFilters, the filters defined before it keep their order")
		w("MAIL_FILTER(`tlsgate', `S=%s, F=T, T=C:30s;S:10s;R:10s;E:30s')dnl", sendmailSocket(s.Milter.Addr))
		w("ifdef(`confINPUT_MAIL_FILTERS', `define(`confINPUT_MAIL_FILTERS', `tlsgate, 'defn(`confINPUT_MAIL_FILTERS'))', `define(`confINPUT_MAIL_FILTERS', `tlsgate')')dnl")
		mc.own(func(i int, l string) {
			if i > mc.insert && strings.Contains(l, "confINPUT_MAIL_FILTERS") {
				out.Conflicts = append(out.Conflicts, fmt.Sprintf("%s:%d sets confINPUT_MAIL_FILTERS after the MAILER() lines, which drops tlsgate's milter: move it before them (tlsgate's block goes right before them)", mc.Path, i+1))
			}
		})
	}
	if d := s.Discovery; d != nil && d.MTASTS && s.Socketmap.Addr != "" {
		w("dnl MTA-STS (RFC 8461): tlsgate answers the map sts with the recipient domain's policy;")
		w("dnl Sendmail then requires a certificate verified by confCACERT (which must hold the")
		w("dnl public CAs MX hosts use), an MX name in the policy's list and a matching subjectAltName.")
		w("dnl tlsgate's endpoints stay in its own map: Sendmail applies both.")
		w("FEATURE(`sts', `socket -d5 -T<TMPF> %s')dnl", sendmailSocket(s.Socketmap.Addr))
		mc.own(func(i int, l string) {
			if strings.Contains(l, "FEATURE(`sts'") && !strings.Contains(l, sendmailSocket(s.Socketmap.Addr)) {
				out.Conflicts = append(out.Conflicts, fmt.Sprintf("%s:%d has its own FEATURE(`sts'), another MTA-STS resolver: Sendmail has one sts map, so remove it (tlsgate answers MTA-STS with [discovery] mta_sts = true) or turn mta_sts off", mc.Path, i+1))
			}
		})
		out.Notes = append(out.Notes, "MTA-STS: Sendmail verifies the MX certificates of MTA-STS domains only against confCACERT, the bundle of tlsgate's CA store: add the public CAs those MX hosts use to the store and write the bundle again (Sendmail then trusts them for client certificates too)")
	}
	out.Before = b
	if !policyMap {
		return out, nil
	}

	b = nil
	w("LOCAL_CONFIG")
	w("# tlsgate's TLS policy, a socket map of its own (the access map stays yours).")
	w("# -T<TMPF>: a lookup that fails returns <TMPF>, which the rulesets below refuse.")
	w("K%s socket -T<TMPF> -d5 %s", s.MapName, sendmailSocket(s.Socketmap.Addr))
	w("LOCAL_RULESETS")
	rules := strings.ReplaceAll(sendmailRules, "tlspolicy", s.MapName)
	var hooks []string
	if askCert {
		b = append(b, strings.Split(strings.ReplaceAll(srvFeaturesRules, "tlspolicy", s.MapName), "\n")...)
		hooks = append(hooks, "LOCAL_SRV_FEATURES tlsgate_srv_features")
	}
	if outbound {
		b = append(b, strings.Split(rules, "\n")...)
		hooks = append(hooks, "LOCAL_TLS_SERVER tlsgate_tls_server", "LOCAL_TLS_RCPT tlsgate_tls_rcpt")
	}
	for _, h := range hooks {
		hook, rs, _ := strings.Cut(h, " ")
		call := []string{
			"R$*\t\t$: $1 $| $>" + rs + " $1",
			"R$* $| $#$*\t$#$2",
			"R$* $| $*\t$: $1",
		}
		if at := mc.hook(hook); at > 0 {
			out.Conflicts = append(out.Conflicts, fmt.Sprintf("%s:%d has its own %s: put these three lines first in it, so that tlsgate's ruleset decides before yours:\n\t%s", mc.Path, at, hook, strings.Join(call, "\n\t")))
			continue
		}
		w("%s", hook)
		b = append(b, call...)
	}
	out.After = b
	if askCert {
		out.Notes = append(out.Notes, "Sendmail asks a client for a certificate as tlsgate's Srv_Features answer says (v for the endpoints that need one), after the features your access db gives it")
	}
	return out, nil
}

// sendmailRules are tlsgate's outbound rulesets. Each asks tlsgate's
// socket map with the first key of Sendmail's own walk, which tlsgate
// answers for the whole walk (internal/policy, SendmailAccess: the
// recipient address by its domain and the patterns above it; the server
// by its name and the patterns above it, then by its address). Found: the
// requirement goes to Sendmail's TLS_connection, whose $#error the hook
// returns; not found: OK, and Sendmail's own ruleset goes on with the
// access db. <TMPF> (tlsgate down or TEMP): 4.3.0 before MAIL FROM.
const sendmailRules = `Stlsgate_tls_server
R$*		$: $1 $| <$(tlspolicy TLS_Srv:$&{server_name} $: ? $)>
R$* $| <?>	$: $1 $| <$(tlspolicy TLS_Srv:$&{server_addr} $: ? $)>
R$* $| <$* <TMPF>>	$#error $@ 4.3.0 $: "451 Temporary system failure: tlsgate TLS policy lookup failed. Please try again later."
R$* $| <?>	$@ OK
R$* $| <$+>	$: $(macro {TLS_Name} $@ $&{server_name} $) $>TLS_connection $1 $| <$2>
Stlsgate_tls_rcpt
R$+		$: <?> $>CanonAddr $1
R<?> $+ < @ $+ . >	<?> $1 <@ $2 >
R<?> $+ < @ $+ >	$: <$(tlspolicy TLS_Rcpt:$1@$2 $: ? $)>
R<?> $*		$@ OK
R<$* <TMPF>>	$#error $@ 4.3.0 $: "451 Temporary system failure: tlsgate TLS policy lookup failed. Please try again later."
R<?>		$@ OK
R<$+>		$: $(macro {TLS_Name} $@ $&{server_name} $) $>TLS_connection $&{verify} $| <$1>`

// srvFeaturesRules answer srv_features: tlsgate's letter (v: ask for a
// certificate, V: do not) by the client's name, address, or the bare key;
// when none is found tlsgate needs every client asked (an endpoint with a
// name pattern needs a certificate), so v. The features the access db
// gives the client come first and tlsgate's letter last, so that it
// decides the certificate request. <TMPF>: $#temp, the session is
// tempfailed.
const srvFeaturesRules = `Stlsgate_srv_features
R$*		$: <$(tlspolicy Srv_Features:$&{client_name} $: ? $)>
R<?>		$: <$(tlspolicy Srv_Features:$&{client_addr} $: ? $)>
R<?>		$: <$(tlspolicy Srv_Features: $: ? $)>
R<$* <TMPF>>	$#temp
R<?>		$: <v>
R<$+>		$: <$1> $| $>D <$&{client_name}> <?> <! "Srv_Features"> <>
R<$+> $| <?>$*	$: <$1> $| $>A <$&{client_addr}> <?> <! "Srv_Features"> <>
R<$+> $| <?>$*	$: <$1> $| <$(access "Srv_Features": $: ? $)>
R<$+> $| <?>$*	$# $1
R<$+> $| <$* <TMPF>>$*	$# $1
R<$+> $| <$+>$*	$# $2 $1`

// Text renders the .mc lines with instructions; from says what they were
// merged with.
func (sm *Sendmail) Text(source, from string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dnl sendmail.mc lines for tlsgate, generated by tlsgate mta-config from %s,\n", source)
	fmt.Fprintf(&b, "dnl merged with %s. tlsgate mta-config --apply puts the first block right\n", from)
	b.WriteString("dnl before the MAILER_DEFINITIONS / MAILER() lines of sendmail.mc and the second at its end\n")
	b.WriteString("dnl (replacing the blocks of an earlier run); then rebuild sendmail.cf (Debian:\n")
	b.WriteString("dnl make -C /etc/mail) and restart Sendmail.\n")
	for _, n := range sm.Notes {
		fmt.Fprintf(&b, "dnl %s\n", n)
	}
	for _, c := range sm.Conflicts {
		fmt.Fprintf(&b, "dnl BY HAND: %s\n", strings.ReplaceAll(c, "\n", "\ndnl "))
	}
	for _, l := range block(sm.Before, "before MAILER") {
		b.WriteString(l + "\n")
	}
	if len(sm.After) > 0 {
		b.WriteString(SendmailAfterMailer + "\n")
		for _, l := range block(sm.After, "after MAILER") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// block puts lines between the markers; no lines make no block.
func block(lines []string, what string) []string {
	if len(lines) == 0 {
		return nil
	}
	out := append([]string{BlockBegin + " (" + what + ")"}, lines...)
	return append(out, BlockEnd)
}

// ApplySendmail returns mc's text with tlsgate's blocks put in: earlier
// blocks are removed, sm.Before goes right before the first
// MAILER_DEFINITIONS or MAILER() line (at the end when there is none),
// sm.After at the end.
func ApplySendmail(mc *MC, sm *Sendmail) []byte {
	before, after := block(sm.Before, "before MAILER"), block(sm.After, "after MAILER")
	var out []string
	for i, l := range mc.lines {
		if i == mc.insert {
			out = append(out, before...)
		}
		if !mc.in[i] {
			out = append(out, l)
		}
	}
	if mc.insert == len(mc.lines) {
		out = append(out, before...)
	}
	out = append(out, after...)
	return []byte(strings.Join(out, "\n") + "\n")
}

// sendmailSocket renders unix:/path or inet:PORT@HOST.
func sendmailSocket(addr string) string {
	if strings.HasPrefix(addr, "unix:") {
		return addr
	}
	hp := strings.TrimPrefix(addr, "inet:")
	i := strings.LastIndexByte(hp, ':')
	host := strings.Trim(hp[:i], "[]")
	if strings.Contains(host, ":") {
		return "inet6:" + hp[i+1:] + "@" + host
	}
	return "inet:" + hp[i+1:] + "@" + host
}
