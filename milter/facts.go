package milter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/internal/certid"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// Macro names the milter reads. Several have no constant in go-milter.
const (
	macroQueueID       = "i"
	macroMTAHost       = "j"
	macroTLSVersion    = "{tls_version}"
	macroCipher        = "{cipher}"
	macroCipherBits    = "{cipher_bits}"
	macroAlgBits       = "{alg_bits}"
	macroCertSubject   = "{cert_subject}"
	macroCertIssuer    = "{cert_issuer}"
	macroCNSubject     = "{cn_subject}"
	macroCNIssuer      = "{cn_issuer}"
	macroVerify        = "{verify}"
	macroCertMD5       = "{cert_md5}"
	macroCertFP        = "{cert_fp}"
	macroClientAddr    = "{client_addr}"
	macroClientName    = "{client_name}"
	macroClientPTR     = "{client_ptr}"
	macroClientResolve = "{client_resolve}"
	macroMailAddr      = "{mail_addr}"
)

// ConnectMacros are requested at the connect stage: Postfix's default list
// (j {daemon_name} {daemon_addr} v _), Sendmail's ({if_name} {if_addr}) and
// the client's address and verified name.
var ConnectMacros = []string{
	"j", "{daemon_name}", "{daemon_addr}", "{daemon_port}", "v", "_",
	"{if_name}", "{if_addr}",
	macroClientAddr, macroClientName, macroClientPTR, macroClientResolve,
}

// tlsMacros are the TLS facts of a session. Postfix knows the first five;
// the others only Sendmail reports.
var tlsMacros = []string{
	macroTLSVersion, macroCipher, macroCipherBits, macroCertSubject, macroCertIssuer,
	macroVerify, macroCNSubject, macroCNIssuer, macroCertMD5, macroCertFP, macroAlgBits,
}

// HeloMacros are requested at HELO/EHLO: the TLS facts (the MTAs' default
// HELO list plus Sendmail's extra certificate macros).
var HeloMacros = tlsMacros

// MailMacros are requested at MAIL FROM: both MTAs' default MAIL lists plus
// the TLS facts again, because a client may send MAIL without repeating
// EHLO after STARTTLS.
var MailMacros = append([]string{
	macroQueueID, "{auth_type}", "{auth_authen}", "{auth_author}", "{auth_ssf}",
	macroMailAddr, "{mail_host}", "{mail_mailer}",
}, tlsMacros...)

// EOMMacros are requested at end of message: the queue ID (Postfix's
// default; Sendmail reports it at MAIL already).
var EOMMacros = []string{macroQueueID, "{msg_id}"}

// Sendmail's {cn_subject}/{cn_issuer} stand-ins for unusable names.
var sendmailBadCN = map[string]bool{
	"BadCertificateUnknown":     true,
	"BadCertificateTooLong":     true,
	"BadCertificateContainsNUL": true,
}

// observation is what an MTA reported about an SMTP session, normalised
// for policy.Judge, plus the details needed for logs and headers.
type observation struct {
	// Facts are the judged facts. Sender is taken from {mail_addr}; the
	// milter overrides it with the MAIL FROM argument.
	Facts policy.Facts
	// Verify is the certificate state as logs and headers show it: on
	// Sendmail its own {verify} word (OK, FAIL, NO, NOT, ...); on Postfix
	// OK for a trusted certificate and UNVERIFIED otherwise (no certificate
	// or one that did not verify: Postfix does not tell a milter which);
	// "" for a plaintext session.
	Verify string
	// FingerprintProblem says why the certificate's fingerprint cannot be
	// compared with SHA-256 pins although the MTA reports fingerprints
	// (Sendmail's default {cert_md5}, another {cert_fp} digest, or none
	// reported for a presented certificate); "" otherwise. Facts then has
	// FingerprintsKnown set and no fingerprints, so a pinned endpoint
	// fails closed.
	FingerprintProblem string
	// Notes lists values that could not be decoded (bad xtext, unparsable
	// DNs); they were treated as absent.
	Notes []string
}

