package policy

import (
	"strings"
	"testing"
)

// TestDiscoverySettings: the [discovery] table as written, its defaults,
// and every mistake at its line with what to write instead.
func TestDiscoverySettings(t *testing.T) {
	p := mustParse(t, "mta = \"postfix\"\n")
	if p.Settings.Discovery != nil {
		t.Fatalf("no [discovery] table: %+v, want nil (today's behaviour)", p.Settings.Discovery)
	}
	p = mustParse(t, `mta = "postfix"
[policyd]
listen = "unix:/run/p.sock"
[discovery]
mta_sts = true
dane = true
resolver = "127.0.0.1"
sts_ca_file = "/etc/ssl/certs/ca-certificates.crt"
cache_file = "/var/lib/tlsgate/discovery.cache"
cache_entries = 5000
cache_bytes = 8388608
control_socket = "/run/tlsgate//ctl.sock"
`)
	want := Discovery{MTASTS: true, DANE: true, Resolver: "127.0.0.1:53", STSCAFile: "/etc/ssl/certs/ca-certificates.crt",
		CacheFile: "/var/lib/tlsgate/discovery.cache", CacheEntries: 5000, CacheBytes: 8 << 20, ControlSocket: "/run/tlsgate/ctl.sock"}
	if d := p.Settings.Discovery; d == nil || *d != want {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}
	if l := p.Line("discovery.dane"); l != 6 {
		t.Errorf("Line(discovery.dane) = %d, want 6", l)
	}
	p = mustParse(t, "mta = \"sendmail\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\nmta_sts = true\nresolver = \"[::1]:5353\"\n")
	want = Discovery{MTASTS: true, Resolver: "[::1]:5353", ControlSocket: DefaultControlSocket}
	if d := p.Settings.Discovery; d == nil || *d != want {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}
	// STS alone may use a remote resolver: only DANE trusts its AD bit.
	mustParse(t, "mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\nmta_sts = true\nresolver = \"192.0.2.53:53\"\n")

	for _, tc := range []struct{ src, want string }{
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\n", `t.toml:4: the [discovery] table enables nothing`},
		{"mta = \"postfix\"\n[discovery]\nmta_sts = true\n", `t.toml:2: [discovery] needs [policyd] listen`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\nmta_sts = false\ndane = false\n", `t.toml:4: the [discovery] table enables nothing`},
		{"mta = \"sendmail\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\nmta_sts = true\ndane = true\n", "t.toml:6: dane = true cannot be enforced with mta = \"sendmail\": Debian's Sendmail 8.17 is built without DANE"},
		{"mta = \"sendmail\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\nmap_name = \"sts\"\n[discovery]\nmta_sts = true\n", "t.toml:4: map_name = \"sts\" is the name of the map of FEATURE(`sts')"},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\nresolver = \"192.0.2.53:53\"\n", `t.toml:6: resolver = "192.0.2.53:53" is not a loopback address: DANE trusts the resolver's AD bit`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\nresolver = \"localhost:53\"\n", `t.toml:6: resolver = "localhost:53": want an IP address`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\nresolver = \"127.0.0.1:0\"\n", `t.toml:6: resolver = "127.0.0.1:0": want an IP address`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\nresolver = \"127.0.0.1:053\"\n", `t.toml:6: resolver = "127.0.0.1:053": want an IP address`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\ncache_file = \"discovery.cache\"\n", `t.toml:6: cache_file = "discovery.cache" must be an absolute path`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\nsts_ca_file = \"ca.pem\"\n", `t.toml:6: sts_ca_file = "ca.pem" must be an absolute path`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\ncontrol_socket = \"ctl.sock\"\n", `t.toml:6: control_socket = "ctl.sock" must be an absolute path`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\ncache_entries = 0\n", `t.toml:6: cache_entries = 0: give the number of domains`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\ncache_bytes = 1000\n", `t.toml:6: cache_bytes = 1000: give the cache's memory bound in bytes`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = \"yes\"\n", `t.toml:5: discovery.dane: want a boolean, got a string`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\ndane = true\ncache_size = 1\n", `t.toml:6: unknown key "discovery.cache_size" (did you mean "cache_file"?)`},
		{"mta = \"postfix\"\n[policyd]\nlisten = \"unix:/run/p.sock\"\n[discovery]\nDANE = true\n", `t.toml:5: key "discovery.DANE" must be written "discovery.dane"`},
		{"mta = \"postfix\"\n[Discovery]\ndane = true\n", `t.toml:2: table [Discovery] must be written [discovery]`},
	} {
		_, err := Parse("t.toml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %s", tc.src, err, tc.want)
		}
	}
}
