package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/probe"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

const probeHelp = `
Connects to a mail server as our MTA would: greeting, EHLO, STARTTLS with
our client certificate ([certs] server_cert/server_key of the
configuration, when set), EHLO again, QUIT. No mail is sent. It shows the
TLS version, cipher and bits, the server's certificate chain with its names
(CN, subject alternative names), validity and fingerprints, whether the
chain verifies against our CA store ([certs] ca_store, else ca_bundle,
else the system's CAs) and whether it names the host.

Then the endpoint's outbound verdict: the answer the MTA would get for this
next hop from the configuration ("secure match=...", "encrypt",
"fingerprint match=...", "TEMP+VERIFY:128+CN:...") and whether the MTA
would deliver over this connection or keep the mail queued. An endpoint in
monitor mode is judged as if enforced.

DOMAIN probes the domain's MX hosts (lowest preference first; the domain
itself without MX records) on port 25, resolved by the system resolver.
[HOST]:PORT (or [HOST], port 25) probes that host, as a Postfix next hop in
brackets. Everything printed from the certificate or the server is escaped
(control characters, bidirectional overrides).

Exit status: 0 every server would be delivered to, 1 a server would keep
the mail queued (or offers no TLS where TLS is required), 2 usage or
configuration error, 3 no server could be probed.
`

func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fl := newFlags("probe", "tlsgate probe [-c FILE] DOMAIN|[HOST]:PORT", probeHelp, stdout, stderr)
	file := fl.String("c", defaultConfig, "configuration `file` (our CA store, client certificate and endpoints)")
	helo := fl.String("helo", "", "EHLO `name` (default: the host name)")
	timeout := fl.Duration("timeout", 30*time.Second, "time limit per server")
	pos, err := parseInterspersed(fl, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "tlsgate probe: give exactly one DOMAIN or [HOST]:PORT")
		return exitUsage
	}
	target, err := probe.ParseTarget(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate %v\n", err)
		return exitUsage
	}
	opts, code := reportOptions(*file, flagGiven(fl, "c"), "all", "", stderr, "probe")
	if code != exitOK {
		return code
	}
	m := opts.Model
	popts := probe.Options{Helo: *helo, Timeout: *timeout}
	storeName := "the system's CAs"
	if m != nil {
		s := m.Policy().Settings
		roots, name, err := loadRoots(s)
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate probe: %v\n", err)
			return exitUsage
		}
		popts.Roots, storeName = roots, name
		if s.ServerCert != "" && s.ServerKey != "" {
			pair, err := tls.LoadX509KeyPair(s.ServerCert, s.ServerKey)
			if err != nil {
				fmt.Fprintf(stderr, "tlsgate probe: our client certificate: %v\n", err)
				return exitUsage
			}
			popts.ClientCert = &pair
		}
	} else if pool, err := x509.SystemCertPool(); err == nil {
		popts.Roots = pool
	}
	results, err := probe.Probe(context.Background(), target, popts)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate %v\n", err)
		return exitRuntime
	}
	var ans verdict.Answer
	if m != nil {
		if target.Domain != "" {
			ans = m.Domain(target.Domain, "", time.Now())
		} else {
			ans = m.Host(target.Host, target.Port, time.Now())
		}
	}
	exit, probed := exitOK, 0
	for i := range results {
		r := &results[i]
		if r.Err == nil || r.TLS {
			probed++
		}
		if printProbe(stdout, target, r, m, ans, storeName) && exit == exitOK {
			exit = exitFail
		}
	}
	if probed == 0 {
		return exitRuntime
	}
	return exit
}

