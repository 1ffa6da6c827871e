package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/discovery"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/policyd"
)

const queryHelp = `
Outbound: print the socketmap reply the policy daemon sends for KEY, as
Postfix or Sendmail would receive it ("OK secure match=...", "NOTFOUND ",
"TEMP ..."), on the first line of standard output. KEY is a next hop as the
MTA sends it: example.com, .example.com, [mx.example.com]:587,
[mail.isp.example]:submission, [192.0.2.1], [IPv6:2001:db8::1]; for
Sendmail an access-map key. The Sendmail keys answered are:
  tls_rcpt:USER@DOMAIN   the recipient address, which Sendmail asks first,
                         by its domain; tls_rcpt:USER@ is NOTFOUND;
                         tls_rcpt:DOMAIN and its parent domains, which
                         Sendmail asks only when the address was not found,
                         by the .domain patterns above DOMAIN
  tls_srv:HOST           the server's name or [address]
  srv_features:CLIENT    the client's name or address, and the bare
                         srv_features: key
Any other tag is NOTFOUND. The tag is recognised in any case (TLS_Rcpt:)
and a tagged key is lower-cased, as Sendmail does before asking.

Then, on standard error, lines starting with "# " say what the MTA will
actually do: the endpoint that answered (an exception, with the endpoint it
relaxes and its end; "monitor mode" for an endpoint in monitor mode, whose
rules the MTA does not get), and, for a NOTFOUND key, the rest of the
MTA's lookup walk and what is in effect:
  # NOTFOUND; Postfix then asks .company-b.example -> OK verify ... (endpoint
  #   company-b); in effect: verify ...
Postfix walks the parent domains of a plain next-hop name; Sendmail walks a
recipient's address, domain and parent domains (tls_rcpt:), a server's or
client's name, parent domains and networks (tls_srv:, srv_features:).

With --socket the running daemon is asked instead of the file, on map
"access" for a tagged key and "tlspolicy" otherwise (--map overrides), one
key of the walk at a time (on the map "sts" only KEY: FEATURE(` + "`sts')" + ` asks
the domain alone); only the replies are known then, not the endpoints.
postmap -q KEY socketmap:unix:PATH:tlspolicy asks it the Postfix way.

With a [discovery] table the answer for a bare domain (example.com) merges
the endpoints with the domain's MTA-STS and DANE policies, which only the
running daemon knows from its cache: query then asks the daemon through its
control socket ([discovery] control_socket) and prints, after the reply,
where the answer comes from (source: endpoint, mta-sts, dane or none), the
endpoint, what it overrides, and the cache state (hit, miss, refreshed,
stale); for Postfix a NOTFOUND is followed by the rest of the walk, asked
of the file (parent domains get no discovered policy). When the daemon
cannot be reached, or with --offline, query discovers the domain itself
(DNS and HTTPS, nothing cached, nothing written) and says so. For Sendmail
a bare domain is asked on the map "sts" of FEATURE(` + "`sts')" + `, the MTA-STS
policy Sendmail applies besides tlsgate's own map.

Exit status: 0 the MTA gets a policy from tlsgate (for KEY or a later
key of its walk), 1 it applies its own default, 2 usage or configuration
error, 3 the daemon answered TEMP/PERM (the MTA defers) or could not be
reached.

Inbound: print the verdict for a session with the given facts, exactly as
the milter would judge it: its result (none, pass, monitor, exception,
defer, reject, as the log says result=), the reply the client gets, and
each failed requirement. --client-addr is required (the milter always
knows it); the other facts default to a plaintext session from a client
without a verified name or sender. Exit status: 0 pass or not covered,
1 the session fails, 2 usage or configuration error.
`

