package dnslab

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// fqdn returns name with a trailing dot.
func fqdn(name string) string { return dns.Fqdn(name) }

// MXHost returns the records that make host (a name in zone) an MX of
// zone with preference 10 and address ip: "zone. MX 10 host." and
// "host. A ip".
func MXHost(zone, host, ip string) []string {
	return []string{
		fmt.Sprintf("%s IN MX 10 %s", fqdn(zone), fqdn(host)),
		A(host, ip),
	}
}

// A returns the record "name. IN A ip".
func A(name, ip string) string { return fmt.Sprintf("%s IN A %s", fqdn(name), ip) }

// TLSA311 returns a DANE-EE TLSA record for SMTP on host:
// "_25._tcp.host. IN TLSA 3 1 1 <SHA-256 of cert's SubjectPublicKeyInfo>",
// the record Postfix and RFC 7672 recommend.
func TLSA311(host string, cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return fmt.Sprintf("_25._tcp.%s IN TLSA 3 1 1 %s", fqdn(host), hex.EncodeToString(sum[:]))
}

// TLSARecord returns "_<port>._tcp.host. IN TLSA usage selector mtype
// data" for cert: selector 0 is the whole certificate, 1 its
// SubjectPublicKeyInfo; matching type 0 the full data, 1 SHA-256, 2
// SHA-512. Usage is written as given (0 to 3; 0 and 1 are unusable for
// SMTP, RFC 7672 §3.1.3), so tests can publish wrong records too.
func TLSARecord(host string, port int, usage, selector, mtype uint8, cert *x509.Certificate) (string, error) {
	data, err := dns.CertificateToDANE(selector, mtype, cert)
	if err != nil {
		return "", fmt.Errorf("dnslab: TLSA %d %d %d for %s: %w", usage, selector, mtype, host, err)
	}
	return fmt.Sprintf("_%d._tcp.%s IN TLSA %d %d %d %s", port, fqdn(host), usage, selector, mtype, data), nil
}

// STSRecords returns the records that publish an MTA-STS policy for zone
// with policy id: "_mta-sts.zone. TXT "v=STSv1; id=<id>"" and
// "mta-sts.zone. A 127.0.0.44" (the lab's HTTPS server, see
// [Lab.SetPolicy]).
func STSRecords(zone, id string) []string {
	return []string{
		fmt.Sprintf("_mta-sts.%s IN TXT \"v=STSv1; id=%s\"", fqdn(zone), id),
		A("mta-sts."+zone, STSIP),
	}
}

// Policy returns an MTA-STS policy body with LF line ends: version STSv1,
// mode, one "mx:" line per entry and max_age.
func Policy(mode string, maxAge int, mx ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: STSv1\nmode: %s\n", mode)
	for _, m := range mx {
		fmt.Fprintf(&b, "mx: %s\n", m)
	}
	fmt.Fprintf(&b, "max_age: %d\n", maxAge)
	return b.String()
}