// printProbe prints one server's probe and reports whether the MTA would
// keep mail for it queued.
func printProbe(w io.Writer, t probe.Target, r *probe.Result, m *verdict.Model, ans verdict.Answer, storeName string) bool {
	e := probe.Escape
	fmt.Fprintf(w, "%s: %s", t, e(r.Host))
	if r.Addr != "" {
		fmt.Fprintf(w, " [%s]", r.Addr)
	}
	fmt.Fprintf(w, " port %d", r.Port)
	if r.Pref >= 0 {
		fmt.Fprintf(w, " (MX preference %d)", r.Pref)
	}
	fmt.Fprintln(w)
	if r.Banner != "" {
		fmt.Fprintf(w, "  greeting:    %s\n", e(r.Banner))
	}
	switch {
	case r.Err != nil && !r.Offered && !r.TLS:
		fmt.Fprintf(w, "  error:       %s\n", e(r.Err.Error()))
	case !r.Offered:
		fmt.Fprintln(w, "  STARTTLS:    not offered")
	case !r.TLS:
		fmt.Fprintf(w, "  STARTTLS:    offered, but failed: %s\n", e(r.Err.Error()))
	default:
		fmt.Fprintf(w, "  TLS:         %s, cipher %s, %d bits\n", r.Version, r.Cipher, r.Bits)
		cc := "not asked for"
		if r.ClientCertSent {
			cc = "sent"
		}
		fmt.Fprintf(w, "  client cert: %s\n", cc)
		for i, c := range r.Chain {
			info := certs.Describe(c)
			fmt.Fprintf(w, "  certificate %d: %s\n", i, e(info.Subject))
			fmt.Fprintf(w, "    issuer:    %s\n", e(info.Issuer))
			if c.Subject.CommonName != "" {
				fmt.Fprintf(w, "    CN:        %s\n", e(c.Subject.CommonName))
			}
			var names []string
			for _, n := range info.DNSNames {
				names = append(names, "DNS:"+e(n))
			}
			for _, n := range info.IPAddresses {
				names = append(names, "IP:"+n)
			}
			if len(names) > 0 {
				fmt.Fprintf(w, "    SANs:      %s\n", strings.Join(names, ", "))
			}
			left := time.Until(info.NotAfter)
			state := fmt.Sprintf("%d days left", int(left.Hours()/24))
			if left < 0 {
				state = "EXPIRED"
			} else if time.Now().Before(info.NotBefore) {
				state = "NOT YET VALID"
			}
			fmt.Fprintf(w, "    valid:     %s .. %s (%s)\n", info.NotBefore.Format("2006-01-02"), info.NotAfter.Format("2006-01-02"), state)
			fmt.Fprintf(w, "    sha256:    %s\n", info.SHA256)
			fmt.Fprintf(w, "    pubkey:    %s (%s %d)\n", info.SPKISHA256, info.KeyAlgorithm, info.KeyBits)
		}
		if r.Verified {
			fmt.Fprintf(w, "  verifies:    yes, against %s\n", storeName)
		} else {
			fmt.Fprintf(w, "  verifies:    NO, against %s: %s\n", storeName, e(r.VerifyErr))
		}
		if r.NameOK {
			fmt.Fprintf(w, "  names host:  yes (%s)\n", e(r.Host))
		} else {
			fmt.Fprintf(w, "  names host:  no: %s\n", e(r.NameErr))
		}
	}
	if m == nil {
		fmt.Fprintln(w, "  verdict:     no configuration: not judged")
		return false
	}
	if ans.Err != nil {
		fmt.Fprintf(w, "  verdict:     lookup error (the daemon answers TEMP, the MTA keeps the mail): %s\n", e(ans.Err.Error()))
		return true
	}
	if ans.Endpoint == "" {
		fmt.Fprintln(w, "  endpoint:    none: the MTA's default TLS level applies")
		return false
	}
	mode := "enforce"
	if ans.Monitor {
		mode = "monitor, judged as if enforced"
	}
	text := ans.Text
	if text == "" {
		text = "(no outbound requirement)"
	}
	fmt.Fprintf(w, "  endpoint:    %s (%s): %s\n", ans.Endpoint, mode, text)
	req, err := m.Requirement(ans, true)
	if err != nil {
		fmt.Fprintf(w, "  verdict:     cannot judge: %v\n", err)
		return true
	}
	out, why := req.Judge(r.Session())
	fmt.Fprintf(w, "  verdict:     %s: %s\n", out, e(why))
	return out != mtapolicy.Deliver
}

// loadRoots returns the CAs the MTA verifies servers with: the CA store,
// else the CA bundle, else the system's CAs; and their name.
func loadRoots(s policy.Settings) (*x509.CertPool, string, error) {
	switch {
	case s.CAStore != "":
		st, err := certs.OpenStore(s.CAStore)
		if err != nil {
			return nil, "", err
		}
		return st.Pool(), "our CA store " + s.CAStore, nil
	case s.CABundle != "":
		st, err := certs.LoadBundle(s.CABundle)
		if err != nil {
			return nil, "", err
		}
		return st.Pool(), "our CA bundle " + s.CABundle, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		return nil, "", fmt.Errorf("no CA store configured and no system CAs: %w", err)
	}
	return pool, "the system's CAs", nil
}