func cmdQuery(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("query", "tlsgate query [-c FILE | --socket SPEC] outbound KEY\n       tlsgate query [-c FILE] inbound --client-addr IP [--client-name NAME] [--sender ADDR] [--tls-version V --cipher C --cipher-bits N --verify STATE --cert-subject DN --cert-issuer DN --fingerprint FP]", queryHelp, stdout, stderr)
	file := fs.String("c", defaultConfig, "configuration `file`")
	socket := fs.String("socket", "", "ask the running daemon at `spec` (unix:/path or inet:host:port) instead of reading the file")
	mapName := fs.String("map", "", "socketmap `name` sent with --socket (default: tlspolicy, or access for Sendmail keys)")
	offline := fs.Bool("offline", false, "with [discovery]: discover the domain here instead of asking the running daemon")
	var f inboundFlags
	fs.StringVar(&f.addr, "client-addr", "", "client IP `address` (inbound)")
	fs.StringVar(&f.name, "client-name", "", "client's verified host `name` (inbound)")
	fs.StringVar(&f.sender, "sender", "", "envelope sender `address` (inbound)")
	fs.StringVar(&f.version, "tls-version", "", "TLS `version`, e.g. TLSv1.3; empty = plaintext (inbound)")
	fs.StringVar(&f.cipher, "cipher", "", "cipher `name` (inbound)")
	fs.IntVar(&f.bits, "cipher-bits", 0, "cipher strength in `bits` (inbound)")
	fs.StringVar(&f.verify, "verify", "", "client certificate `state`: none, untrusted, trusted, unknown (inbound)")
	fs.StringVar(&f.subject, "cert-subject", "", "client certificate subject `DN` (or just the CN) (inbound)")
	fs.StringVar(&f.issuer, "cert-issuer", "", "client certificate issuer `DN` (or just the CN) (inbound)")
	fs.Func("fingerprint", "client certificate or public-key SHA-256 `fingerprint`, repeatable (inbound)", func(s string) error {
		fp, err := certid.ParseFingerprint(s)
		if err == nil {
			f.fps = append(f.fps, fp)
		}
		return err
	})
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return exitUsage
	}
	switch pos[0] {
	case "outbound":
		if len(pos) != 2 {
			fmt.Fprintln(stderr, "tlsgate query outbound: give exactly one KEY")
			return exitUsage
		}
		key, tagged := sendmailKey(pos[1])
		if *socket != "" {
			return queryDaemon(*socket, *mapName, key, tagged, stdout, stderr)
		}
		p, err := policy.Load(*file)
		if err != nil {
			printLoadError(stderr, err)
			return exitUsage
		}
		if tagged && p.MTA != policy.Sendmail {
			fmt.Fprintf(stderr, "tlsgate query outbound: %q is a Sendmail access-map key, but %s has mta = %q\n", pos[1], p.File, p.MTA)
			return exitUsage
		}
		if _, err := discovery.BareDomain(key); err == nil && p.Settings.Discovery != nil && !tagged {
			return queryDiscovered(p, key, *offline, stdout, stderr)
		}
		v := p.At(time.Now())
		steps := queryWalk(walkKeys(key, p.MTA == policy.Sendmail), func(k string) queryStep {
			a, err := v.Outbound(k)
			return queryStep{key: k, reply: policyd.AnswerReply(a, err), answer: a, known: true}
		})
		return printWalk(steps, p.MTA == policy.Sendmail, stdout, stderr)
	case "inbound":
		if len(pos) != 1 {
			fmt.Fprintf(stderr, "tlsgate query inbound: unexpected argument %q (facts are given as options)\n", pos[1])
			return exitUsage
		}
		if f.addr == "" {
			fmt.Fprintln(stderr, "tlsgate query inbound: --client-addr is missing: give the client's IP address (the milter always knows it)")
			return exitUsage
		}
		p, err := policy.Load(*file)
		if err != nil {
			printLoadError(stderr, err)
			return exitUsage
		}
		facts, err := f.facts()
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate query inbound: %v\n", err)
			return exitUsage
		}
		now := time.Now()
		v := p.At(now).Judge(&facts)
		printVerdict(stdout, p, &facts, now, &v)
		if v.Result == policy.Fail {
			return exitFail
		}
		return exitOK
	}
	fmt.Fprintf(stderr, "tlsgate query: want \"outbound\" or \"inbound\", not %q\n", pos[0])
	return exitUsage
}

