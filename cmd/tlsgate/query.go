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
"TEMP ..."). KEY is a next hop as the MTA sends it: example.com,
.example.com, [mx.example.com]:587, [192.0.2.1], [IPv6:2001:db8::1]; for
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
With --socket the running daemon is asked instead of the file, on map
"access" for a tagged key and "tlspolicy" otherwise (--map overrides);
postmap -q KEY socketmap:unix:PATH:tlspolicy asks it the Postfix way.

With a [discovery] table the answer for a bare domain (example.com) merges
the endpoints with the domain's MTA-STS and DANE policies, which only the
running daemon knows from its cache: query then asks the daemon through its
control socket ([discovery] control_socket) and prints, after the reply,
where the answer comes from (source: endpoint, mta-sts, dane or none), the
endpoint, what it overrides, and the cache state (hit, miss, refreshed,
stale). When the daemon cannot be reached, or with --offline, query
discovers the domain itself (DNS and HTTPS, nothing cached, nothing written)
and says so. For Sendmail a bare domain is asked on the map "sts" of
FEATURE(` + "`sts')" + `, the MTA-STS policy Sendmail applies besides the access map.
Exit status: 0 found, 1 not found, 2 usage or configuration error, 3 the
daemon answered TEMP/PERM or could not be reached.

Inbound: print the verdict for a session with the given facts, exactly as
the milter would judge it. --client-addr is required (the milter always
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
		a, err := p.At(time.Now()).Outbound(key)
		r := policyd.AnswerReply(a, err)
		fmt.Fprintln(stdout, r.String())
		if a.Endpoint != nil {
			note := "endpoint " + a.Endpoint.Name
			if !a.Found {
				note += " is in monitor mode: the MTA default applies"
			}
			fmt.Fprintln(stderr, "# "+note)
		}
		return replyExit(r)
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
		v := p.At(time.Now()).Judge(&facts)
		printVerdict(stdout, &v)
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
// the access map for a Sendmail key and tlspolicy for any other.
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
	r, err := c.Lookup(ctx, name, key)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate query: %v\n", err)
		return exitRuntime
	}
	fmt.Fprintln(stdout, r.String())
	return replyExit(r)
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

func printVerdict(w io.Writer, v *policy.Verdict) {
	if v.Result == policy.NotCovered {
		fmt.Fprintln(w, "result: none (no endpoint covers this session; mail is accepted by policy)")
		return
	}
	fmt.Fprintf(w, "endpoints: %s\n", v.Names())
	switch {
	case v.Result == policy.Pass:
		fmt.Fprintln(w, "result: pass (mail is accepted)")
	case v.Refuse && v.Action == policy.Reject:
		fmt.Fprintln(w, "result: fail: mail is rejected (5.7.x)")
	case v.Refuse:
		fmt.Fprintln(w, "result: fail: mail is deferred (4.7.x); the sender retries")
	default:
		fmt.Fprintln(w, "result: fail, but every failing endpoint is in monitor mode: mail is accepted and stamped")
	}
	for _, f := range v.Failures {
		fmt.Fprintf(w, "failed: %s\n", f.String())
	}
	for _, f := range v.Unchecked {
		fmt.Fprintf(w, "not checked here: endpoint=%s check=%s (judged by the policy-delegation server)\n", f.Endpoint.Name, f.Check)
	}
}
