package certid

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Attr is one attribute of a distinguished name, such as CN=mx.example.com.
type Attr struct {
	// Type is the attribute's short name (see [AttrName]) or a dotted OID
	// for a type without one.
	Type string
	// Value is the attribute value, unescaped.
	Value string
}

// DN is a distinguished name as a list of attributes in certificate order,
// most significant first: the order of OpenSSL's /C=../O=../CN=.. form.
type DN []Attr

// attrTypes is the one table of attribute types: the OID, the short name
// OpenSSL prints (X509_NAME_oneline, which Sendmail reports in
// {cert_subject}, and "openssl x509 -nameopt RFC2253") and the other names
// an administrator may write.
var attrTypes = []struct {
	oid, name string
	aliases   []string
}{
	{"2.5.4.6", "C", []string{"countryName"}},
	{"2.5.4.8", "ST", []string{"S", "stateOrProvinceName"}},
	{"2.5.4.7", "L", []string{"localityName"}},
	{"2.5.4.10", "O", []string{"organizationName"}},
	{"2.5.4.11", "OU", []string{"organizationalUnitName"}},
	{"2.5.4.3", "CN", []string{"commonName"}},
	{"1.2.840.113549.1.9.1", "emailAddress", []string{"E", "email"}},
	{"0.9.2342.19200300.100.1.25", "DC", []string{"domainComponent"}},
	{"0.9.2342.19200300.100.1.1", "UID", []string{"userId"}},
	{"2.5.4.5", "serialNumber", nil},
	{"2.5.4.9", "street", []string{"streetAddress"}},
	{"2.5.4.12", "title", nil},
	{"2.5.4.42", "GN", []string{"givenName"}},
	{"2.5.4.4", "SN", []string{"surname"}},
	{"2.5.4.17", "postalCode", nil},
	{"2.5.4.97", "organizationIdentifier", nil},
}

// attrAliases maps lower-cased names, aliases and OIDs to short names.
var attrAliases = func() map[string]string {
	m := map[string]string{}
	for _, t := range attrTypes {
		m[t.oid] = t.name
		m[strings.ToLower(t.name)] = t.name
		for _, a := range t.aliases {
			m[strings.ToLower(a)] = t.name
		}
	}
	return m
}()

// AttrName returns the short name of the attribute type oid, as OpenSSL
// prints it (CN, serialNumber, street, emailAddress, ...), or the dotted
// OID for a type without one.
func AttrName(oid asn1.ObjectIdentifier) string {
	if c, ok := attrAliases[oid.String()]; ok {
		return c
	}
	return oid.String()
}

var attrTypeRE = regexp.MustCompile(`^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)$`)

func canonicalType(t string) (string, error) {
	t = strings.TrimSpace(t)
	if strings.HasPrefix(strings.ToLower(t), "oid.") {
		t = t[4:]
	}
	if !attrTypeRE.MatchString(t) {
		return "", fmt.Errorf("%q is not an attribute type", t)
	}
	if c, ok := attrAliases[strings.ToLower(t)]; ok {
		return c, nil
	}
	if t[0] >= '0' && t[0] <= '9' {
		return t, nil
	}
	return "", fmt.Errorf("unknown attribute type %q (known: C, ST, L, O, OU, CN, emailAddress, DC, UID, serialNumber, or a dotted OID)", t)
}

// ParseDN parses a distinguished name written either in RFC 4514 form
// ("CN=mx.example.com, O=Example, C=US", or the same in certificate order
// "C=US, O=Example, CN=mx.example.com") or in OpenSSL's one-line form
// ("/C=US/O=Example/CN=mx.example.com"). Attribute aliases (E,
// emailAddress; S, ST; ...) are accepted. Comma-separated names are taken in
// RFC 4514 order (least significant first) when they start with CN, UID or
// emailAddress or end with C or DC, and in certificate order otherwise.
func ParseDN(s string) (DN, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("empty distinguished name")
	}
	if strings.HasPrefix(s, "/") {
		return parseSlashDN(s)
	}
	return parseCommaDN(s)
}