func replyExit(r policyd.Reply) int {
	switch r.Status {
	case policyd.StatusOK:
		return exitOK
	case policyd.StatusNotFound:
		return exitFail
	}
	return exitRuntime
}

// sendmailKey reports whether key carries a Sendmail access-map tag
// handled by tlsgate (tls_*: or srv_features:, in any case) and returns
// it lower-cased if so, as Sendmail looks it up; other keys are returned
// unchanged.
func sendmailKey(key string) (string, bool) {
	tag, _, ok := strings.Cut(key, ":")
	if !ok {
		return key, false
	}
	tag = strings.ToLower(tag)
	if (strings.HasPrefix(tag, "tls_") && len(tag) > len("tls_")) || tag == "srv_features" {
		return strings.ToLower(key), true
	}
	return key, false
}

// queryDaemon asks the daemon at spec for key on map name, by default
// the access map for a Sendmail key and tlspolicy for any other, and for
// the rest of the MTA's walk while the answers are NOTFOUND.
func queryDaemon(spec, name, key string, tagged bool, stdout, stderr io.Writer) int {
	if name == "" {
		name = "tlspolicy"
		if tagged {
			name = policyd.SendmailMapName
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := policyd.DialSocketmap(ctx, spec)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate query: %v\n", err)
		return exitRuntime
	}
	defer c.Close()
	if name == policyd.SendmailSTSMapName {
		// FEATURE(`sts')'s map has no walk: one key, the domain.
		r, err := c.Lookup(ctx, name, key)
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate query: %v\n", err)
			return exitRuntime
		}
		fmt.Fprintln(stdout, r.String())
		return replyExit(r)
	}
	var lookupErr error
	steps := queryWalk(walkKeys(key, tagged), func(k string) queryStep {
		if lookupErr != nil {
			return queryStep{key: k, reply: policyd.Reply{Status: policyd.StatusTemp}}
		}
		r, err := c.Lookup(ctx, name, k)
		lookupErr = err
		return queryStep{key: k, reply: r}
	})
	if lookupErr != nil {
		fmt.Fprintf(stderr, "tlsgate query: %v\n", lookupErr)
		return exitRuntime
	}
	return printWalk(steps, tagged, stdout, stderr)
}

// queryStep is one key of a lookup walk and its reply; answer and known
// only when the file was asked.
type queryStep struct {
	key    string
	reply  policyd.Reply
	answer policy.Answer
	known  bool
}

// queryWalk asks keys in order until one is found or TEMP, as the MTA
// does.
func queryWalk(keys []string, ask func(string) queryStep) []queryStep {
	var out []queryStep
	for _, k := range keys {
		st := ask(k)
		out = append(out, st)
		if st.reply.Status != policyd.StatusNotFound {
			break
		}
	}
	return out
}

// walkKeys returns key and the keys the MTA asks after it when it is not
// found: Postfix's parent domains of a plain next-hop name; Sendmail's
// tls_rcpt: walk from an address or a domain, its tls_srv: and
// srv_features: walks from a name or an address. Keys whose walk tlsgate
// cannot know (tls_rcpt:USER@, the domain being unknown) stand alone.
func walkKeys(key string, sendmail bool) []string {
	if !sendmail {
		return policy.PostfixKeys(key)
	}
	tag, val, _ := strings.Cut(key, ":")
	var keys []string
	switch tag {
	case "tls_rcpt":
		switch at := strings.LastIndexByte(val, '@'); {
		case at >= 0 && at < len(val)-1:
			keys = policy.SendmailRcptKeys(val)
		case at < 0 && val != "" && !strings.HasPrefix(val, "."):
			keys = policy.SendmailRcptKeys("postmaster@" + val)
		}
	case "tls_srv", "srv_features":
		// A name, a literal [192.0.2.1] as {server_name} has it (Sendmail
		// walks it, then the address), or an address as {server_addr}
		// and {client_addr} have it.
		name, addr := val, netip.Addr{}
		if a, err := netip.ParseAddr(strings.TrimPrefix(strings.Trim(val, "[]"), "ipv6:")); err == nil {
			addr = a
			if !strings.HasPrefix(val, "[") {
				name = ""
			}
		}
		if tag == "tls_srv" {
			keys = policy.SendmailServerKeys(name, addr)
		} else {
			keys = policy.SrvFeaturesKeys(name, addr)
		}
	}
	for i, k := range keys {
		if k == key {
			return keys[i:]
		}
	}
	return []string{key}
}

