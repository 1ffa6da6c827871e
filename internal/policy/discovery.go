package policy

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// Discovery are the [discovery] settings: MTA-STS (RFC 8461) and DANE
// (RFC 7672) for the next hops no endpoint covers, merged with the
// endpoints ([MergeDiscovered]). The daemon turns them into its discovery
// engine's configuration. The struct is comparable: a reload that changes
// it needs a restart.
type Discovery struct {
	// MTASTS fetches and applies MTA-STS policies (mode enforce)
	// ([discovery] mta_sts).
	MTASTS bool
	// DANE answers "dane" for domains whose MX hosts have usable TLSA
	// records under DNSSEC ([discovery] dane). Postfix only: Sendmail 8.17
	// as Debian builds it has no DANE, and the loader refuses it there.
	DANE bool
	// Resolver is the validating resolver, "IP:PORT" ([discovery]
	// resolver); "" means the first nameserver of /etc/resolv.conf, the
	// one Postfix asks too. With DANE it must be a loopback address: the
	// AD bit of a resolver elsewhere could be forged on the way.
	Resolver string
	// STSCAFile holds the CAs for https://mta-sts.<domain> ([discovery]
	// sts_ca_file); "" means the system's roots.
	STSCAFile string
	// CacheFile keeps the cache across restarts ([discovery] cache_file);
	// "" keeps it in memory only.
	CacheFile string
	// CacheEntries and CacheBytes bound the cache ([discovery]
	// cache_entries, cache_bytes); 0 means the engine's default (100000
	// domains, 64 MiB).
	CacheEntries int
	CacheBytes   int64
	// ControlSocket is the path of the local control socket of `tlsgate
	// discovery` and `tlsgate query` ([discovery] control_socket, mode
	// 0600); default DefaultControlSocket.
	ControlSocket string
}

// DefaultControlSocket is where the daemon listens for `tlsgate discovery
// show|refresh|purge` and `tlsgate query outbound` when [discovery]
// control_socket is not set.
const DefaultControlSocket = "/run/tlsgate/control.sock"

// Limits of the cache settings.
const (
	minCacheBytes = 1 << 20
	maxCacheBytes = 1 << 40
)

// discovery compiles the [discovery] table into s, whose [policyd]
// settings are compiled already. Every string kept is a copy (see
// settings).
func (c *compiler) discovery(s *Settings, r *rawDiscovery) {
	if r == nil {
		return
	}
	d := &Discovery{ControlSocket: DefaultControlSocket}
	if r.MTASTS != nil {
		d.MTASTS = *r.MTASTS
	}
	if r.DANE != nil {
		d.DANE = *r.DANE
	}
	if !d.MTASTS && !d.DANE {
		c.at("discovery", "the [discovery] table enables nothing: set mta_sts = true and/or dane = true, or remove the table")
	}
	if s.Socketmap.Addr == "" {
		c.at("discovery", "[discovery] needs [policyd] listen: the MTA asks for discovered policies through the socketmap (Postfix's smtp_tls_policy_maps, Sendmail's FEATURE(`sts') map)")
	}
	if c.u.mta == Sendmail && s.MapName == "sts" {
		c.at("policyd.map_name", "map_name = \"sts\" is the name of the map of FEATURE(`sts'), which asks tlsgate for discovered MTA-STS policies: tlsgate could not tell its lookups from those of its own map; keep the default \"tlspolicy\" or choose another name")
	}
	if d.DANE && c.u.mta == Sendmail {
		c.at("discovery.dane", `dane = true cannot be enforced with mta = "sendmail": Debian's Sendmail 8.17 is built without DANE (sendmail -d0.15 -bt lists no DANE under "Compiled with"), so a DANE answer would be ignored; remove it and keep mta_sts = true, which Sendmail enforces through FEATURE(`+"`sts')")
		d.DANE = false
	}
	if r.Resolver != "" {
		addr, err := resolverAddr(r.Resolver)
		switch {
		case err != nil:
			c.at("discovery.resolver", "resolver = %q: %v", r.Resolver, err)
		case d.DANE && !addr.Addr().IsLoopback():
			c.at("discovery.resolver", "resolver = %q is not a loopback address: DANE trusts the resolver's AD bit, which could be forged on the way from another host; run a validating resolver on this host (Debian: apt install unbound) and write resolver = \"127.0.0.1:53\"", r.Resolver)
		default:
			d.Resolver = addr.String()
		}
	}
	for _, kv := range [...]struct {
		key string
		val string
		dst *string
	}{{"sts_ca_file", r.STSCAFile, &d.STSCAFile}, {"cache_file", r.CacheFile, &d.CacheFile}, {"control_socket", r.ControlSocket, &d.ControlSocket}} {
		if kv.val == "" {
			continue
		}
		if !filepath.IsAbs(kv.val) {
			c.at("discovery."+kv.key, "%s = %q must be an absolute path", kv.key, kv.val)
			continue
		}
		*kv.dst = strings.Clone(filepath.Clean(kv.val))
	}
	if r.CacheEntries != nil {
		if n := *r.CacheEntries; n < 1 || n > 100_000_000 {
			c.at("discovery.cache_entries", "cache_entries = %d: give the number of domains to keep, 1..100000000 (default 100000)", n)
		} else {
			d.CacheEntries = n
		}
	}
	if r.CacheBytes != nil {
		if n := *r.CacheBytes; n < minCacheBytes || n > maxCacheBytes {
			c.at("discovery.cache_bytes", "cache_bytes = %d: give the cache's memory bound in bytes, %d..%d (default 67108864, 64 MiB)", n, minCacheBytes, int64(maxCacheBytes))
		} else {
			d.CacheBytes = int64(n)
		}
	}
	s.Discovery = d
}

// resolverAddr reads "IP", "IP:PORT" or "[IPv6]:PORT" (port 53 when not
// given).
func resolverAddr(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.AddrPort{}, errResolver
		}
		return netip.AddrPortFrom(a, 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, errResolver
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, errResolver
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return netip.AddrPort{}, errResolver
	}
	return netip.AddrPortFrom(a, uint16(n)), nil
}

var errResolver = errors.New(`want an IP address with an optional port, like "127.0.0.1:53" or "[::1]:53" (no host names: the resolver is what resolves them)`)
