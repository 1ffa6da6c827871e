package main

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/policy"
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

With mta = "postfix", check also asks the installed Postfix for its version
(postconf -h mail_version) and refuses a postfix_version newer than it, so
that the policy daemon never hands Postfix an attribute it does not know.
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
	for _, w := range p.Warnings(time.Now()) {
		fmt.Fprintln(stderr, w.Error())
	}
	fmt.Fprintln(stdout, summary(p, notes))
	return exitOK
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