// printWalk prints the reply for the first key on stdout and, on stderr,
// what the MTA will do: the answering endpoint, and for a NOTFOUND key
// the rest of the walk and what is in effect. It returns the exit status
// of what is in effect.
func printWalk(steps []queryStep, sendmail bool, stdout, stderr io.Writer) int {
	first := steps[0]
	fmt.Fprintln(stdout, first.reply.String())
	if first.known {
		if n := endpointNote(first.answer); n != "" {
			fmt.Fprintln(stderr, "# "+n)
		}
	}
	return printRest(steps, sendmail, stderr)
}

// printRest prints, on stderr, for a walk whose first key is NOTFOUND,
// the rest of the walk and what is in effect, and returns the exit status
// of what is in effect; for a walk whose first key is found or TEMP it
// prints nothing and returns that key's status.
func printRest(steps []queryStep, sendmail bool, stderr io.Writer) int {
	first, last := steps[0], steps[len(steps)-1]
	if first.reply.Status != policyd.StatusNotFound {
		return replyExit(first.reply)
	}
	mta := "Postfix"
	if sendmail {
		mta = "Sendmail"
	}
	var b strings.Builder
	b.WriteString("# NOTFOUND")
	if len(steps) > 1 {
		b.WriteString("; " + mta + " then asks ")
		for i, st := range steps[1:] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(st.key + " -> " + strings.TrimSpace(st.reply.String()))
			if st.known && st.answer.Endpoint != nil {
				b.WriteString(" (" + endpointNote(st.answer) + ")")
			}
		}
	}
	b.WriteString("; in effect: " + inEffect(last, sendmail))
	fmt.Fprintln(stderr, b.String())
	return replyExit(last.reply)
}

// inEffect says what the MTA applies after the walk that ended at last.
func inEffect(last queryStep, sendmail bool) string {
	switch last.reply.Status {
	case policyd.StatusOK:
		return last.reply.Data
	case policyd.StatusNotFound:
		switch {
		case !sendmail:
			return "Postfix's default (smtp_tls_security_level)"
		case strings.HasPrefix(last.key, "srv_features:"):
			return "Sendmail's default (it asks the client for a certificate)"
		}
		return "Sendmail's default (no TLS requirement)"
	}
	return "TEMP: the MTA defers the mail and retries"
}

// endpointNote names the endpoint of an answer: its exception (the
// endpoint it relaxes, until when, why), monitor mode (only for an
// endpoint in monitor mode), a key Sendmail may have cut.
func endpointNote(a policy.Answer) string {
	if a.Endpoint == nil {
		return policyd.AnswerNote(a)
	}
	n := "endpoint " + a.Endpoint.Name
	if x := a.Exception; x != nil {
		n += ", " + exceptionNote(x)
	}
	if note := policyd.AnswerNote(a); note != "" {
		n += ": " + note
	}
	return n
}

type inboundFlags struct {
	addr, name, sender, version, cipher, verify, subject, issuer string
	bits                                                         int
	fps                                                          []certid.Fingerprint
}