var slashSplitRE = regexp.MustCompile(`/([A-Za-z][A-Za-z0-9.-]*|[0-9]+(?:\.[0-9]+)+)=`)

func parseSlashDN(s string) (DN, error) {
	locs := slashSplitRE.FindAllStringSubmatchIndex(s, -1)
	if len(locs) == 0 || locs[0][0] != 0 {
		return nil, fmt.Errorf("%q: expected /TYPE=value/TYPE=value", s)
	}
	var dn DN
	for i, loc := range locs {
		end := len(s)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		typ, err := canonicalType(s[loc[2]:loc[3]])
		if err != nil {
			return nil, err
		}
		dn = append(dn, Attr{Type: typ, Value: unescapeOneline(s[loc[1]:end])})
	}
	return dn, nil
}

// unescapeOneline undoes OpenSSL's X509_NAME_oneline \xHH escapes.
func unescapeOneline(v string) string {
	if !strings.Contains(v, `\x`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+4 <= len(v) && v[i+1] == 'x' {
			n, err := strconv.ParseUint(v[i+2:i+4], 16, 8)
			if err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

func parseCommaDN(s string) (DN, error) {
	var (
		dn     DN
		cur    strings.Builder
		typ    string
		inType = true
		quoted bool
	)
	flush := func() error {
		if inType {
			return fmt.Errorf("%q: attribute %q has no '='", s, strings.TrimSpace(cur.String()))
		}
		t, err := canonicalType(typ)
		if err != nil {
			return err
		}
		v := strings.TrimSpace(cur.String())
		dn = append(dn, Attr{Type: t, Value: v})
		cur.Reset()
		inType = true
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inType && c == '=':
			typ = cur.String()
			cur.Reset()
			inType = false
			// skip leading spaces of the value
			for i+1 < len(s) && s[i+1] == ' ' {
				i++
			}
			if i+1 < len(s) && s[i+1] == '"' {
				quoted = true
				i++
			}
		case !inType && quoted && c == '"':
			quoted = false
		case !inType && quoted:
			if c == '\\' && i+1 < len(s) {
				i++
				c = s[i]
			}
			cur.WriteByte(c)
		case !inType && c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("%q: dangling backslash", s)
			}
			if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
				n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
				cur.WriteByte(byte(n))
				i += 2
			} else {
				i++
				cur.WriteByte(s[i])
			}
		case !inType && (c == ',' || c == ';' || c == '+'):
			if err := flush(); err != nil {
				return nil, err
			}
		case inType && (c == ',' || c == ';' || c == '+'):
			return nil, fmt.Errorf("%q: attribute %q has no '='", s, strings.TrimSpace(cur.String()))
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, fmt.Errorf("%q: unterminated quote", s)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	first, last := dn[0].Type, dn[len(dn)-1].Type
	if first == "CN" || first == "UID" || first == "emailAddress" || last == "C" || last == "DC" {
		for i, j := 0, len(dn)-1; i < j; i, j = i+1, j-1 {
			dn[i], dn[j] = dn[j], dn[i]
		}
	}
	return dn, nil
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// DNFromPKIX converts a parsed certificate name into a DN in certificate
// order.
func DNFromPKIX(n pkix.Name) DN {
	var dn DN
	var seq pkix.RDNSequence
	if n.Names != nil {
		// n.Names holds every attribute in order when parsed from a certificate.
		for _, atv := range n.Names {
			seq = append(seq, pkix.RelativeDistinguishedNameSET{atv})
		}
	} else {
		seq = n.ToRDNSequence()
	}
	for _, rdn := range seq {
		for _, atv := range rdn {
			dn = append(dn, Attr{Type: AttrName(atv.Type), Value: fmt.Sprint(atv.Value)})
		}
	}
	return dn
}

// String returns the DN in certificate order with comma separators, as in
// "C=US, O=Example, CN=mx.example.com", escaped as RFC 4514 says (see
// [RFC4514]): the order in which Sendmail reports a name and an
// administrator usually writes it.
func (d DN) String() string {
	var b strings.Builder
	for i, a := range d {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.Type)
		b.WriteByte('=')
		b.WriteString(escapeValue(a.Value))
	}
	return b.String()
}

// RFC4514 renders a DER-encoded X.501 Name as an RFC 4514 string, most
// specific RDN first and without blanks, as "openssl x509 -nameopt
// RFC2253" prints it (and "tlsgate certs show"): attributes of one RDN are
// joined by '+'; the value of a type without a short name, or one that is
// no string, is written as '#' and the hex of its DER (RFC 4514 section
// 2.4); an undecodable name is '#' and its hex.
func RFC4514(rawName []byte) string {
	var seq rawRDNSequence
	if rest, err := asn1.Unmarshal(rawName, &seq); err != nil || len(rest) > 0 {
		return "#" + hex.EncodeToString(rawName)
	}
	var b strings.Builder
	for i := len(seq) - 1; i >= 0; i-- {
		if i < len(seq)-1 {
			b.WriteByte(',')
		}
		for j, atv := range seq[i] {
			if j > 0 {
				b.WriteByte('+')
			}
			name := AttrName(atv.Type)
			b.WriteString(name)
			b.WriteByte('=')
			var s string
			if rest, err := asn1.Unmarshal(atv.Value.FullBytes, &s); err == nil && len(rest) == 0 && name != atv.Type.String() {
				b.WriteString(escapeValue(s))
			} else {
				b.WriteString("#" + hex.EncodeToString(atv.Value.FullBytes))
			}
		}
	}
	return b.String()
}

// rawRDNSequence is an X.501 Name with every value kept as its DER, so
// that RFC4514 can print it unchanged. (A slice type named ...SET is an
// ASN.1 SET OF.)
type (
	rawRDNSequence []rawRDNSET
	rawRDNSET      []rawATV
	rawATV         struct {
		Type  asn1.ObjectIdentifier
		Value asn1.RawValue
	}
)

// escapeValue escapes an attribute value per RFC 4514 section 2.4: the
// specials, a leading '#' or blank, a trailing blank, and control bytes
// as \HH.
func escapeValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case strings.IndexByte(`,+"\<>;`, c) >= 0, c == '#' && i == 0, c == ' ' && (i == 0 || i == len(s)-1):
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			b.WriteString(`\` + hex.EncodeToString([]byte{c}))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// OpenSSL returns the DN in OpenSSL's X509_NAME_oneline form, as Sendmail
// reports it in {cert_subject} and {cert_issuer} (before xtext encoding).
func (d DN) OpenSSL() string {
	var b strings.Builder
	for _, a := range d {
		b.WriteByte('/')
		b.WriteString(a.Type)
		b.WriteByte('=')
		for j := 0; j < len(a.Value); j++ {
			c := a.Value[j]
			if c < 0x20 || c > 0x7e {
				fmt.Fprintf(&b, `\x%02X`, c)
				continue
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

// CN returns the last (most specific) common name, or "".
func (d DN) CN() string {
	for i := len(d) - 1; i >= 0; i-- {
		if d[i].Type == "CN" {
			return d[i].Value
		}
	}
	return ""
}

// key is the comparison form: canonical types, folded case and spacing,
// sorted, so that either written order compares equal.
func (d DN) key() string {
	parts := make([]string, len(d))
	for i, a := range d {
		parts[i] = strings.ToLower(a.Type) + "=" + FoldValue(a.Value)
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x00")
}

// FoldValue returns the comparison form of an attribute value: case and
// runs of blanks folded, outer blanks trimmed.
func FoldValue(v string) string {
	return strings.ToLower(strings.Join(strings.Fields(v), " "))
}

// Equal reports whether d and o name the same entity after normalising
// attribute aliases, case, spacing and order.
func (d DN) Equal(o DN) bool {
	return len(d) == len(o) && d.key() == o.key()
}
