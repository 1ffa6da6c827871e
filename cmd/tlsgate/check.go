package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/sendmailfile"
	"github.com/tlsgate/tlsgate/internal/trust"
)

const checkHelp = `
Reads the configuration (and the files its include patterns name),
validates every endpoint and refuses anything the configured MTA could not
enforce. It also reads the CA store and the server
certificate: an issuer pin with no matching CA in the store, a file of the
store that cannot be read or holds no CA, a private key readable by others,
or an expired certificate is an error; a certificate
expiring within 30 days is a warning. Prints one summary line and exits 0, or
prints every mistake as FILE:LINE: message and exits 2.

Precedence: for each direction, the most specific host pattern among the
endpoints that have a table for that direction decides (an exact name or
address over the longest .domain pattern or range above it). An endpoint
nested in another one (mx1.company-b.example in .company-b.example, a /26
in a /24) must demand at least as much in each direction both define;
check refuses one that demands less unless it is a temporary exception
(exception_to, reason, expires), which applies until its date and then
gives way to the endpoint it relaxes, without a reload. check warns, as
FILE:LINE: warning: ..., about an exception that ends within 14 days or
has ended, and about outbound addresses Postfix never asks for.

With mta = "sendmail", check also judges the files Sendmail reads as root
by Sendmail's own rules (it offers no STARTTLS when one breaks them): the CA
bundle must be root's, below no directory others may write to, and hold
exactly the CAs of the store (root writes it with "tlsgate certs store
bundle"; tlsgate does not, for Sendmail); its directory, Sendmail's
CACertPath, must hold no OpenSSL hash links; the server certificate must be
root's too; the server key may be readable by its group (Debian's 0640
sendmail-common.key), not by others.

With mta = "postfix", check also asks the installed Postfix for its version
(postconf -h mail_version) and refuses a postfix_version newer than it, so
that the policy daemon never hands Postfix an attribute it does not know.

With a [discovery] table, check reads sts_ca_file, checks that cache_file's
directory exists, and asks the resolver for a DNSSEC-signed name: without
the AD bit in the answer DANE is off, which check says in a warning at the
dane line (the daemon then answers no DANE policy until the resolver
validates). With dane = true on Postfix it asks postconf for what DANE
needs (smtp_dns_support_level = dnssec, smtp_host_lookup = dns,
smtp_tls_dane_insecure_mx_policy = dane, whose default before Postfix
3.7.13 is unsafe) and warns with the exact setting; while the first two
are missing the daemon withholds DANE answers, which Postfix would turn
into "may". Discovery is dynamic: check cannot know which domains publish
MTA-STS or DANE, so it cannot say where an endpoint that authenticates
(verify, secure, fingerprint) overrides a discovered policy; the daemon
logs each such lookup with overrides=sts or overrides=dane, and
"tlsgate query outbound DOMAIN" shows it.
`

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "tlsgate check [-c FILE] [--postconf-dir DIR]", checkHelp, stdout, stderr)
	file := fs.String("c", defaultConfig, "configuration `file`")
	pcDir := fs.String("postconf-dir", "", "Postfix configuration `dir`ectory for postconf -c (default: Postfix's own)")
	noDetect := fs.Bool("no-detect", false, "do not run postconf to detect the installed Postfix version")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "tlsgate check: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	p, err := policy.Load(*file)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	var notes []string
	plan, err := trust.Prepare(p)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	if probs := plan.StoreProblems(p); len(probs) > 0 {
		printLoadError(stderr, &policy.LoadError{Problems: probs})
		return exitUsage
	}
	expired := false
	for _, r := range plan.Expiry(time.Now(), certs.DefaultWarnWithin) {
		if r.Status == certs.ExpiryExpired {
			expired = true
			fmt.Fprintf(stderr, "%s: %s expired on %s\n", *file, r.Name, r.NotAfter.UTC().Format("2006-01-02"))
		} else {
			fmt.Fprintf(stderr, "%s: warning: %s expires on %s (in %d days)\n", *file, r.Name, r.NotAfter.UTC().Format("2006-01-02"), int(r.Left.Hours()/24))
		}
	}
	if expired {
		return exitUsage
	}
	if n := len(plan.Known); n > 0 {
		notes = append(notes, fmt.Sprintf("%d certificate(s) checked for expiry", n))
	}
	if p.MTA == policy.Sendmail {
		if problems := sendmailFiles(p, plan); len(problems) > 0 {
			printLoadError(stderr, &policy.LoadError{Problems: problems})
			return exitUsage
		}
		if p.Settings.CABundle != "" || p.Settings.ServerCert != "" {
			notes = append(notes, "Sendmail accepts its TLS files")
		}
	}
	if p.MTA == policy.Postfix && !*noDetect {
		if installed, err := postfixVersion(*pcDir); err == nil {
			if versionLess(installed, p.PostfixVersion) {
				fmt.Fprintf(stderr, "%s: postfix_version = %q, but the installed Postfix is %s: set postfix_version = %q so that no newer policy attribute is emitted\n",
					*file, p.PostfixVersion, installed, majorMinor(installed))
				return exitUsage
			}
			notes = append(notes, "installed Postfix "+installed)
		}
	}
	if p.Settings.Discovery != nil {
		note, code := checkDiscovery(p, *pcDir, !*noDetect, stderr)
		if code != exitOK {
			return code
		}
		notes = append(notes, note)
	}
	for _, w := range p.Warnings(time.Now()) {
		fmt.Fprintln(stderr, w.Error())
	}
	fmt.Fprintln(stdout, summary(p, notes))
	return exitOK
}