func (f *inboundFlags) facts() (policy.Facts, error) {
	var out policy.Facts
	if f.addr != "" {
		a, err := netip.ParseAddr(strings.TrimPrefix(strings.TrimPrefix(f.addr, "IPv6:"), "ipv6:"))
		if err != nil {
			return out, fmt.Errorf("--client-addr %q is not an IP address", f.addr)
		}
		out.ClientAddr = a
	}
	out.ClientName, out.Sender = f.name, f.sender
	out.TLSVersion, out.Cipher, out.Bits = f.version, f.cipher, f.bits
	if out.TLSVersion == "" && (f.cipher != "" || f.bits != 0 || f.verify != "") {
		return out, fmt.Errorf("--cipher, --cipher-bits and --verify need --tls-version")
	}
	v, err := policy.ParseVerify(f.verify)
	if err != nil {
		return out, err
	}
	if f.verify == "" && out.TLSVersion == "" {
		v = policy.VerifyNone
	}
	out.Verify = v
	for _, c := range []struct {
		in     string
		cn     *string
		dn     *certid.DN
		option string
	}{{f.subject, &out.SubjectCN, &out.SubjectDN, "--cert-subject"}, {f.issuer, &out.IssuerCN, &out.IssuerDN, "--cert-issuer"}} {
		if c.in == "" {
			continue
		}
		if strings.Contains(c.in, "=") {
			dn, err := certid.ParseDN(c.in)
			if err != nil {
				return out, fmt.Errorf("%s: %v", c.option, err)
			}
			*c.dn, *c.cn = dn, dn.CN()
		} else {
			*c.cn = c.in
		}
	}
	out.Fingerprints = f.fps
	out.FingerprintsKnown = true
	return out, nil
}

// printVerdict prints the verdict as the milter would act on it: the
// covering endpoints and exceptions, the outcome (the log's result= word)
// with the reply the client gets, and each failure.
func printVerdict(w io.Writer, p *policy.Policy, f *policy.Facts, now time.Time, v *policy.Verdict) {
	o := v.Outcome()
	if o == policy.OutcomeNone {
		fmt.Fprintln(w, "result: none (no endpoint covers this session; mail is accepted by policy)")
		return
	}
	fmt.Fprintf(w, "endpoints: %s\n", v.Names())
	for _, ep := range v.Exceptions {
		fmt.Fprintf(w, "exception: %s, %s\n", ep.Name, exceptionNote(ep.Exception))
	}
	switch o {
	case policy.OutcomePass:
		fmt.Fprintln(w, "result: pass (mail is accepted)")
	case policy.OutcomeUnchecked:
		fmt.Fprintln(w, "result: unchecked (nothing seen fails; the policy-delegation server judges the rest)")
	case policy.OutcomeMonitor:
		fmt.Fprintln(w, "result: monitor (a requirement failed, but every failing endpoint is in monitor mode: mail is accepted and stamped)")
	case policy.OutcomeException:
		fmt.Fprintf(w, "result: exception (mail is accepted only because of the exception; %s)\n", afterExceptions(p, f, now, v))
	case policy.OutcomeDefer:
		fmt.Fprintf(w, "result: defer (mail is deferred: %s; the sender retries)\n", o.Reply())
	case policy.OutcomeReject:
		fmt.Fprintf(w, "result: reject (mail is rejected: %s)\n", o.Reply())
	}
	for _, f := range v.Failures {
		fmt.Fprintf(w, "failed: %s\n", f.String())
	}
	for _, f := range v.Unchecked {
		fmt.Fprintf(w, "not checked here: endpoint=%s check=%s (judged by the policy-delegation server)\n", f.Endpoint.Name, f.Check)
	}
}

// exceptionNote says which endpoint an exception relaxes, until when and
// why.
func exceptionNote(x *policy.Exception) string {
	return fmt.Sprintf("an exception to %s until %s (%s)", x.To.Name, x.Expires(), x.Reason)
}

// afterExceptions says what the same session gets once the exceptions of
// v have ended: judged at the latest of their ends.
func afterExceptions(p *policy.Policy, f *policy.Facts, now time.Time, v *policy.Verdict) string {
	var end time.Time
	var dates []string
	for _, ep := range v.Exceptions {
		x := ep.Exception
		if at := x.ExpiresAt(now.Location()); at.After(end) {
			end = at
		}
		dates = append(dates, x.Expires())
	}
	after := p.At(end).Judge(f)
	o := after.Outcome()
	s := "from " + strings.Join(dates, ", ") + " on: " + o.String()
	if r := o.Reply(); r.Code != 0 {
		s += " (" + r.String() + ")"
	}
	return s
}
