package dnslab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Signing says how a zone is signed.
type Signing int

const (
	// Signed: signed with a fresh key, valid from an hour ago for 30
	// days, its DS published in "test.": answers are secure (AD).
	Signed Signing = iota
	// Unsigned: not signed, no DS in "test.": answers are insecure (no
	// AD), whatever records the zone has (TLSA included).
	Unsigned
	// Bogus: signed and delegated like Signed, but one byte of the
	// signature of each RRSIG covering a type in [Zone.BogusTypes] is
	// flipped: those RRsets are bogus (SERVFAIL from the resolver), the
	// rest of the zone validates.
	Bogus
	// Expired: signed with a validity that ended 30 days ago: the whole
	// zone is bogus (SERVFAIL, "signature expired").
	Expired
)

// String returns "signed", "unsigned", "bogus" or "expired".
func (s Signing) String() string {
	switch s {
	case Signed:
		return "signed"
	case Unsigned:
		return "unsigned"
	case Bogus:
		return "bogus"
	case Expired:
		return "expired"
	}
	return fmt.Sprintf("Signing(%d)", int(s))
}

// Zone is a zone the lab's nsd serves, delegated from the lab's "test."
// zone, itself delegated from the lab's signed root.
type Zone struct {
	// Name is the zone's name, a child of "test." ("dane.test").
	Name string
	// Signing says how it is signed. Default: Signed.
	Signing Signing
	// BogusTypes are the RRset types whose signatures a Bogus zone
	// corrupts. Default: MX.
	BogusTypes []uint16
	// TTL is the zone's default TTL and negative-answer TTL, in seconds.
	// Default: 300.
	TTL uint32
	// Records are resource records in zone-file syntax, for example
	// "@ MX 10 mx", "mx A 127.0.0.35" or
	// "_25._tcp.mx.dane.test. TLSA 3 1 1 ab12...". Relative names are
	// relative to Name. The SOA and NS records are added by the lab. See
	// [MXHost], [TLSA311], [STSRecords].
	Records []string
}

// labTTL is the TTL of the lab's root and "test." zones.
const labTTL = 300

func (z *Zone) ttl() uint32 {
	if z.TTL == 0 {
		return 300
	}
	return z.TTL
}

// checkZoneName checks that name is a child of "test.".
func checkZoneName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	label, parent, ok := strings.Cut(n, ".")
	if !ok || parent != "test" || label == "" {
		return "", fmt.Errorf("dnslab: zone %q: must be a child of test. (like dane.test)", name)
	}
	if _, ok := dns.IsDomainName(n); !ok {
		return "", fmt.Errorf("dnslab: zone %q: not a domain name", name)
	}
	return n, nil
}

// zoneText returns the unsigned zone file of a zone with origin (with
// trailing dot), TTL ttl, serial and records.
func zoneText(origin string, ttl, serial uint32, records []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n$TTL %d\n", origin, ttl)
	fmt.Fprintf(&b, "@ IN SOA ns.test. hostmaster.test. %d 3600 600 86400 %d\n", serial, ttl)
	b.WriteString("@ IN NS ns.test.\n")
	for _, r := range records {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	return b.String()
}

// checkZoneText parses text with miekg/dns, so that a bad record is
// reported with the zone and line instead of as an nsd start failure.
func checkZoneText(origin, text string) error {
	zp := dns.NewZoneParser(strings.NewReader(text), origin, "")
	for _, ok := zp.Next(); ok; _, ok = zp.Next() {
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("dnslab: zone %s: %w", origin, err)
	}
	return nil
}

// keygen makes a ECDSA P-256 signing key (SEP flag set) for origin in
// dir and returns its base path (without .key/.private).
func keygen(dir, origin string) (string, error) {
	cmd := exec.Command("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("dnslab: ldns-keygen for %s: %v: %s", origin, err, stderrOf(err))
	}
	base := strings.TrimSpace(string(out))
	if base == "" {
		return "", fmt.Errorf("dnslab: ldns-keygen for %s printed no key name", origin)
	}
	return filepath.Join(dir, base), nil
}

// dsOf returns the SHA-256 DS record of key (zone-file line).
func dsOf(key string) (string, error) {
	out, err := exec.Command("ldns-key2ds", "-n", "-2", key+".key").Output()
	if err != nil {
		return "", fmt.Errorf("dnslab: ldns-key2ds %s: %v: %s", key, err, stderrOf(err))
	}
	return strings.TrimSpace(string(out)), nil
}

// sign signs the zone file in with key into out, valid from inception
// to expiration.
func sign(in, out, origin, key string, inception, expiration time.Time) error {
	cmd := exec.Command("ldns-signzone", "-o", origin,
		"-i", fmt.Sprint(inception.Unix()), "-e", fmt.Sprint(expiration.Unix()),
		"-f", out, in, key)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dnslab: ldns-signzone %s: %v: %s", origin, err, b)
	}
	return nil
}

// corrupt flips one byte of the signature of every RRSIG in the signed
// zone file path that covers one of types.
func corrupt(path, origin string, types []uint16) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cover := map[uint16]bool{}
	for _, t := range types {
		cover[t] = true
	}
	var b strings.Builder
	n := 0
	zp := dns.NewZoneParser(strings.NewReader(string(data)), origin, "")
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if sig, ok := rr.(*dns.RRSIG); ok && cover[sig.TypeCovered] {
			raw := []byte(sig.Signature)
			// Change one base64 character in the middle: a different,
			// still decodable signature.
			i := len(raw) / 2
			if raw[i] == 'A' {
				raw[i] = 'B'
			} else {
				raw[i] = 'A'
			}
			sig.Signature = string(raw)
			n++
		}
		b.WriteString(rr.String())
		b.WriteByte('\n')
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("dnslab: re-read %s: %w", path, err)
	}
	if n == 0 {
		return fmt.Errorf("dnslab: zone %s: no RRSIG covers %v, nothing made bogus", origin, typeNames(types))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func typeNames(types []uint16) []string {
	var out []string
	for _, t := range types {
		out = append(out, dns.TypeToString[t])
	}
	return out
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