// factsFromMacros normalises the macros of one session as reported by mta
// (see postfixCert and sendmailCert for each MTA's certificate macros).
// get returns a macro's value and whether the MTA sent it at all.
//
// Both MTAs: an empty or absent {tls_version} is a plaintext session
// (VerifyNone); {client_addr} may carry "IPv6:"; a {client_name} of
// "unknown" or "[addr]", or a {client_resolve} other than OK, is no
// verified name.
func factsFromMacros(mta policy.MTA, get func(name string) (string, bool)) observation {
	var o observation
	f := &o.Facts
	val := func(name string) string {
		v, _ := get(name)
		return v
	}
	f.ClientAddr = parseClientAddr(val(macroClientAddr))
	f.ClientName = verifiedName(val(macroClientName))
	if r, ok := get(macroClientResolve); ok && r != "" && !strings.EqualFold(r, "OK") {
		f.ClientName = ""
	}
	f.Sender = strings.Trim(val(macroMailAddr), "<>")

	f.TLSVersion = strings.TrimSpace(val(macroTLSVersion))
	if f.TLSVersion == "" {
		// Plaintext: nothing else can be true, whatever stale macros say.
		f.Verify = policy.VerifyNone
		f.FingerprintsKnown = mta == policy.Sendmail
		return o
	}
	f.Cipher = strings.TrimSpace(val(macroCipher))
	f.Bits, _ = strconv.Atoi(strings.TrimSpace(val(macroCipherBits)))
	if mta == policy.Sendmail {
		sendmailCert(&o, get)
	} else {
		postfixCert(&o, get)
	}
	return o
}

// postfixCert reads Postfix's certificate macros of a TLS session:
// {cert_subject}/{cert_issuer} are plain common names sent only for a
// trusted certificate, so the pair's presence means VerifyTrusted and its
// absence VerifyUnknown; no DNs, no fingerprints (FingerprintsKnown false:
// the policy-delegation server checks pins).
func postfixCert(o *observation, get func(name string) (string, bool)) {
	f := &o.Facts
	subject, sok := get(macroCertSubject)
	issuer, iok := get(macroCertIssuer)
	if sok && iok {
		f.Verify = policy.VerifyTrusted
		f.SubjectCN, f.IssuerCN = subject, issuer
		o.Verify = "OK"
	} else {
		f.Verify = policy.VerifyUnknown
		o.Verify = "UNVERIFIED"
	}
}

// sendmailCert reads Sendmail's certificate macros of a TLS session: xtext
// values are decoded; {cert_subject}/{cert_issuer} are OpenSSL one-line
// DNs, {cn_subject}/{cn_issuer} the CNs; {verify} OK or TRUSTED means
// VerifyTrusted, NO, NOT, NONE or CLEAR VerifyNone, anything else
// non-empty VerifyUntrusted, absent or empty VerifyUnknown. Fingerprints
// are known: {cert_fp} is used when it holds a SHA-256 digest; an MD5
// {cert_md5} or any other digest is not comparable and is reported in
// FingerprintProblem.
func sendmailCert(o *observation, get func(name string) (string, bool)) {
	f := &o.Facts
	val := func(name string) string {
		v, _ := get(name)
		return v
	}
	decode := func(name string) (string, bool) {
		v, ok := get(name)
		if !ok {
			return v, ok
		}
		d, err := certid.DecodeXtext(v)
		if err != nil {
			o.Notes = append(o.Notes, name+": "+err.Error())
			return "", false
		}
		return d, true
	}
	dn := func(name string) certid.DN {
		s, ok := decode(name)
		if !ok || s == "" {
			return nil
		}
		d, err := certid.ParseDN(s)
		if err != nil {
			o.Notes = append(o.Notes, name+": "+err.Error())
		}
		return d
	}
	cn := func(name string, fromDN certid.DN) string {
		s, ok := decode(name)
		switch {
		case !ok:
			return fromDN.CN()
		case sendmailBadCN[s]:
			return ""
		}
		return s
	}

	verify := strings.TrimSpace(val(macroVerify))
	o.Verify = verify
	switch strings.ToUpper(verify) {
	case "OK", "TRUSTED":
		f.Verify = policy.VerifyTrusted
	case "NO", "NOT", "NONE", "CLEAR":
		f.Verify = policy.VerifyNone
	case "":
		f.Verify = policy.VerifyUnknown
		o.Verify = "UNKNOWN"
	default:
		f.Verify = policy.VerifyUntrusted
	}
	f.SubjectDN, f.IssuerDN = dn(macroCertSubject), dn(macroCertIssuer)
	f.SubjectCN, f.IssuerCN = cn(macroCNSubject, f.SubjectDN), cn(macroCNIssuer, f.IssuerDN)

	f.FingerprintsKnown = true
	fp := strings.TrimSpace(val(macroCertFP))
	md5 := strings.TrimSpace(val(macroCertMD5))
	presented := f.Verify == policy.VerifyTrusted || f.Verify == policy.VerifyUntrusted
	switch {
	case fp != "":
		if d, err := certid.ParseFingerprint(fp); err == nil {
			f.Fingerprints = []certid.Fingerprint{d}
		} else {
			o.FingerprintProblem = "Sendmail reported {cert_fp} with a digest other than SHA-256 (" + digestName(fp) + "); set O CertFingerprintAlgorithm=sha256"
		}
	case md5 != "":
		o.FingerprintProblem = "Sendmail reported only an MD5 fingerprint ({cert_md5}), which cannot be compared with SHA-256 pins; set O CertFingerprintAlgorithm=sha256"
	case presented || f.Verify == policy.VerifyUnknown:
		o.FingerprintProblem = "Sendmail reported no fingerprint macro ({cert_fp}/{cert_md5}) for this TLS session; allow the milter to request them"
	}
}

