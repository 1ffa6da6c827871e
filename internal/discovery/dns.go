package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DNSErrorKind classifies a failed DNS lookup.
type DNSErrorKind uint8

const (
	// DNSTimeout: no answer in time.
	DNSTimeout DNSErrorKind = iota
	// DNSNetwork: the resolver could not be reached (refused, unreachable).
	DNSNetwork
	// DNSServFail: SERVFAIL without a DNSSEC reason.
	DNSServFail
	// DNSBogus: SERVFAIL because DNSSEC validation failed (an extended
	// DNS error, RFC 8914, code 1 to 12: bogus, signature expired, ...).
	DNSBogus
	// DNSRefused: the resolver refused the query (REFUSED).
	DNSRefused
	// DNSOther: any other failure (FORMERR, NOTIMP, malformed answer).
	DNSOther
	numDNSErrorKinds
)

// NumDNSErrorKinds is the number of DNSErrorKind values.
const NumDNSErrorKinds = int(numDNSErrorKinds)

// String returns "timeout", "network", "servfail", "bogus", "refused" or
// "other".
func (k DNSErrorKind) String() string {
	switch k {
	case DNSTimeout:
		return "timeout"
	case DNSNetwork:
		return "network"
	case DNSServFail:
		return "servfail"
	case DNSBogus:
		return "bogus"
	case DNSRefused:
		return "refused"
	case DNSOther:
		return "other"
	}
	return fmt.Sprintf("DNSErrorKind(%d)", uint8(k))
}

// DNSError is a failed DNS lookup.
type DNSError struct {
	// Name and Type are the query.
	Name string
	Type uint16
	// Server is the resolver asked.
	Server string
	// Kind classifies the failure.
	Kind DNSErrorKind
	// Detail says more: the rcode and extended error, or the network error.
	Detail string
	// Err is the underlying error, if any.
	Err error
}

func (e *DNSError) Error() string {
	return fmt.Sprintf("dns: %s %s via %s: %s: %s", e.Name, dns.TypeToString[e.Type], e.Server, e.Kind, e.Detail)
}

func (e *DNSError) Unwrap() error { return e.Err }

// rrset is a successful lookup: NOERROR (maybe with no records) or
// NXDOMAIN.
type rrset struct {
	nxdomain bool
	// secure is true when the resolver set the AD bit and its AD bit is
	// trusted.
	secure bool
	// rrs are the answer records of the queried type (following CNAMEs).
	rrs []dns.RR
	// ttl is the smallest TTL of the answer (CNAMEs included), or the
	// negative-caching TTL (RFC 2308) for NXDOMAIN and NODATA.
	ttl uint32
}

// lookuper looks up DNS records; the resolver implements it, tests may
// substitute it.
type lookuper interface {
	lookup(ctx context.Context, name string, qtype uint16) (rrset, error)
}

// resolver asks one recursive resolver, with the DO bit, over UDP with a
// TCP retry on truncation.
type resolver struct {
	addr    string
	trustAD bool
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
	queries atomic.Uint64
	fails   [numDNSErrorKinds]atomic.Uint64
}

func newResolver(addr string, trustAD bool, timeout time.Duration) *resolver {
	return &resolver{
		addr:    addr,
		trustAD: trustAD,
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", UDPSize: 1232, Timeout: timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
	}
}

// negativeTTL is used when a negative answer carries no SOA.
const negativeTTL = 300

func (r *resolver) lookup(ctx context.Context, name string, qtype uint16) (rrset, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true // RFC 6840 §5.7: ask for the AD bit
	m.SetEdns0(1232, true)     // DO: ask for DNSSEC validation
	fail := func(kind DNSErrorKind, detail string, err error) (rrset, error) {
		r.fails[kind].Add(1)
		return rrset{}, &DNSError{Name: name, Type: qtype, Server: r.addr, Kind: kind, Detail: detail, Err: err}
	}
	r.queries.Add(1)
	resp, _, err := r.udp.ExchangeContext(ctx, m, r.addr)
	if err == nil && resp.Truncated {
		r.queries.Add(1)
		resp, _, err = r.tcp.ExchangeContext(ctx, m, r.addr)
	}
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return fail(DNSTimeout, "no answer within "+r.timeout.String(), err)
		}
		return fail(DNSNetwork, err.Error(), err)
	}
	if resp.Id != m.Id {
		return fail(DNSOther, "answer with a wrong id", nil)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeServerFailure:
		if code, text, ok := extendedError(resp); ok {
			detail := fmt.Sprintf("SERVFAIL (extended error %d %s%s)", code, dns.ExtendedErrorCodeToString[code], text)
			if isDNSSECError(code) {
				return fail(DNSBogus, detail, nil)
			}
			return fail(DNSServFail, detail, nil)
		}
		return fail(DNSServFail, "SERVFAIL", nil)
	case dns.RcodeRefused:
		return fail(DNSRefused, "REFUSED", nil)
	default:
		return fail(DNSOther, dns.RcodeToString[resp.Rcode], nil)
	}
	out := rrset{
		nxdomain: resp.Rcode == dns.RcodeNameError,
		secure:   r.trustAD && resp.AuthenticatedData,
	}
	minTTL := uint32(0)
	first := true
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype == qtype {
			out.rrs = append(out.rrs, rr)
		} else if h.Rrtype != dns.TypeCNAME {
			continue
		}
		if first || h.Ttl < minTTL {
			minTTL, first = h.Ttl, false
		}
	}
	if len(out.rrs) > 0 {
		out.ttl = minTTL
		return out, nil
	}
	// NXDOMAIN or NODATA: the SOA in the authority section gives the
	// negative TTL.
	out.ttl = negativeTTL
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			out.ttl = min(soa.Hdr.Ttl, soa.Minttl)
			break
		}
	}
	return out, nil
}

func extendedError(m *dns.Msg) (uint16, string, bool) {
	o := m.IsEdns0()
	if o == nil {
		return 0, "", false
	}
	for _, opt := range o.Option {
		if e, ok := opt.(*dns.EDNS0_EDE); ok {
			text := ""
			if e.ExtraText != "" {
				text = ": " + e.ExtraText
			}
			return e.InfoCode, text, true
		}
	}
	return 0, "", false
}

// isDNSSECError reports whether an extended DNS error code (RFC 8914
// §4) is a DNSSEC validation failure.
func isDNSSECError(code uint16) bool {
	switch code {
	case dns.ExtendedErrorCodeUnsupportedDNSKEYAlgorithm, dns.ExtendedErrorCodeUnsupportedDSDigestType,
		dns.ExtendedErrorCodeDNSSECIndeterminate, dns.ExtendedErrorCodeDNSBogus,
		dns.ExtendedErrorCodeSignatureExpired, dns.ExtendedErrorCodeSignatureNotYetValid,
		dns.ExtendedErrorCodeDNSKEYMissing, dns.ExtendedErrorCodeRRSIGsMissing,
		dns.ExtendedErrorCodeNoZoneKeyBitSet, dns.ExtendedErrorCodeNSECMissing:
		return true
	}
	return false
}
