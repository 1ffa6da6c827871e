// Package mtasts parses and fetches SMTP MTA Strict Transport Security
// policies (RFC 8461): the "_mta-sts" TXT record ([ParseRecord],
// [SelectRecord]), the policy file ([ParsePolicy]) and its HTTPS fetch
// ([Fetcher]). It knows nothing about caching or about the MTA; package
// discovery decides what a policy means for delivery.
//
// The parsers are strict about meaning and tolerant only where RFC 8461
// leaves no doubt: a policy with an unknown version, a mode other than
// testing/enforce/none, a missing or repeated version/mode/max_age, or a
// line that is not "key: value" is rejected; an "mx" entry that is an IP
// address or not a domain name is dropped (with the reason kept in
// [Policy.Dropped]) rather than failing the whole policy.
package mtasts

import (
	"errors"
	"fmt"
	"strings"
)

// Record is a parsed "_mta-sts.<domain>" TXT record (RFC 8461 §3.1).
type Record struct {
	// ID is the policy instance id ("id=" field): 1 to 32 letters and
	// digits. A change of ID tells senders to fetch the policy again.
	ID string
}

// ErrNoRecord means that no TXT record starts with "v=STSv1": the domain
// publishes no MTA-STS policy (a cached policy still applies, §3.1).
var ErrNoRecord = errors.New("mta-sts: no v=STSv1 TXT record")

// ErrMultipleRecords means that more than one TXT record starts with
// "v=STSv1": RFC 8461 §3.1 says to treat the domain as having no policy.
var ErrMultipleRecords = errors.New("mta-sts: more than one v=STSv1 TXT record")

// SelectRecord applies RFC 8461 §3.1 to the TXT records of
// "_mta-sts.<domain>", each given as its character-strings already
// concatenated without separators: records not starting with "v=STSv1"
// are discarded; exactly one must remain and parse. It returns
// ErrNoRecord, ErrMultipleRecords or the parse error otherwise.
func SelectRecord(txts []string) (Record, error) {
	var found string
	n := 0
	for _, t := range txts {
		if isSTSv1(t) {
			found = t
			n++
		}
	}
	switch n {
	case 0:
		return Record{}, ErrNoRecord
	case 1:
		return ParseRecord(found)
	}
	return Record{}, ErrMultipleRecords
}

// isSTSv1 reports whether t starts with the version field "v=STSv1"
// followed by a field delimiter or the end.
func isSTSv1(t string) bool {
	rest, ok := strings.CutPrefix(t, "v=STSv1")
	if !ok {
		return false
	}
	rest = strings.TrimLeft(rest, " \t")
	return rest == "" || rest[0] == ';'
}

// ParseRecord parses one MTA-STS TXT record (its strings concatenated):
//
//	sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
//	sts-field-delim = *WSP ";" *WSP
//	sts-version     = %s"v=STSv1"
//	sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
//	sts-extension   = sts-ext-name "=" sts-ext-value
//	sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
//	sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)
//
// The id field is required and may appear only once; extension fields
// are checked for syntax and otherwise ignored.
func ParseRecord(s string) (Record, error) {
	fields := strings.Split(s, ";")
	if strings.TrimRight(fields[0], " \t") != "v=STSv1" {
		return Record{}, fmt.Errorf("mta-sts: TXT record %q: must start with v=STSv1", clip(s))
	}
	var r Record
	seenID := false
	for i, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			if i == len(fields)-2 {
				break // one trailing delimiter is allowed
			}
			return Record{}, fmt.Errorf("mta-sts: TXT record %q: empty field", clip(s))
		}
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			return Record{}, fmt.Errorf("mta-sts: TXT record %q: field %q is not name=value", clip(s), clip(f))
		}
		if name == "id" {
			if seenID {
				return Record{}, fmt.Errorf("mta-sts: TXT record %q: id given twice", clip(s))
			}
			seenID = true
			if !validID(value) {
				return Record{}, fmt.Errorf("mta-sts: TXT record %q: id %q must be 1 to 32 letters and digits", clip(s), clip(value))
			}
			r.ID = value
			continue
		}
		if !validExtName(name) {
			return Record{}, fmt.Errorf("mta-sts: TXT record %q: bad field name %q", clip(s), clip(name))
		}
		if !validRecordExtValue(value) {
			return Record{}, fmt.Errorf("mta-sts: TXT record %q: bad value for %s", clip(s), name)
		}
	}
	if !seenID {
		return Record{}, fmt.Errorf("mta-sts: TXT record %q: no id field", clip(s))
	}
	return r, nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func validID(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

// validExtName checks (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."),
// the extension name syntax of both the TXT record and the policy.
func validExtName(s string) bool {
	if len(s) < 1 || len(s) > 32 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func validRecordExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == ';' || c == '=' {
			return false
		}
	}
	return true
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