// digestName guesses a digest from the length of its colon-hex form.
func digestName(s string) string {
	n := len(strings.ReplaceAll(s, ":", "")) / 2
	switch n {
	case 16:
		return "MD5"
	case 20:
		return "SHA-1"
	case 28:
		return "SHA-224"
	case 48:
		return "SHA-384"
	case 64:
		return "SHA-512"
	}
	return strconv.Itoa(n) + " bytes"
}

// parseClientAddr reads {client_addr} as Postfix ("IPv6:2001:db8::1") and
// Sendmail ("IPv6:2001:0db8:0000:...") write it, also in brackets; an
// IPv4-mapped IPv6 address becomes IPv4. It returns the zero Addr when s
// is not an address.
func parseClientAddr(s string) netip.Addr {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		s = s[5:]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// verifiedName returns name unless it is a stand-in for "no verified
// name": "", "unknown" (Postfix) or "[addr]" (Sendmail).
func verifiedName(name string) string {
	name = strings.TrimSpace(name)
	if name == "" || strings.EqualFold(name, "unknown") || strings.HasPrefix(name, "[") {
		return ""
	}
	return name
}

// mtaMismatch reports an error when the macros show that the MTA is not
// the one the policy is written for. Reading one MTA's macros with the
// other's rules can fail open: Sendmail sends {cert_issuer} (empty) for
// every TLS session, which under Postfix's rules would mean "trusted". So
// Postfix-mode refuses sessions that carry macros only Sendmail knows
// ({verify}, {cn_subject}, {cn_issuer}, {cert_md5}, {cert_fp}), and
// Sendmail-mode refuses a "v" macro that names Postfix.
func mtaMismatch(mta policy.MTA, get func(name string) (string, bool)) error {
	switch mta {
	case policy.Postfix:
		for _, n := range []string{macroVerify, macroCNSubject, macroCNIssuer, macroCertMD5, macroCertFP} {
			if _, ok := get(n); ok {
				return fmt.Errorf("the policy says mta = \"postfix\" but the MTA sent %s, which only Sendmail knows; set mta = \"sendmail\"", n)
			}
		}
	case policy.Sendmail:
		if v, ok := get("v"); ok && strings.HasPrefix(strings.TrimSpace(v), "Postfix") {
			return fmt.Errorf("the policy says mta = \"sendmail\" but the MTA is %q; set mta = \"postfix\"", v)
		}
	default:
		return fmt.Errorf("unknown mta %q", mta)
	}
	return nil
}
