// Package mtaconf derives the MTA configuration that wires Postfix or
// Sendmail to tlsgate from the same policy file the daemons read, so that
// the two cannot disagree: the milter socket with fail-closed defaults, the
// outbound TLS policy socketmap, client-certificate requests, CA files and
// (Postfix) the policy-delegation check that enforces fingerprint pins.
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

// Postfix holds the generated Postfix settings.
type Postfix struct {
	// Main lists main.cf parameters in order as name, value pairs.
	Main [][2]string
	// Notes are comments that explain choices (printed with "# ").
	Notes []string
}

// ForPostfix derives main.cf settings from p.
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
	set := func(k, v string) { out.Main = append(out.Main, [2]string{k, v}) }
	note := func(f string, a ...any) { out.Notes = append(out.Notes, fmt.Sprintf(f, a...)) }

	askCert, pins, outbound := false, false, false
	for _, ep := range p.Endpoints {
		askCert = askCert || ep.Inbound.RequestCert
		pins = pins || len(ep.Inbound.Fingerprints) > 0
		outbound = outbound || ep.Outbound.Active()
	}
	set("smtpd_tls_security_level", "may")
	if s.ServerCert != "" {
		set("smtpd_tls_cert_file", s.ServerCert)
		set("smtpd_tls_key_file", s.ServerKey)
	}
	if s.CABundle != "" {
		set("smtpd_tls_CAfile", s.CABundle)
		set("smtp_tls_CAfile", s.CABundle)
	}
	if askCert {
		set("smtpd_tls_ask_ccert", "yes")
		note("smtpd_tls_ask_ccert is global in Postfix 3.7: every TLS client is asked for a certificate, not only the endpoints with request_cert (a client may decline; only covered peers are judged)")
	}
	set("smtpd_tls_received_header", "yes")
	set("smtpd_tls_fingerprint_digest", "sha256")
	set("smtp_tls_fingerprint_digest", "sha256")
	note("fingerprints are SHA-256; Postfix defaults to md5 below compatibility_level 3.6, so the digest is set explicitly")
	if s.Milter.Addr != "" {
		set("smtpd_milters", socketSpec(s.Milter.Addr, q))
		set("milter_default_action", "tempfail")
		set("milter_protocol", "6")
		note("milter_default_action = tempfail: while tlsgate's milter is down, SMTP clients get 4xx and retry; nothing is accepted unjudged")
	}
	disc := s.Discovery
	if s.Socketmap.Addr != "" && (outbound || disc != nil) {
		set("smtp_tls_security_level", "may")
		set("smtp_tls_policy_maps", "socketmap:"+socketSpec(s.Socketmap.Addr, q)+":"+s.MapName)
		note("a policy lookup that fails (daemon down, TEMP) defers the mail with 4.7.5; Postfix never falls back to plaintext for it")
	}
	if disc != nil && disc.MTASTS {
		note("MTA-STS answers \"secure\": the MX certificate must chain to a public CA, so keep smtp_tls_CApath = /etc/ssl/certs (Debian's default main.cf) besides smtp_tls_CAfile")
	}
	if disc != nil && disc.DANE {
		set("smtp_dns_support_level", "dnssec")
		set("smtp_host_lookup", "dns")
		set("smtp_tls_dane_insecure_mx_policy", "dane")
		note("DANE: without smtp_dns_support_level = dnssec and smtp_host_lookup = dns Postfix turns every \"dane\" answer into \"may\" (tlsgate then withholds them); smtp_tls_dane_insecure_mx_policy = dane replaces Debian 12's unsafe default (may for an MX found by an insecure lookup), the default only from Postfix 3.7.13")
		note("DANE needs a local validating resolver, for Postfix (it asks the nameserver of /etc/resolv.conf and trusts its AD bit) and tlsgate alike. Debian's unbound validates with the root trust anchor and listens on 127.0.0.1:")
		note("  apt install unbound")
		note("  echo 'nameserver 127.0.0.1' >/etc/resolv.conf")
		note("  resolver = \"127.0.0.1:53\" in tlsgate's [discovery] (its default: the first nameserver of /etc/resolv.conf)")
	}
	if s.Delegation.Addr != "" && pins {
		// Inside check_policy_service { ... } Postfix splits attributes at
		// commas and whitespace; a value with blanks needs its own
		// "{ name = value }" (attr_override(3)).
		set("smtpd_recipient_restrictions", "check_policy_service { "+socketSpec(s.Delegation.Addr, q)+", { default_action = "+policyDefaultAction+" } }")
		note("if main.cf already sets smtpd_recipient_restrictions, put the check_policy_service entry first in your list instead")
	}
	return out, nil
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

