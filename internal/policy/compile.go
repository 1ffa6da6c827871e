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
)

type compiler struct {
	file     string
	loc      *locator
	problems []*Problem
	warnings []*Problem
	firsts   map[*Endpoint]map[string]int // see firstHost
	mta      MTA                          // the file's mta, once known
	pending  map[*Endpoint]*rawException  // exceptions to resolve once every endpoint is known
}

// rawException is an endpoint's exception_to, reason and expires as read.
type rawException struct {
	to      string
	reason  string
	expires *rawTime
}

// warn records a warning at line.
func (c *compiler) warn(line int, format string, args ...any) {
	c.warnings = append(c.warnings, &Problem{File: c.file, Line: line, Warning: true, Msg: fmt.Sprintf(format, args...)})
}

func (c *compiler) problem(line int, format string, args ...any) {
	c.problems = append(c.problems, &Problem{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (c *compiler) err() error {
	if len(c.problems) == 0 {
		return nil
	}
	return &LoadError{Problems: c.problems}
}

// at reports a problem at the line of a key path.
func (c *compiler) at(path, format string, args ...any) {
	c.problem(c.loc.line(path), format, args...)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (c *compiler) compile(raw *rawFile) *Policy {
	p := &Policy{File: c.file, ix: [2]*index{newIndex(), newIndex()}}
	switch strings.ToLower(raw.MTA) {
	case "postfix":
		p.MTA = Postfix
	case "sendmail":
		p.MTA = Sendmail
	case "":
		c.problem(1, `mta is not set: add mta = "postfix" or mta = "sendmail" at the top (it decides which TLS facts tlsgate can check)`)
	default:
		c.at("mta", `mta = %q: want "postfix" or "sendmail"`, raw.MTA)
	}
	c.mta = p.MTA
	p.PostfixVersion = "3.7"
	if raw.PostfixVersion != "" {
		if !regexp.MustCompile(`^3\.[0-9]+(\.[0-9]+)?$`).MatchString(raw.PostfixVersion) {
			c.at("postfix_version", `postfix_version = %q: want a Postfix 3.x release such as "3.7" (see postconf -h mail_version)`, raw.PostfixVersion)
		} else {
			p.PostfixVersion = raw.PostfixVersion
		}
	}
	c.settings(p, raw)
	names := map[string]int{}
	for i := range raw.Endpoint {
		ep := c.endpoint(&raw.Endpoint[i], i)
		if ep == nil {
			continue
		}
		if j, dup := names[strings.ToLower(ep.Name)]; dup {
			c.at(fmt.Sprintf("endpoint.%d.name", i), "endpoint name %q is already used by the endpoint on line %d; names must be unique", ep.Name, p.Endpoints[j].Line)
			continue
		}
		names[strings.ToLower(ep.Name)] = len(p.Endpoints)
		ep.pos = int32(len(p.Endpoints))
		c.addHosts(p, ep)
		p.Endpoints = append(p.Endpoints, ep)
	}
	c.exceptions(p, names)
	c.watch(p, raw.Watch)
	if p.MTA != "" {
		for i, ep := range p.Endpoints {
			path := endpointPath(p, i)
			c.capabilities(p, ep, path)
			ep.compileAnswers(p)
			c.answerSize(p, ep, path)
			if p.MTA == Postfix {
				c.postfixOutboundHosts(ep)
			}
			if ep.Inbound.RequestCert && slices.ContainsFunc(ep.Hosts, func(h Pattern) bool { return h.Kind == PatternName || h.Kind == PatternSubdomains }) {
				p.askEveryClient = true
			}
		}
	}
	c.precedence(p)
	p.warnings = c.warnings
	return p
}

// addHosts puts ep's patterns in the index of each direction ep defines
// (ep is about to become p.Endpoints[len(p.Endpoints)]). A pattern may
// belong to one endpoint per direction.
func (c *compiler) addHosts(p *Policy, ep *Endpoint) {
	idx := int32(len(p.Endpoints))
	type owner struct {
		ep  int32
		dir string
	}
	for k, h := range ep.Hosts {
		var taken []owner // other endpoints that have h, in direction order
		for _, d := range directions {
			if !ep.Defines(d) {
				continue
			}
			o := p.ix[d].add(h, idx)
			if o == idx {
				text, line := c.firstHost(ep, h)
				c.problem(c.hostLine(ep, k), "host %q is listed twice in endpoint %q (as %q; first as %q on line %d)", h.Text, ep.Name, h.Canonical(), text, line)
				break
			}
			if o >= 0 {
				taken = append(taken, owner{o, d.String()})
			}
		}
		for i := 0; i < len(taken); {
			dirs := []string{taken[i].dir}
			j := i + 1
			for ; j < len(taken) && taken[j].ep == taken[i].ep; j++ {
				dirs = append(dirs, taken[j].dir)
			}
			c.hostTaken(p, ep, k, taken[i].ep, dirs)
			i = j
		}
	}
}

// hostTaken reports that ep's k-th host is already listed by endpoint
// other for the directions dirs.
func (c *compiler) hostTaken(p *Policy, ep *Endpoint, k int, other int32, dirs []string) {
	h, o := ep.Hosts[k], p.Endpoints[other]
	text, line := c.firstHost(o, h)
	c.problem(c.hostLine(ep, k),
		"host %q of endpoint %q is already listed by endpoint %q for %s (as %q; there as %q on line %d); a host may belong to one endpoint per direction",
		h.Text, ep.Name, o.Name, strings.Join(dirs, " and "), h.Canonical(), text, line)
}

// hostLine returns the line of ep's k-th host pattern.
func (c *compiler) hostLine(ep *Endpoint, k int) int {
	return c.loc.valueLine("endpoint."+strconv.Itoa(ep.index)+".hosts", ep.Hosts[k].Text)
}

// firstHost returns the text and line of the first of ep's host patterns
// that is the same pattern as h. The per-endpoint lookup is built on the
// first duplicate only, so a file of many duplicates stays linear.
func (c *compiler) firstHost(ep *Endpoint, h Pattern) (string, int) {
	key := func(p Pattern) string { return strconv.Itoa(int(p.Kind)) + p.Canonical() }
	m := c.firsts[ep]
	if m == nil {
		m = make(map[string]int, len(ep.Hosts))
		for k, q := range ep.Hosts {
			if _, ok := m[key(q)]; !ok {
				m[key(q)] = k
			}
		}
		if c.firsts == nil {
			c.firsts = map[*Endpoint]map[string]int{}
		}
		c.firsts[ep] = m
	}
	k, ok := m[key(h)]
	if !ok {
		return h.Text, 0
	}
	return ep.Hosts[k].Text, c.hostLine(ep, k)
}

// MaxReply is the longest socketmap reply payload ("OK " and the answer)
// that the daemon sends: Postfix's DICT_SOCKMAP_DEF_MAX_REPLY. policyd's
// MaxReply is this constant; its server answers longer replies with
// "TEMP reply too long".
const MaxReply = 100000

// answerSize refuses an endpoint whose compiled outbound answer would not
// fit in a socketmap reply: the daemon would answer TEMP for every lookup
// of it, and mail to it would stay queued.
func (c *compiler) answerSize(p *Policy, ep *Endpoint, path string) {
	text := ep.postfixOut
	if p.MTA == Sendmail {
		text = ep.sendmailOut
	}
	n := len("OK ") + len(text)
	if n <= MaxReply {
		return
	}
	hint := "shorten it"
	if fps := ep.Outbound.Fingerprints; p.MTA == Postfix && len(fps) > 0 {
		per := len(" match=") + len(fps[0].String())
		hint = fmt.Sprintf("pin at most %d fingerprints (each adds %d bytes)", (MaxReply-(n-len(fps)*per))/per, per)
	} else if ep.Outbound.CN != "" && p.MTA == Sendmail {
		hint = "use a shorter cn"
	}
	c.at(path, "endpoint %q outbound: the answer for the MTA would be %d bytes, over the socketmap reply limit of %d (Postfix's), so every lookup would fail with \"TEMP reply too long\" and mail to it would stay queued; %s", ep.Name, n, MaxReply, hint)
}

// endpointPath finds the locator path of the i-th compiled endpoint.
func endpointPath(p *Policy, i int) string {
	return "endpoint." + strconv.Itoa(p.Endpoints[i].index)
}

func (c *compiler) listener(path, key, addr, mode, group string) Listener {
	l := Listener{Addr: addr, Mode: 0o660, Group: group}
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

func (c *compiler) settings(p *Policy, raw *rawFile) {
	s := &p.Settings
	s.Milter = c.listener("milter", "listen", raw.Milter.Listen, raw.Milter.SocketMode, raw.Milter.SocketGroup)
	s.AuthservID = raw.Milter.AuthservID
	if strings.ContainsAny(s.AuthservID, " \t;()\"\\\r\n") {
		c.at("milter.authserv_id", "authserv_id = %q must be a single token such as the host name", s.AuthservID)
	}
	s.Socketmap = c.listener("policyd", "listen", raw.Policyd.Listen, raw.Policyd.SocketMode, raw.Policyd.SocketGroup)
	s.Delegation = c.listener("policyd", "delegation_listen", raw.Policyd.DelegationListen, raw.Policyd.SocketMode, raw.Policyd.SocketGroup)
	s.MapName = raw.Policyd.MapName
	if s.MapName == "" {
		s.MapName = "tlspolicy"
	} else if strings.ContainsAny(s.MapName, " :,\t") {
		c.at("policyd.map_name", "map_name = %q must not contain spaces, colons or commas", s.MapName)
	}
	s.CAStore = raw.Certs.CAStore
	s.CABundle = raw.Certs.CABundle
	s.TrustAnchorDir = raw.Certs.TrustAnchorDir
	s.ServerCert, s.ServerKey = raw.Certs.ServerCert, raw.Certs.ServerKey
	for _, kv := range [...][2]string{{"ca_store", s.CAStore}, {"ca_bundle", s.CABundle}, {"trust_anchor_dir", s.TrustAnchorDir}, {"server_cert", s.ServerCert}, {"server_key", s.ServerKey}} {
		if k, v := kv[0], kv[1]; v != "" && !filepath.IsAbs(v) {
			c.at("certs."+k, "%s = %q must be an absolute path", k, v)
		}
	}
	s.LogLevel = strings.ToLower(raw.Log.Level)
	switch s.LogLevel {
	case "":
		s.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		c.at("log.level", `level = %q: want "debug", "info", "warn" or "error"`, raw.Log.Level)
	}
	s.Syslog = strings.ToLower(raw.Log.Syslog)
	switch s.Syslog {
	case "":
		s.Syslog = "auto"
	case "auto", "yes", "no":
	default:
		c.at("log.syslog", `syslog = %q: want "auto", "yes" or "no"`, raw.Log.Syslog)
	}
	c.discovery(p, raw.Discovery)
	s.MetricsListen = raw.Metrics.Listen
	if s.MetricsListen != "" {
		if err := checkListen("listen", s.MetricsListen); err != nil {
			c.at("metrics.listen", "%v", err)
		}
	}
}

func (c *compiler) endpoint(r *rawEndpoint, i int) *Endpoint {
	path := "endpoint." + strconv.Itoa(i)
	n0 := len(c.problems)
	ep := &Endpoint{Notes: strings.Clone(r.Notes), Line: c.loc.line(path), index: i}
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
	for _, h := range r.Hosts {
		pat, err := ParsePattern(h)
		if err != nil {
			c.problem(c.loc.valueLine(path+".hosts", h), "endpoint %q: %v", label, err)
			continue
		}
		ep.Hosts = append(ep.Hosts, pat)
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
	if r.Inbound != nil {
		ep.defines[Inbound] = true
		ep.Inbound = c.requirements(path+".inbound", label, Inbound, r.Inbound)
	}
	if r.Outbound != nil {
		ep.defines[Outbound] = true
		ep.Outbound = c.requirements(path+".outbound", label, Outbound, r.Outbound)
	}
	c.readException(ep, r, path, label)
	if len(c.problems) > n0 {
		return nil
	}
	return ep
}

// readException checks an endpoint's exception_to, reason and expires as
// written; exceptions resolves the name once every endpoint is known.
func (c *compiler) readException(ep *Endpoint, r *rawEndpoint, path, label string) {
	if r.ExceptionTo == nil {
		if r.Reason != nil || r.Expires != nil {
			key := ".reason"
			if r.Reason == nil {
				key = ".expires"
			}
			c.at(path+key, "endpoint %q: reason and expires belong to an exception; add exception_to = \"NAME\" (the endpoint it relaxes) or remove them", label)
		}
		return
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
	if c.pending == nil {
		c.pending = map[*Endpoint]*rawException{}
	}
	c.pending[ep] = x
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
		d, err := ParseDN(t)
		if err != nil {
			at(key, "%v", err)
		}
		return d
	}
	q.CN = text("cn", r.CN)
	q.IssuerCN = text("issuer_cn", r.IssuerCN)
	q.SubjectDN = dn("subject_dn", r.SubjectDN)
	q.IssuerDN = dn("issuer_dn", r.IssuerDN)
	if q.IssuerDN != nil && q.IssuerCN != "" && foldValue(q.IssuerDN.CN()) != foldValue(q.IssuerCN) {
		at("issuer_cn", "issuer_cn = %q contradicts issuer_dn, whose CN is %q: no certificate can meet both, and trust anchors (Postfix outbound) follow issuer_dn alone; keep one of them", q.IssuerCN, q.IssuerDN.CN())
	}
}

// pins reads fingerprints.
func (c *compiler) pins(q *Requirements, r *rawReq, path, label string, dir Direction) {
	for _, s := range r.Fingerprints {
		f, kind, err := ParseFingerprintKind(s)
		if err != nil {
			c.problem(c.loc.valueLine(path+".fingerprints", s), "endpoint %q %s: %v", label, dir, err)
			continue
		}
		if kind == PinPublicKey && c.mta == Sendmail && dir == Inbound {
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
