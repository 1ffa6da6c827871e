package discovery

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

// Config configures a [Discoverer]. The zero value of every field but
// MTASTS and DANE means its documented default.
type Config struct {
	// MTASTS enables MTA-STS (RFC 8461) discovery. At least one of MTASTS
	// and DANE must be set.
	MTASTS bool
	// DANE enables DANE (RFC 7672) discovery. It needs a validating
	// resolver whose AD bit can be trusted (see Resolver, TrustRemoteAD,
	// [Discoverer.SelfCheck]).
	DANE bool
	// Resolver is the DNS resolver, "IP:port" or "IP" (port 53). It
	// must validate DNSSEC for DANE. Default: "127.0.0.53:53".
	Resolver string
	// TrustRemoteAD trusts the AD bit of a resolver that is not on a
	// loopback address. Without it, DANE with a non-loopback Resolver is
	// a configuration error: the AD bit of a remote resolver can be
	// forged on the way. Default: false.
	TrustRemoteAD bool
	// STSCAFile is a PEM file of the CAs that sign mta-sts.<domain>
	// certificates. Default "": the system's roots.
	STSCAFile string
	// CacheFile keeps the cache across restarts: loaded by New, written
	// atomically (temporary file and rename, mode 0600) by Save and Run.
	// Default "": the cache lives in memory only.
	CacheFile string
	// CacheEntries bounds the number of cached domains; the least
	// recently used go first. Default: 100000.
	CacheEntries int
	// CacheBytes bounds the estimated memory of the cache, in bytes.
	// Default: 64 MiB.
	CacheBytes int64
	// RefreshHorizon: a cached domain looked up within this long is
	// refreshed ahead of expiry (by Run, and on a lookup that finds it
	// nearly expired); older ones are left to expire. Default: 7 days.
	RefreshHorizon time.Duration
	// DNSTimeout bounds one DNS query (with its TCP retry). Default: 5 s.
	DNSTimeout time.Duration
	// FetchTimeout bounds one MTA-STS policy fetch. Default: 10 s.
	FetchTimeout time.Duration
	// STSRetry: after a failed policy fetch, no new fetch for the domain
	// is tried for this long unless its TXT id changes. Default: 5 min.
	STSRetry time.Duration
	// DANEGrace: a DNS failure for a domain whose DANE was confirmed
	// usable within this long answers TEMP instead of no policy.
	// Default: 24 h.
	DANEGrace time.Duration
	// SelfCheckName is a DNSSEC-signed zone whose DNSKEY RRset the
	// resolver must return with the AD bit ([Discoverer.SelfCheck]).
	// Default: "." (the root).
	SelfCheckName string
	// OnEvent, if set, is called once for each event worth a log line
	// ([Event]): a policy change of a domain, a failed fetch or DNS
	// lookup, a cache file problem, a self-check result. It is called from
	// the goroutine that noticed the event and must not block.
	OnEvent func(Event)
}

// Defaults.
const (
	DefaultResolver       = "127.0.0.53:53"
	DefaultCacheEntries   = 100000
	DefaultCacheBytes     = 64 << 20
	DefaultRefreshHorizon = 7 * 24 * time.Hour
	DefaultDNSTimeout     = 5 * time.Second
	DefaultFetchTimeout   = 10 * time.Second
	DefaultSTSRetry       = 5 * time.Minute
	DefaultDANEGrace      = 24 * time.Hour
	DefaultSelfCheckName  = "."
)

// config is a validated Config with defaults applied.
type config struct {
	Config
	resolverAddr string // "IP:port"
	loopback     bool
	roots        *x509.CertPool
}

// validate applies defaults and checks c.
func (c Config) validate() (*config, error) {
	if !c.MTASTS && !c.DANE {
		return nil, errors.New("discovery: neither mta_sts nor dane is enabled: nothing to discover")
	}
	out := &config{Config: c}
	if out.Resolver == "" {
		out.Resolver = DefaultResolver
	}
	addr, err := parseResolver(out.Resolver)
	if err != nil {
		return nil, err
	}
	out.resolverAddr = addr.String()
	out.loopback = addr.Addr().IsLoopback()
	if c.DANE && !out.loopback && !c.TrustRemoteAD {
		return nil, fmt.Errorf("discovery: resolver %s is not on a loopback address: its AD bit (DNSSEC validated) "+
			"could be forged on the way, so DANE cannot rely on it; run a validating resolver on this host "+
			"(Debian: unbound) and set resolver = \"127.0.0.1:53\", or set trust_remote_ad = true if the path to it is secured", out.Resolver)
	}
	if c.STSCAFile != "" {
		pem, err := os.ReadFile(c.STSCAFile)
		if err != nil {
			return nil, fmt.Errorf("discovery: sts_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("discovery: sts_ca_file %s: no PEM certificate in it", c.STSCAFile)
		}
		out.roots = pool
	}
	if c.CacheFile != "" {
		dir := filepath.Dir(c.CacheFile)
		if fi, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("discovery: cache_file %s: directory: %w", c.CacheFile, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("discovery: cache_file %s: %s is not a directory", c.CacheFile, dir)
		}
	}
	ints := []struct {
		name string
		v    *int64
		def  int64
	}{
		{"cache_bytes", &out.CacheBytes, DefaultCacheBytes},
	}
	for _, f := range ints {
		if *f.v < 0 {
			return nil, fmt.Errorf("discovery: %s = %d: must not be negative", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if out.CacheEntries < 0 {
		return nil, fmt.Errorf("discovery: cache_entries = %d: must not be negative", out.CacheEntries)
	}
	if out.CacheEntries == 0 {
		out.CacheEntries = DefaultCacheEntries
	}
	durs := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"refresh_horizon", &out.RefreshHorizon, DefaultRefreshHorizon},
		{"dns_timeout", &out.DNSTimeout, DefaultDNSTimeout},
		{"fetch_timeout", &out.FetchTimeout, DefaultFetchTimeout},
		{"sts_retry", &out.STSRetry, DefaultSTSRetry},
		{"dane_grace", &out.DANEGrace, DefaultDANEGrace},
	}
	for _, f := range durs {
		if *f.v < 0 {
			return nil, fmt.Errorf("discovery: %s = %v: must not be negative", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if out.SelfCheckName == "" {
		out.SelfCheckName = DefaultSelfCheckName
	}
	if _, ok := dns.IsDomainName(out.SelfCheckName); !ok {
		return nil, fmt.Errorf("discovery: selfcheck_name %q: not a domain name", out.SelfCheckName)
	}
	out.SelfCheckName = dns.Fqdn(out.SelfCheckName)
	return out, nil
}

// parseResolver parses "IP:port", "[IPv6]:port" or a bare IP.
func parseResolver(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("discovery: resolver %q: want IP:port or IP: %v", s, err)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("discovery: resolver %q: %q is not an IP address (a resolver cannot be found by name)", s, host)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("discovery: resolver %q: bad port %q", s, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}