// Text renders the settings as lines to paste into main.cf, each
// preceded by the notes.
func (pf *Postfix) Text(source string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# main.cf settings generated by tlsgate mta-config from %s\n", source)
	for _, n := range pf.Notes {
		fmt.Fprintf(&b, "# %s\n", n)
	}
	for _, kv := range pf.Main {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	return b.String()
}

// Sendmail derives the .mc lines from p.
func Sendmail(p *policy.Policy) (string, error) {
	if p.MTA != policy.Sendmail {
		return "", fmt.Errorf("mtaconf: %s is written for mta = %q, not sendmail", p.File, p.MTA)
	}
	s := p.Settings
	askCert, outbound := false, false
	for _, ep := range p.Endpoints {
		askCert = askCert || ep.Inbound.RequestCert
		outbound = outbound || ep.Outbound.Active()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "dnl sendmail.mc lines generated by tlsgate mta-config from %s\n", p.File)
	if s.CABundle != "" {
		fmt.Fprintf(&b, "define(`confCACERT_PATH', `%s')dnl\n", filepath.Dir(s.CABundle))
		fmt.Fprintf(&b, "define(`confCACERT', `%s')dnl\n", s.CABundle)
	}
	if s.ServerCert != "" {
		fmt.Fprintf(&b, "define(`confSERVER_CERT', `%s')dnl\ndefine(`confSERVER_KEY', `%s')dnl\n", s.ServerCert, s.ServerKey)
		fmt.Fprintf(&b, "define(`confCLIENT_CERT', `%s')dnl\ndefine(`confCLIENT_KEY', `%s')dnl\n", s.ServerCert, s.ServerKey)
	}
	b.WriteString("dnl {cert_fp} carries the SHA-256 digest fingerprints are compared with\n")
	b.WriteString("define(`confCERT_FINGERPRINT_ALGORITHM', `sha256')dnl\n")
	accessMap := s.Socketmap.Addr != "" && (outbound || askCert)
	sts := s.Socketmap.Addr != "" && s.Discovery != nil && s.Discovery.MTASTS
	if accessMap {
		b.WriteString("dnl every access-map lookup goes to tlsgate; it answers only TLS_Srv, TLS_Rcpt and Srv_Features\n")
		fmt.Fprintf(&b, "FEATURE(`access_db', `socket -T<TMPF> -d5 %s')dnl\n", sendmailSocket(s.Socketmap.Addr))
		b.WriteString("dnl Sendmail asks every TLS client for a certificate unless Srv_Features says V;\n")
		b.WriteString("dnl tlsgate answers Srv_Features with v (ask) for a client name or address whose\n")
		b.WriteString("dnl endpoint needs the client's certificate, and\n")
		if !p.AsksEveryClient() {
			b.WriteString("dnl with V for the bare Srv_Features: default, so no other client is asked\n")
		} else {
			b.WriteString("dnl leaves the bare Srv_Features: default to Sendmail, which asks every client:\n")
			b.WriteString("dnl an endpoint that needs a certificate lists a name or .domain pattern, which may\n")
			b.WriteString("dnl match only the sender domain, known only after STARTTLS. List client hosts as\n")
			b.WriteString("dnl addresses and ranges in such endpoints to ask their clients alone\n")
		}
	}
	if sts {
		b.WriteString("dnl MTA-STS (RFC 8461): tlsgate answers the map sts with the recipient domain's policy;\n")
		b.WriteString("dnl Sendmail then requires a certificate verified by confCACERT (which must hold the\n")
		b.WriteString("dnl public CAs MX hosts use), an MX name in the policy's list and a matching subjectAltName.\n")
		b.WriteString("dnl Endpoints stay in the access map: Sendmail applies both.\n")
		fmt.Fprintf(&b, "FEATURE(`sts', `socket -d5 -T<TMPF> %s')dnl\n", sendmailSocket(s.Socketmap.Addr))
	}
	if s.Milter.Addr != "" {
		b.WriteString("dnl F=T: while the milter is down, SMTP clients get 4xx and retry\n")
		fmt.Fprintf(&b, "INPUT_MAIL_FILTER(`tlsgate', `S=%s, F=T, T=C:30s;S:10s;R:10s;E:30s')dnl\n", sendmailSocket(s.Milter.Addr))
	}
	if accessMap {
		b.WriteString(SendmailAfterMailer + "\n")
		b.WriteString("dnl Always try STARTTLS. Sendmail's try_tls ruleset looks up Try_TLS: in the access map;\n")
		b.WriteString("dnl while tlsgate is unreachable that lookup fails, try_tls answers \"do not use STARTTLS\"\n")
		b.WriteString("dnl and Sendmail would send MAIL FROM in clear before tls_rcpt defers the recipients.\n")
		b.WriteString("dnl A $# result other than error or discard from Local_try_tls ends try_tls with\n")
		b.WriteString("dnl success, so STARTTLS is used whenever the server offers it, whatever the map says.\n")
		b.WriteString("dnl LOCAL_TRY_TLS must come after MAILER() (cf/m4/cfhead.m4 warns otherwise).\n")
		b.WriteString(sendmailTryTLS)
	}
	return b.String(), nil
}

// SendmailAfterMailer is the line of Sendmail's output after which the
// lines belong after the MAILER() lines of the .mc file; the lines before
// it belong before them (FEATURE() must precede MAILER()).
const SendmailAfterMailer = "dnl ---- the lines below go after the MAILER() lines of the .mc ----"

// sendmailTryTLS makes Sendmail's try_tls ruleset succeed without asking
// the access map: its Local_try_tls hook is consulted first, and any
// "$#" result it returns becomes try_tls's result (cf/m4/proto.m4). Only
// "$#error" and "$#discard" make rscheck() fail, and deliver.c skips
// STARTTLS only when rscheck("try_tls") fails.
const sendmailTryTLS = "LOCAL_TRY_TLS\nR$*\t\t$# OK\n"

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
