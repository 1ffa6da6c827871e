// Package mtaconf derives the MTA configuration that wires Postfix or
// Sendmail to tlsgate from the same policy file the daemons read, so that
// the two cannot disagree: the milter socket with fail-closed defaults, the
// outbound TLS policy socketmap, client-certificate requests, CA files and
// (Postfix) the policy-delegation check that enforces fingerprint pins;
// with [discovery], what MTA-STS and DANE need (Postfix's DNSSEC
// settings, Sendmail's FEATURE(`sts') on tlsgate's socket).
//
// It merges them into what the MTA already has rather than replacing it:
// for Postfix each main.cf parameter is a [Setting] with a [Rule]
// (tlsgate's milter joins the administrator's smtpd_milters, its policy
// service goes behind the relay check, a stronger TLS level is kept); for
// Sendmail the .mc lines leave the administrator's access map, milters
// and rulesets in place ([ForSendmail]).
package mtaconf

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Options adjust the generated text to the host.
type Options struct {
	// PostfixQueueDir is Postfix's queue_directory (default
	// /var/spool/postfix). Socket paths below it are written relative to
	// it, which works whether smtpd/smtp run chrooted or not (Postfix
	// daemons run with the queue directory as working directory).
	PostfixQueueDir string
}

// Postfix is what tlsgate needs in main.cf, as settings with a merge rule
// each; [Postfix.Merge] merges them into the current main.cf.
type Postfix struct {
	// Settings in the order they are merged.
	Settings []Setting
	// Notes are comments that explain choices (printed with "# ").
	Notes []string
}

