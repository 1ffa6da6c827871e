package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// compiler compiles one file: the main file (its settings and
// endpoints) or an included one (endpoints only).
type compiler struct {
	file     string   // the file compiled, named in its problems
	mainFile string   // the main file (the same for the main file)
	main     bool     // file is the main file
	loc      *locator // lines of file, once decoded
	base     int      // lines of the file before the text compiled (a piece)
	ctx      unitCtx  // what the endpoints are checked and rendered against
	problems []*Problem
	warnings []warning
	in       interner // shares equal requirements and answers among the file's endpoints
	u        *unit    // the result
}

// rawException is an endpoint's exception_to, reason and expires as read.
type rawException struct {
	to      string
	reason  string
	expires *rawTime
}

func (c *compiler) problem(line int, format string, args ...any) {
	c.problems = append(c.problems, &Problem{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// at reports a problem at the line of a key path.
func (c *compiler) at(path, format string, args ...any) {
	c.problem(c.loc.line(path), format, args...)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var postfixVersionRE = regexp.MustCompile(`^3\.[0-9]+(\.[0-9]+)?$`)

// compileMain compiles the main file: its settings, the include
// patterns, and its endpoints on those settings.
func compileMain(file string, data content, parseOnly bool) *unit {
	c := &compiler{file: file, mainFile: file, main: true, u: &unit{file: file, key: file, sum: data.sum, main: true}}
	var raw rawFile
	if c.decode(data.data, &raw) {
		u := c.u
		switch strings.ToLower(raw.MTA) {
		case "postfix":
			u.mta = Postfix
		case "sendmail":
			u.mta = Sendmail
		case "":
			c.problem(1, `mta is not set: add mta = "postfix" or mta = "sendmail" at the top (it decides which TLS facts tlsgate can check)`)
		default:
			c.at("mta", `mta = %q: want "postfix" or "sendmail"`, raw.MTA)
		}
		u.postfixVersion = "3.7"
		if raw.PostfixVersion != "" {
			if !postfixVersionRE.MatchString(raw.PostfixVersion) {
				c.at("postfix_version", `postfix_version = %q: want a Postfix 3.x release such as "3.7" (see postconf -h mail_version)`, raw.PostfixVersion)
			} else {
				u.postfixVersion = strings.Clone(raw.PostfixVersion)
			}
		}
		c.settings(&u.settings, &raw)
		c.includes(raw.Include, parseOnly)
		u.lines = c.loc.settingLines()
		c.ctx = u.context()
		c.endpoints(raw.Endpoint)
	}
	return c.finish()
}

// compileIncluded compiles an included file's endpoints on ctx, the main
// file's settings.
func compileIncluded(file, mainFile string, data content, ctx unitCtx) *unit {
	return compilePiece(file, mainFile, file, data, 1, ctx)
}

// compilePiece compiles [[endpoint]] tables that start on line of file (a
// piece of a large file, or all of an included one) on ctx; key names
// the unit.
func compilePiece(file, mainFile, key string, data content, line int, ctx unitCtx) *unit {
	c := &compiler{file: file, mainFile: mainFile, ctx: ctx, base: line - 1, u: &unit{file: file, key: key, sum: data.sum, ctx: ctx}}
	var raw rawFile
	if c.decode(data.data, &raw) {
		c.endpoints(raw.Endpoint)
	}
	return c.finish()
}

// finish hands the file's problems and warnings to its unit.
func (c *compiler) finish() *unit {
	c.u.problems, c.u.warnings = c.problems, c.warnings
	c.u.compact()
	if c.main {
		c.u.ctx = c.u.context()
	}
	return c.u
}

// includes checks the include patterns of the main file. Parse, which
// reads no files, refuses them.
func (c *compiler) includes(pats []string, parseOnly bool) {
	for _, pat := range pats {
		line := c.loc.valueLine("include", pat)
		switch {
		case parseOnly:
			c.problem(line, "include = [%q]: included files are read by Load (tlsgate check, serve, ...), not by Parse", pat)
			continue
		case strings.TrimSpace(pat) == "":
			c.problem(line, `include: an empty pattern; write a path or a glob such as "/etc/tlsgate/conf.d/*.toml"`)
			continue
		case strings.IndexByte(pat, 0) >= 0:
			c.problem(line, "include: NUL byte in %q", pat)
			continue
		}
		if _, err := filepath.Match(pat, ""); err != nil {
			c.problem(line, "include = [%q]: %v; write a path or a glob such as \"/etc/tlsgate/conf.d/*.toml\"", pat, err)
			continue
		}
		c.u.includes = append(c.u.includes, includePattern{pattern: strings.Clone(pat), line: line})
	}
}

// endpoints compiles the file's [[endpoint]] tables on c.ctx: each alone,
// then what the MTA can enforce and the answers it gets.
func (c *compiler) endpoints(raws []rawEndpoint) {
	u := c.u
	for i := range raws {
		ep, lines, x := c.endpoint(&raws[i], i)
		if ep == nil {
			continue
		}
		k := int32(len(u.eps))
		u.eps = append(u.eps, ep)
		u.sizes.count(ep.Hosts)
		if ep.Inbound.RequestCert && !u.asks {
			u.asks = slices.ContainsFunc(ep.Hosts, func(h Pattern) bool { return h.Kind == PatternName || h.Kind == PatternSubdomains })
		}
		u.at = append(u.at, int32(len(u.lineTab)))
		u.lineTab = append(u.lineTab, lines...)
		if x != nil {
			if u.exc == nil {
				u.exc = map[int32]*rawException{}
			}
			u.exc[k] = x
		}
		if c.ctx.mta == "" {
			continue
		}
		path := "endpoint." + strconv.Itoa(i)
		c.capabilities(ep, path)
		ep.compileAnswers(c.ctx, &c.in)
		c.answerSize(ep, path)
		if c.ctx.mta == Postfix {
			c.postfixOutboundHosts(ep, i)
		}
	}
}

// MaxReply is the longest socketmap reply payload ("OK " and the answer)
// that the daemon sends: Postfix's DICT_SOCKMAP_DEF_MAX_REPLY. policyd's
// MaxReply is this constant; its server answers longer replies with
// "TEMP reply too long".
const MaxReply = 100000

// answerSize refuses an endpoint whose compiled outbound answer would not
// fit in a socketmap reply: the daemon would answer TEMP for every lookup
// of it, and mail to it would stay queued.
func (c *compiler) answerSize(ep *Endpoint, path string) {
	text := ep.out
	n := len("OK ") + len(text)
	if n <= MaxReply {
		return
	}
	hint := "shorten it"
	if fps := ep.Outbound.Fingerprints; c.ctx.mta == Postfix && len(fps) > 0 {
		per := len(" match=") + len(fps[0].String())
		hint = fmt.Sprintf("pin at most %d fingerprints (each adds %d bytes)", (MaxReply-(n-len(fps)*per))/per, per)
	} else if ep.Outbound.CN != "" && c.ctx.mta == Sendmail {
		hint = "use a shorter cn"
	}
	c.at(path, "endpoint %q outbound: the answer for the MTA would be %d bytes, over the socketmap reply limit of %d (Postfix's), so every lookup would fail with \"TEMP reply too long\" and mail to it would stay queued; %s", ep.Name, n, MaxReply, hint)
}

func (c *compiler) listener(path, key, addr, mode, group string) Listener {
	l := Listener{Addr: strings.Clone(addr), Mode: 0o660, Group: strings.Clone(group)}
	if addr != "" {
		if err := checkListen(key, addr); err != nil {
			c.at(path+"."+key, "%v", err)
		}
	}
	if mode != "" {
		m, err := strconv.ParseUint(mode, 8, 32)
		if err != nil || m > 0o777 {
			c.at(path+".socket_mode", `socket_mode = %q: want an octal permission such as "0660"`, mode)
		} else {
			l.Mode = os.FileMode(m)
		}
	}
	return l
}

// checkListen validates a listener setting with ParseListen, the rule
// policyd.Listen applies when the daemon opens it, so that check refuses
// exactly what serve would. Port 0 is refused here as well: it picks a
// free port at random, and the MTA could not be told which.
func checkListen(key, addr string) error {
	network, hp, err := ParseListen(addr)
	if err != nil {
		return fmt.Errorf("%s = %q: %v", key, addr, err)
	}
	if network == "tcp" && strings.HasSuffix(hp, ":0") {
		return fmt.Errorf("%s = %q: port 0 picks a random port the MTA cannot know; give a fixed port, like inet:127.0.0.1:10031", key, addr)
	}
	return nil
}

// ParseListen validates a listener spec and returns the Go network
// ("unix" or "tcp") and address for net.Listen. It is the one rule for
// every listener tlsgate opens (policyd.Listen uses it) and for `check`:
//
//   - "unix:/abs/path": an absolute path without NUL bytes (returned
//     cleaned);
//   - "inet:127.0.0.1:PORT" or "inet:[::1]:PORT": a loopback IP literal
//     (no host names, no zones) and a port 0-65535 in plain decimal. The
//     protocols carry no authentication, so a policy that decides TLS must
//     not be reachable from the network.
//
// Its errors say what is wrong and what is accepted, without naming the
// spec; callers add that.
func ParseListen(spec string) (network, addr string, err error) {
	kind, rest, ok := strings.Cut(spec, ":")
	switch {
	case ok && kind == "unix":
		if rest == "" || !filepath.IsAbs(rest) {
			return "", "", errors.New("a unix socket needs an absolute path, like unix:/run/tlsgate/policy.sock")
		}
		if strings.IndexByte(rest, 0) >= 0 {
			return "", "", errors.New("NUL byte in the socket path")
		}
		return "unix", filepath.Clean(rest), nil
	case ok && kind == "inet":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", "", fmt.Errorf("want inet:127.0.0.1:PORT or inet:[::1]:PORT: %v", err)
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.Zone() != "" {
			return "", "", fmt.Errorf("host %q is not an IP address; want inet:127.0.0.1:PORT or inet:[::1]:PORT", host)
		}
		if !ip.IsLoopback() {
			return "", "", fmt.Errorf("%s is not a loopback address; the protocol has no authentication, use a unix socket or loopback", ip)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(p, 10) != port {
			return "", "", fmt.Errorf("bad port %q (want 0-65535)", port)
		}
		return "tcp", net.JoinHostPort(ip.String(), port), nil
	}
	return "", "", errors.New("want unix:/path or inet:HOST:PORT with a loopback IP as HOST (inet:127.0.0.1:PORT, inet:[::1]:PORT)")
}

// settings compiles the daemon sections of the main file. Every string
// kept is a copy: the decoder's strings may share the whole file's text,
// which the policy must not keep alive.
func (c *compiler) settings(s *Settings, raw *rawFile) {
	s.Milter = c.listener("milter", "listen", raw.Milter.Listen, raw.Milter.SocketMode, raw.Milter.SocketGroup)
	s.AuthservID = strings.Clone(raw.Milter.AuthservID)
	if strings.ContainsAny(s.AuthservID, " \t;()\"\\\r\n") {
		c.at("milter.authserv_id", "authserv_id = %q must be a single token such as the host name", s.AuthservID)
	}
	s.Socketmap = c.listener("policyd", "listen", raw.Policyd.Listen, raw.Policyd.SocketMode, raw.Policyd.SocketGroup)
	s.Delegation = c.listener("policyd", "delegation_listen", raw.Policyd.DelegationListen, raw.Policyd.SocketMode, raw.Policyd.SocketGroup)
	s.MapName = strings.Clone(raw.Policyd.MapName)
	if s.MapName == "" {
		s.MapName = "tlspolicy"
	} else if strings.ContainsAny(s.MapName, " :,\t") {
		c.at("policyd.map_name", "map_name = %q must not contain spaces, colons or commas", s.MapName)
	}
	s.CAStore = strings.Clone(raw.Certs.CAStore)
	s.CABundle = strings.Clone(raw.Certs.CABundle)
	s.TrustAnchorDir = strings.Clone(raw.Certs.TrustAnchorDir)
	s.ServerCert, s.ServerKey = strings.Clone(raw.Certs.ServerCert), strings.Clone(raw.Certs.ServerKey)
	for _, kv := range [...][2]string{{"ca_store", s.CAStore}, {"ca_bundle", s.CABundle}, {"trust_anchor_dir", s.TrustAnchorDir}, {"server_cert", s.ServerCert}, {"server_key", s.ServerKey}} {
		if k, v := kv[0], kv[1]; v != "" && !filepath.IsAbs(v) {
			c.at("certs."+k, "%s = %q must be an absolute path", k, v)
		}
	}
	s.LogLevel = strings.Clone(strings.ToLower(raw.Log.Level))
	switch s.LogLevel {
	case "":
		s.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		c.at("log.level", `level = %q: want "debug", "info", "warn" or "error"`, raw.Log.Level)
	}
	s.Syslog = strings.Clone(strings.ToLower(raw.Log.Syslog))
	switch s.Syslog {
	case "":
		s.Syslog = "auto"
	case "auto", "yes", "no":
	default:
		c.at("log.syslog", `syslog = %q: want "auto", "yes" or "no"`, raw.Log.Syslog)
	}
	s.MetricsListen = strings.Clone(raw.Metrics.Listen)
	if s.MetricsListen != "" {
		if err := checkListen("listen", s.MetricsListen); err != nil {
			c.at("metrics.listen", "%v", err)
		}
	}
	c.discovery(s, raw.Discovery)
	c.watch(s, raw.Watch)
}

// endpoint compiles one [[endpoint]] table, the i-th of the file. It
// returns nil if the table has problems, else the endpoint with its lines
// (see unit) and its exception as read, if any.
func (c *compiler) endpoint(r *rawEndpoint, i int) (*Endpoint, []int32, *rawException) {
	path := "endpoint." + strconv.Itoa(i)
	n0 := len(c.problems)
	ep := &Endpoint{Notes: strings.Clone(r.Notes), File: c.file, Line: c.loc.line(path)}
	label := fmt.Sprintf("#%d", i+1)
	switch {
	case r.Name == nil:
		c.at(path, "endpoint has no name: add name = \"...\" (letters, digits, '.', '_' or '-'); it appears in logs and headers")
	case !nameRE.MatchString(*r.Name):
		c.at(path+".name", "name = %q: use letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit", *r.Name)
	default:
		ep.Name = strings.Clone(*r.Name)
		label = ep.Name
	}
	if len(r.Hosts) == 0 {
		c.at(path, "endpoint %q has no hosts: add hosts = [\"example.com\", \".example.com\", \"192.0.2.0/24\"]", label)
	}
	lines := make([]int32, lineHosts, lineHosts+len(r.Hosts))
	hostLines := c.loc.valueLines(path+".hosts", r.Hosts)
	for k, h := range r.Hosts {
		pat, err := ParsePattern(h)
		if err != nil {
			c.problem(int(hostLines[k]), "endpoint %q: %v", label, err)
			continue
		}
		ep.Hosts = append(ep.Hosts, pat)
		lines = append(lines, hostLines[k])
	}
	ep.Mode = Enforce
	if r.Mode != nil {
		switch strings.ToLower(*r.Mode) {
		case "enforce":
		case "monitor":
			ep.Mode = Monitor
		default:
			c.at(path+".mode", `mode = %q: want "enforce" or "monitor"`, *r.Mode)
		}
	}
	ep.Action = Defer
	if r.Action != nil {
		switch strings.ToLower(*r.Action) {
		case "defer":
		case "reject":
			ep.Action = Reject
		default:
			c.at(path+".action", `action = %q: want "defer" (4xx, the sender retries) or "reject" (5xx, the sender bounces)`, *r.Action)
		}
	}
	if r.Inbound == nil && r.Outbound == nil {
		c.at(path, "endpoint %q demands nothing: add an [endpoint.inbound] and/or [endpoint.outbound] table", label)
	}
	ep.Inbound, ep.Outbound = &noRequirements, &noRequirements
	if r.Inbound != nil {
		ep.Inbound = c.in.requirements(c.requirements(path+".inbound", label, Inbound, r.Inbound))
	}
	if r.Outbound != nil {
		ep.Outbound = c.in.requirements(c.requirements(path+".outbound", label, Outbound, r.Outbound))
	}
	x := c.readException(r, path, label)
	if len(c.problems) > n0 {
		return nil, nil, nil
	}
	lines[lineName] = int32(c.loc.line(path + ".name"))
	lines[lineHostsKey] = int32(c.loc.line(path + ".hosts"))
	if x != nil {
		lines[lineExceptionTo] = int32(c.loc.line(path + ".exception_to"))
		lines[lineExpires] = int32(c.loc.line(path + ".expires"))
	}
	return ep, lines, x
}

// readException checks an endpoint's exception_to, reason and expires as
// written; exceptions resolves the name once every endpoint is known.
func (c *compiler) readException(r *rawEndpoint, path, label string) *rawException {
	if r.ExceptionTo == nil {
		if r.Reason != nil || r.Expires != nil {
			key := ".reason"
			if r.Reason == nil {
				key = ".expires"
			}
			c.at(path+key, "endpoint %q: reason and expires belong to an exception; add exception_to = \"NAME\" (the endpoint it relaxes) or remove them", label)
		}
		return nil
	}
	x := &rawException{to: strings.TrimSpace(*r.ExceptionTo), expires: r.Expires}
	if x.to == "" {
		c.at(path+".exception_to", "endpoint %q: exception_to is empty; name the endpoint this one relaxes", label)
	}
	switch {
	case r.Reason == nil:
		c.at(path+".exception_to", "endpoint %q is an exception but has no reason: add reason = \"...\" (why it may demand less, e.g. a change ticket); logs and check show it", label)
	case strings.TrimSpace(*r.Reason) == "":
		c.at(path+".reason", "endpoint %q: reason is empty; say why this endpoint may demand less than %q", label, x.to)
	default:
		x.reason = strings.Clone(strings.TrimSpace(*r.Reason))
	}
	if r.Expires == nil {
		c.at(path+".exception_to", "endpoint %q is an exception but has no expiry: add expires = 2027-01-31 (a date: from that day on %q's rules apply again) or a date and time with its offset", label, x.to)
	} else {
		switch r.Expires.t.Location().String() {
		case "datetime-local", "time-local":
			c.at(path+".expires", "endpoint %q: expires = %s has no date or no offset: write a date (expires = 2027-01-31, the exception ends at 00:00 that day) or a date and time with its offset (2027-01-31T12:00:00+01:00)", label, c.loc.value(path+".expires"))
		}
	}
	x.to = strings.Clone(x.to)
	return x
}

// requirements compiles one [endpoint.inbound] or [endpoint.outbound]
// table: the values as written, then what they imply (a name check needs
// a validated certificate, a certificate check needs TLS).
func (c *compiler) requirements(path, label string, dir Direction, r *rawReq) Requirements {
	var q Requirements
	at := func(key, format string, args ...any) {
		c.at(path+"."+key, "endpoint %q %s: "+format, append([]any{label, dir}, args...)...)
	}
	c.names(&q, r, at)
	c.pins(&q, r, path, label, dir)
	c.certChecks(&q, r, at, dir)
	c.encryption(&q, r, at, dir)
	return q
}

// names reads cn, issuer_cn, subject_dn and issuer_dn. An empty value is
// an error: dropping it would silently demand less.
func (c *compiler) names(q *Requirements, r *rawReq, at func(key, format string, args ...any)) {
	text := func(key string, v *string) string {
		if v == nil {
			return ""
		}
		t := strings.TrimSpace(*v)
		if t == "" {
			at(key, "%s = %q is empty; give the value or remove the key", key, *v)
		}
		return strings.Clone(t)
	}
	dn := func(key string, v *string) DN {
		t := text(key, v)
		if t == "" {
			return nil
		}
		d, err := certid.ParseDN(t)
		if err != nil {
			at(key, "%v", err)
		}
		return d
	}
	q.CN = text("cn", r.CN)
	q.IssuerCN = text("issuer_cn", r.IssuerCN)
	q.SubjectDN = dn("subject_dn", r.SubjectDN)
	q.IssuerDN = dn("issuer_dn", r.IssuerDN)
	if q.IssuerDN != nil && q.IssuerCN != "" && certid.FoldValue(q.IssuerDN.CN()) != certid.FoldValue(q.IssuerCN) {
		at("issuer_cn", "issuer_cn = %q contradicts issuer_dn, whose CN is %q: no certificate can meet both, and trust anchors (Postfix outbound) follow issuer_dn alone; keep one of them", q.IssuerCN, q.IssuerDN.CN())
	}
}

// pins reads fingerprints.
func (c *compiler) pins(q *Requirements, r *rawReq, path, label string, dir Direction) {
	for _, s := range r.Fingerprints {
		f, kind, err := certid.ParseFingerprintKind(s)
		if err != nil {
			c.problem(c.loc.valueLine(path+".fingerprints", s), "endpoint %q %s: %v", label, dir, err)
			continue
		}
		if kind == PinPublicKey && c.ctx.mta == Sendmail && dir == Inbound {
			c.problem(c.loc.valueLine(path+".fingerprints", s), "endpoint %q inbound: Sendmail reports only the digest of the whole client certificate ({cert_fp}), so a public-key pin (sha256//...) can never match; pin the certificate's SHA-256 fingerprint (tlsgate certs show CERT prints it)", label)
			continue
		}
		q.Fingerprints = append(q.Fingerprints, f)
	}
}

// explicit returns a boolean key's value and whether it was written.
func explicit(b *bool) (val, set bool) {
	if b == nil {
		return false, false
	}
	return *b, true
}

// certChecks reads match_cn, validate_cert and request_cert. Name, DN
// and issuer checks need a validated certificate; a pin may stand alone
// (validate_cert = false says so explicitly); inbound, any certificate
// check asks the client for its certificate.
func (c *compiler) certChecks(q *Requirements, r *rawReq, at func(key, format string, args ...any), dir Direction) {
	matchCN, matchSet := explicit(r.MatchCN)
	if q.CN != "" {
		if matchSet && !matchCN {
			at("match_cn", "cn = %q is set but match_cn = false; remove one of them", q.CN)
		}
		matchCN = true
	}
	q.MatchCN = matchCN

	var needsValid []string
	if q.MatchCN {
		needsValid = append(needsValid, "match_cn")
	}
	if q.SubjectDN != nil {
		needsValid = append(needsValid, "subject_dn")
	}
	if q.IssuerDN != nil {
		needsValid = append(needsValid, "issuer_dn")
	}
	if q.IssuerCN != "" {
		needsValid = append(needsValid, "issuer_cn")
	}
	valid, validSet := explicit(r.ValidateCert)
	if validSet && !valid && len(needsValid) > 0 {
		at("validate_cert", "%s need validate_cert = true: names in an unvalidated certificate prove nothing (only fingerprints may pin an unvalidated certificate)", strings.Join(needsValid, ", "))
	}
	if len(needsValid) > 0 || (len(q.Fingerprints) > 0 && !validSet) {
		valid = true
	}
	q.ValidateCert = valid

	if dir == Outbound && r.RequestCert != nil {
		at("request_cert", "request_cert applies to inbound only (a server always presents its certificate)")
	}
	req, reqSet := explicit(r.RequestCert)
	if reqSet && !req && (q.ValidateCert || len(q.Fingerprints) > 0) && dir == Inbound {
		at("request_cert", "request_cert = false, but validate_cert or fingerprints need the client's certificate")
	}
	if dir == Inbound && (req || q.ValidateCert || len(q.Fingerprints) > 0) {
		q.RequestCert = true
	}
}

// encryption reads encryption and min_bits: a certificate check implies
// TLS, and a table must demand something.
func (c *compiler) encryption(q *Requirements, r *rawReq, at func(key, format string, args ...any), dir Direction) {
	enc, encSet := explicit(r.Encryption)
	if encSet && !enc && (q.RequestCert || q.ValidateCert || len(q.Fingerprints) > 0) {
		at("encryption", "encryption = false, but certificate checks need TLS; set encryption = true")
	}
	if r.MinBits != nil {
		q.MinBits = *r.MinBits
		if q.MinBits < 40 || q.MinBits > 256 {
			at("min_bits", "min_bits = %d is out of range: give 40..256 (the cipher strength actually used, e.g. 128 or 256)", q.MinBits)
		}
		if encSet && !enc {
			at("min_bits", "min_bits needs encryption = true")
		} else if !encSet && !q.ValidateCert && len(q.Fingerprints) == 0 {
			at("min_bits", "min_bits needs encryption = true; add it so that a plaintext session cannot pass")
		}
	}
	q.Encryption = enc || q.RequestCert || q.ValidateCert || len(q.Fingerprints) > 0
	if !q.Encryption && !q.Active() && len(r.Fingerprints) == 0 {
		at("encryption", "the %s table demands nothing; set encryption = true or remove the table", dir)
	}
}
