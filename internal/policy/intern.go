package policy

import (
	"strconv"
	"strings"
)

// interner shares equal requirements, and the answers rendered from
// outbound ones, among the endpoints of a file: partners mostly demand
// one of a few things (encryption, a validated certificate), and a
// policy of many endpoints keeps each set once.
type interner struct {
	reqs map[string]*Requirements
	outs map[*Requirements]string
}

// requirements returns the shared copy of r.
func (in *interner) requirements(r Requirements) *Requirements {
	if in.reqs == nil {
		in.reqs = map[string]*Requirements{}
	}
	key := r.key()
	if s, ok := in.reqs[key]; ok {
		return s
	}
	s := &r
	in.reqs[key] = s
	return s
}

// outbound returns the shared copy of outbound requirements o with their
// answer for mta. An interner serves one file, compiled for one MTA.
func (in *interner) outbound(o *Requirements, mta MTA) (*Requirements, string) {
	o = in.requirements(*o)
	if in.outs == nil {
		in.outs = map[*Requirements]string{}
	}
	a, ok := in.outs[o]
	if !ok {
		switch mta {
		case Postfix:
			a = postfixEntry(o)
		case Sendmail:
			a = sendmailRHS(o)
		}
		in.outs[o] = a
	}
	return o, a
}

// key is a text that differs between requirements exactly when they
// differ: each string is written with its length first, so no value can
// pass for another.
func (r *Requirements) key() string {
	var b strings.Builder
	str := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	flag := func(v bool) {
		if v {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	flag(r.Encryption)
	flag(r.RequestCert)
	flag(r.ValidateCert)
	flag(r.MatchCN)
	str(strconv.Itoa(r.MinBits))
	str(r.CN)
	str(r.IssuerCN)
	str(r.TrustAnchorFile)
	for _, d := range []DN{r.SubjectDN, r.IssuerDN} {
		flag(d != nil) // an empty DN apart from none
		str(strconv.Itoa(len(d)))
		for _, a := range d {
			str(a.Type)
			str(a.Value)
		}
	}
	str(strconv.Itoa(len(r.Fingerprints)))
	for _, f := range r.Fingerprints {
		b.Write(f[:])
	}
	return b.String()
}