// ForPostfix derives the main.cf settings p needs.
func ForPostfix(p *policy.Policy, o Options) (*Postfix, error) {
	if p.MTA != policy.Postfix {
		return nil, fmt.Errorf("mtaconf: %s is written for mta = %q, not postfix", p.File, p.MTA)
	}
	q := o.PostfixQueueDir
	if q == "" {
		q = "/var/spool/postfix"
	}
	s := p.Settings
	out := &Postfix{}
	add := func(name, want string, rule Rule, note string) {
		out.Settings = append(out.Settings, Setting{Name: name, Want: want, Rule: rule, Note: note})
	}

	askCert, pins, outbound := false, false, false
	for _, ep := range p.Endpoints {
		askCert = askCert || ep.Inbound.RequestCert
		pins = pins || len(ep.Inbound.Fingerprints) > 0
		outbound = outbound || ep.Outbound.Active()
	}
	add("smtpd_tls_security_level", "may", AtLeast("none"), "STARTTLS for every client (a stronger level set in main.cf is kept)")
	if s.ServerCert != "" {
		add("smtpd_tls_cert_file", s.ServerCert, Replace, "our certificate and key ([certs] server_cert, server_key)")
		add("smtpd_tls_key_file", s.ServerKey, Replace, "")
	}
	if s.CABundle != "" {
		add("smtpd_tls_CAfile", s.CABundle, Replace, "the CA bundle tlsgate writes from its CA store: client certificates are verified against it")
		add("smtp_tls_CAfile", s.CABundle, Replace, "the same bundle for the servers we deliver to")
	}
	if askCert {
		add("smtpd_tls_ask_ccert", "yes", Replace, "smtpd_tls_ask_ccert is global in Postfix 3.7: every TLS client is asked for a certificate, not only the endpoints with request_cert (a client may decline; only covered peers are judged)")
	}
	add("smtpd_tls_received_header", "yes", Replace, "the TLS facts in Postfix's own Received: header")
	const digest = "fingerprints are SHA-256; Postfix defaults to md5 below compatibility_level 3.6, so the digest is set explicitly"
	add("smtpd_tls_fingerprint_digest", "sha256", Replace, digest)
	add("smtp_tls_fingerprint_digest", "sha256", Replace, digest)
	if s.Milter.Addr != "" {
		spec := socketSpec(s.Milter.Addr, q)
		// Per-milter settings (Postfix >= 3.0) are name=value pairs without
		// blanks, as attr_override(3) reads them.
		add("smtpd_milters", "{ "+spec+", default_action=tempfail }", ListFirst(sameSocket(spec, s.Milter.Addr)),
			"tlsgate's milter first, with its own default_action=tempfail: while it is down, SMTP clients get 4xx and retry, and nothing is accepted unjudged; other milters keep their place and milter_default_action")
	}
	disc := s.Discovery
	if s.Socketmap.Addr != "" && (outbound || disc != nil) {
		spec := "socketmap:" + socketSpec(s.Socketmap.Addr, q) + ":" + s.MapName
		abs := "socketmap:" + s.Socketmap.Addr + ":" + s.MapName
		add("smtp_tls_security_level", "may", AtLeast("none"), "opportunistic TLS for destinations tlsgate does not cover (a stronger level set in main.cf is kept)")
		add("smtp_tls_policy_maps", spec, ListFirst(func(e string) bool { return e == spec || e == abs }),
			"tlsgate's TLS policy table first; destinations it does not cover go on to the tables after it. A lookup that fails (tlsgate down, TEMP) defers the mail with 4.7.5: Postfix never falls back to plaintext for it")
	}
	if disc != nil && disc.MTASTS {
		out.Notes = append(out.Notes, "MTA-STS answers \"secure\": the MX certificate must chain to a public CA, so keep smtp_tls_CApath = /etc/ssl/certs (Debian's default main.cf) besides smtp_tls_CAfile")
	}
	if disc != nil && disc.DANE {
		add("smtp_dns_support_level", "dnssec", AtLeast("disabled", "enabled"),
			"DANE: without smtp_dns_support_level = dnssec Postfix turns every \"dane\" answer into \"may\" (tlsgate then withholds them)")
		add("smtp_host_lookup", "dns", AtLeast("native"),
			"DANE needs the DNSSEC status of DNS lookups: without dns in smtp_host_lookup Postfix turns every \"dane\" answer into \"may\" (a list with dns, such as \"dns, native\", is kept)")
		add("smtp_tls_dane_insecure_mx_policy", "dane", AtLeast("may"), "DANE: replaces Debian 12's unsafe default (may for an MX found by an insecure lookup), the default only from Postfix 3.7.13")
		out.Notes = append(out.Notes,
			"DANE needs a local validating resolver, for Postfix (it asks the nameserver of /etc/resolv.conf and trusts its AD bit) and tlsgate alike. Debian's unbound validates with the root trust anchor and listens on 127.0.0.1:",
			"  apt install unbound",
			"  echo 'nameserver 127.0.0.1' >/etc/resolv.conf",
			"  resolver = \"127.0.0.1:53\" in tlsgate's [discovery] (its default: the first nameserver of /etc/resolv.conf)")
	}
	if s.Delegation.Addr != "" && pins {
		spec := socketSpec(s.Delegation.Addr, q)
		// Inside check_policy_service { ... } Postfix splits attributes at
		// commas and whitespace; a value with blanks needs its own
		// "{ name = value }" (attr_override(3)).
		want := "check_policy_service { " + spec + ", { default_action = " + policyDefaultAction + " } }"
		add("smtpd_recipient_restrictions", want, AfterRelayCheck(sameSocket(spec, s.Delegation.Addr)),
			"tlsgate's policy service (fingerprint pins) where no answer of it could open a relay: right after the relay check (reject_unauth_destination, defer_unauth_destination) of smtpd_recipient_restrictions, or first there when smtpd_relay_restrictions, which Postfix evaluates before, holds the relay check")
	}
	return out, nil
}

// sameSocket reports whether a list element (an address, or a "{ address,
// ... }" group) names the socket spec, written relative to the queue
// directory or as the absolute address abs.
func sameSocket(spec, abs string) func(string) bool {
	return func(e string) bool {
		f := braceFirst(e)
		return f == spec || f == abs
	}
}

// policyDefaultAction is what Postfix answers while tlsgate's policy
// delegation service is unreachable: a temporary failure, so that nothing
// is accepted unjudged.
const policyDefaultAction = "451 4.3.5 TLS policy service unavailable"

// socketSpec renders a tlsgate listener the way Postfix names it: unix
// sockets below the queue directory become relative paths.
func socketSpec(addr, queueDir string) string {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if rel, err := filepath.Rel(queueDir, path); err == nil && !strings.HasPrefix(rel, "..") {
			path = rel
		}
		return "unix:" + path
	}
	return addr // inet:HOST:PORT is Postfix's own syntax
}