// sendmailFiles checks the files Sendmail reads as root by its rules
// (sendmailfile): the CA bundle, which root writes from the CA store
// (trust.WritesBundle) and which must hold exactly the store's CAs, its
// directory (CACertPath), which must hold no OpenSSL hash links that
// Sendmail would trust besides, and the server certificate. The key was
// checked by trust.Prepare.
func sendmailFiles(p *policy.Policy, plan *trust.Plan) []*policy.Problem {
	s := p.Settings
	var out []*policy.Problem
	bad := func(key string, err error) { out = append(out, p.SettingProblem(key, err)) }
	if b := s.CABundle; b != "" {
		write := ""
		if s.CAStore != "" {
			write = fmt.Sprintf("write it as root: tlsgate certs store bundle --store %s --out %s", s.CAStore, b)
		}
		err := sendmailfile.Check(b, sendmailfile.Cert, sendmailfile.Debian)
		var se *sendmailfile.Error
		switch {
		case errors.Is(err, fs.ErrNotExist) && write != "":
			bad("certs.ca_bundle", fmt.Errorf("%s does not exist; Sendmail reads it as CACertFile and tlsgate does not write it for Sendmail (Sendmail uses only files root owns): %s", b, write))
		case errors.As(err, &se) && write != "" && se.Path == b && !strings.HasPrefix(se.Reason, "directory"):
			se.Fix = write
			bad("certs.ca_bundle", se)
		case err != nil:
			bad("certs.ca_bundle", err)
		case plan.Store != nil:
			if diff := bundleDiff(b, plan.Store); diff != "" {
				bad("certs.ca_bundle", fmt.Errorf("%s %s; Sendmail trusts the bundle, not the store: %s, then restart Sendmail", b, diff, write))
			}
		}
		if links, err := sendmailfile.HashLinks(filepath.Dir(b)); err != nil {
			bad("certs.ca_bundle", err)
		} else if len(links) > 0 {
			bad("certs.ca_bundle", fmt.Errorf("%s, the directory of the bundle and so Sendmail's CACertPath, holds OpenSSL hash links (%s): Sendmail would trust those CAs too; keep the bundle in a directory without them", filepath.Dir(b), strings.Join(links, ", ")))
		}
	}
	if c := s.ServerCert; c != "" {
		if err := sendmailfile.Check(c, sendmailfile.Cert, sendmailfile.Debian); err != nil {
			bad("certs.server_cert", err)
		}
	}
	return out
}

// bundleDiff says how the CA bundle at path differs from the store, or
// "" when it holds the same CAs.
func bundleDiff(path string, st *certs.Store) string {
	b, err := certs.LoadBundle(path)
	if err != nil {
		return "cannot be read (" + err.Error() + ")"
	}
	var extra, missing []string
	for _, e := range b.List() {
		if !st.Contains(e.Cert) {
			extra = append(extra, e.Subject)
		}
	}
	for _, e := range st.List() {
		if !b.Contains(e.Cert) {
			missing = append(missing, e.Subject)
		}
	}
	var parts []string
	if len(extra) > 0 {
		parts = append(parts, fmt.Sprintf("holds %d CA(s) the store does not (%s)", len(extra), strings.Join(extra, "; ")))
	}
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("lacks %d CA(s) of the store (%s)", len(missing), strings.Join(missing, "; ")))
	}
	return strings.Join(parts, " and ")
}

func printLoadError(w io.Writer, err error) {
	var le *policy.LoadError
	if errors.As(err, &le) {
		for _, p := range le.Problems {
			fmt.Fprintln(w, p.Error())
		}
		fmt.Fprintf(w, "%d problem(s); nothing was changed\n", len(le.Problems))
		return
	}
	fmt.Fprintln(w, err)
}

// summary is check's one-line report.
func summary(p *policy.Policy, notes []string) string {
	var in, out, mon, hosts int
	for _, ep := range p.Endpoints {
		if ep.Inbound.Active() {
			in++
		}
		if ep.Outbound.Active() {
			out++
		}
		if ep.Mode == policy.Monitor {
			mon++
		}
		hosts += len(ep.Hosts)
	}
	mta := string(p.MTA)
	if p.MTA == policy.Postfix {
		mta += " " + p.PostfixVersion
	}
	s := fmt.Sprintf("%s: OK: mta=%s endpoints=%d (inbound %d, outbound %d, monitor %d) host patterns=%d",
		p.File, mta, len(p.Endpoints), in, out, mon, hosts)
	if n := len(p.Exceptions()); n > 0 {
		s += fmt.Sprintf(" exceptions=%d", n)
	}
	if n := len(p.Files()); n > 1 {
		s += fmt.Sprintf(" files=%d", n)
	}
	if len(notes) > 0 {
		s += "; " + strings.Join(notes, "; ")
	}
	return s
}

// postfixVersion runs postconf -h mail_version.
func postfixVersion(dir string) (string, error) {
	args := []string{"-h", "mail_version"}
	if dir != "" {
		args = append([]string{"-c", dir}, args...)
	}
	out, err := exec.Command("postconf", args...).Output()
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// versionLess compares dotted release numbers numerically.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return false
}
