// Package dnslab is a hermetic DNSSEC and MTA-STS lab for tlsgate's
// tests: real nsd and unbound with zones signed at test start by
// ldns-signzone, and an HTTPS server for mta-sts.<zone>, all on loopback
// inside a private network namespace, so that the resolver can listen on
// port 53 (glibc's resolv.conf has no port syntax) and no query can leave
// the machine.
//
// Topology (fixed addresses; one lab at a time per test binary):
//
//	127.0.0.53:53      unbound, validating, trust anchor = the lab root's DS
//	127.0.0.54:53      nsd: the lab's signed root ".", "test." and the zones
//	127.0.0.44:443     HTTPS for mta-sts.<zone> (certificates from the lab CA)
//	127.0.0.35-.49     free for SMTP sinks (see [SinkIP]) with TLSA records
//
// The root and "test." are signed and delegate to each [Zone] (with a DS
// record unless the zone is Unsigned), so "." DNSKEY validates with the
// AD bit, a Signed zone is secure, an Unsigned one insecure, and Bogus
// and Expired ones give SERVFAIL. unbound is configured as the pitfalls
// in shared/reference/discovery.md require: local-zone "test." nodefault,
// do-not-query-localhost no, root hints pointing to nsd, the lab root's
// DS as the only trust anchor, EDE on.
//
// A test package calls [Main] from TestMain; the test binary then runs in
// its own network, mount and PID namespaces (see Main), and [Start]
// starts the lab. Daemons are started in process groups of their own and
// stopped by that ID; being in the test binary's PID namespace, nothing
// they fork outlives the test binary. [Start] and [Require] skip the test
// without root, namespaces or the tools (nsd, unbound, ldnsutils), and
// fail it instead when CI=true. scripts/install-test-deps.sh installs the
// tools without starting their system services.
package dnslab

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// Lab addresses.
const (
	// ResolverAddr is unbound's address, the validating resolver.
	ResolverAddr = "127.0.0.53:53"
	// AuthAddr is nsd's address, authoritative for the lab's zones.
	AuthAddr = "127.0.0.54:53"
	// STSIP is the address of the HTTPS server for mta-sts.<zone>.
	STSIP = "127.0.0.44"
	// STSAddr is STSIP with the HTTPS port.
	STSAddr = STSIP + ":443"
)

// SinkIP returns the i-th address (0 to 14) reserved for SMTP sinks:
// 127.0.0.35 to 127.0.0.49.
func SinkIP(i int) string {
	if i < 0 || i > 14 {
		panic(fmt.Sprintf("dnslab: SinkIP(%d): want 0 to 14", i))
	}
	return fmt.Sprintf("127.0.0.%d", 35+i)
}

// InstallHint is the command that installs the lab's tools.
const InstallHint = "sudo scripts/install-test-deps.sh (from the repository root)"

// tools are the commands the lab runs.
var tools = []string{"nsd", "nsd-control", "unbound", "unbound-control", "ldns-keygen", "ldns-signzone", "ldns-key2ds"}

// Available returns nil if the lab can run: the test binary runs in the
// lab namespace ([Main]) and the tools are installed.
func Available() error {
	if !inside {
		if notInside != nil {
			return fmt.Errorf("not in the lab namespace: %w", notInside)
		}
		return errors.New("not in the lab namespace: call dnslab.Main from TestMain")
	}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (Debian packages nsd, unbound, ldnsutils)", strings.Join(missing, ", "))
	}
	return nil
}

// Require skips the test, or fails it when the environment has CI=true,
// unless [Available] says the lab can run.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		msg := fmt.Sprintf("dnslab: %v; install with: %s", err, InstallHint)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// Options configure [Start].
type Options struct {
	// Zones are the zones to serve; more can be added with [Lab.SetZone].
	Zones []Zone
	// CA signs the HTTPS server's certificates. Default: a new ECDSA
	// "DNS Lab CA" in the lab directory ([Lab.CA]).
	CA *testpki.Cert
}

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	// Dir holds the zone files, keys, configurations and logs.
	Dir string
	// CA signs the HTTPS server's certificates; give CA.CertFile to
	// clients as their trust store.
	CA *testpki.Cert

	t       testing.TB
	mu      sync.Mutex
	zones   map[string]Zone
	keys    map[string]string // origin -> key base path
	serial  uint32
	rootDS  string
	nsd     *daemon
	unbound *daemon
	sts     *stsServer
	stsCfg  stsConfig
}

// Start starts nsd, unbound and the HTTPS server with o.Zones, and
// stops them at the end of the test. It calls [Require] first.
func Start(t testing.TB, o Options) *Lab {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "dnslab-")
	if err != nil {
		t.Fatalf("dnslab: %v", err)
	}
	os.Chmod(dir, 0o755)
	l := &Lab{Dir: dir, CA: o.CA, t: t, zones: map[string]Zone{}, keys: map[string]string{},
		serial: uint32(time.Now().Unix())}
	l.stsCfg.init()
	t.Cleanup(func() {
		if err := l.stop(); err != nil {
			t.Errorf("dnslab: stop: %v", err)
		}
		if t.Failed() {
			t.Logf("dnslab: nsd log:\n%s\nunbound log:\n%s", tail(filepath.Join(dir, "nsd.log"), 30), tail(filepath.Join(dir, "unbound.log"), 40))
		}
		if os.Getenv("DNSLAB_KEEP") == "1" {
			t.Logf("dnslab: kept %s (DNSLAB_KEEP=1)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if l.CA == nil {
		ca, err := testpki.Issue(dir, testpki.Options{Name: "dnslab-ca", KeyType: testpki.ECDSAP256, IsCA: true,
			Subject: pkix.Name{Organization: []string{"DNS Lab"}, CommonName: "DNS Lab CA"}})
		if err != nil {
			t.Fatalf("dnslab: %v", err)
		}
		l.CA = ca
	}
	for _, z := range o.Zones {
		name, err := checkZoneName(z.Name)
		if err != nil {
			t.Fatal(err)
		}
		z.Name = name
		l.zones[name] = z
	}
	if err := l.apply(); err != nil {
		t.Fatal(err)
	}
	if err := l.startUnbound(); err != nil {
		t.Fatal(err)
	}
	if err := l.StartSTS(); err != nil {
		t.Fatal(err)
	}
	return l
}

// SetZone adds z or replaces the zone of that name, re-signs, restarts
// nsd and empties unbound's cache, so the next query sees the new data.
func (l *Lab) SetZone(z Zone) error {
	name, err := checkZoneName(z.Name)
	if err != nil {
		return err
	}
	z.Name = name
	l.mu.Lock()
	l.zones[name] = z
	l.mu.Unlock()
	if err := l.apply(); err != nil {
		return err
	}
	return l.FlushResolver()
}

// RemoveZone stops serving a zone (its names become NXDOMAIN), like
// SetZone.
func (l *Lab) RemoveZone(name string) error {
	n, err := checkZoneName(name)
	if err != nil {
		return err
	}
	l.mu.Lock()
	delete(l.zones, n)
	l.mu.Unlock()
	if err := l.apply(); err != nil {
		return err
	}
	return l.FlushResolver()
}

// Zone returns the zone of that name as last set, and whether it exists.
func (l *Lab) Zone(name string) (Zone, bool) {
	n, err := checkZoneName(name)
	if err != nil {
		return Zone{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	z, ok := l.zones[n]
	return z, ok
}

// RootDS returns the DS record of the lab's root key, unbound's trust
// anchor (for resolvers other than the lab's).
func (l *Lab) RootDS() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rootDS
}

// apply writes and signs all zones and (re)starts nsd.
func (l *Lab) apply() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.serial++
	keysDir := filepath.Join(l.Dir, "keys")
	zonesDir := filepath.Join(l.Dir, "zones")
	for _, d := range []string{keysDir, zonesDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	now := time.Now()
	key := func(origin string) (string, error) {
		if k, ok := l.keys[origin]; ok {
			return k, nil
		}
		k, err := keygen(keysDir, origin)
		if err == nil {
			l.keys[origin] = k
		}
		return k, err
	}
	type served struct{ origin, file string }
	var files []served
	// write writes (and signs) one zone and returns the DS of its key.
	write := func(origin string, ttl uint32, records []string, signing Signing, bogus []uint16) (string, error) {
		text := zoneText(origin, ttl, l.serial, records)
		if err := checkZoneText(origin, text); err != nil {
			return "", err
		}
		base := filepath.Join(zonesDir, strings.TrimSuffix(origin, ".")+".zone")
		if origin == "." {
			base = filepath.Join(zonesDir, "root.zone")
		}
		if err := os.WriteFile(base, []byte(text), 0o644); err != nil {
			return "", err
		}
		if signing == Unsigned {
			files = append(files, served{origin, base})
			return "", nil
		}
		k, err := key(origin)
		if err != nil {
			return "", err
		}
		inception, expiration := now.Add(-time.Hour), now.Add(30*24*time.Hour)
		if signing == Expired {
			// Well beyond unbound's clock-skew allowance (10% of the
			// validity, at most val-sig-skew-max, one day).
			inception, expiration = now.Add(-60*24*time.Hour), now.Add(-30*24*time.Hour)
		}
		signed := base + ".signed"
		if err := sign(base, signed, origin, k, inception, expiration); err != nil {
			return "", err
		}
		if signing == Bogus {
			types := bogus
			if len(types) == 0 {
				types = []uint16{dns.TypeMX}
			}
			if err := corrupt(signed, origin, types); err != nil {
				return "", err
			}
		}
		files = append(files, served{origin, signed})
		return dsOf(k)
	}

	names := make([]string, 0, len(l.zones))
	for n := range l.zones {
		names = append(names, n)
	}
	sort.Strings(names)
	testRecords := []string{"ns.test. IN A " + strings.TrimSuffix(AuthAddr, ":53")}
	for _, n := range names {
		z := l.zones[n]
		ds, err := write(n+".", z.ttl(), z.Records, z.Signing, z.BogusTypes)
		if err != nil {
			return err
		}
		testRecords = append(testRecords, n+". IN NS ns.test.")
		if ds != "" {
			testRecords = append(testRecords, ds)
		}
	}
	testDS, err := write("test.", labTTL, testRecords, Signed, nil)
	if err != nil {
		return err
	}
	rootDS, err := write(".", labTTL, []string{
		"test. IN NS ns.test.",
		"ns.test. IN A " + strings.TrimSuffix(AuthAddr, ":53"),
		testDS,
	}, Signed, nil)
	if err != nil {
		return err
	}
	l.rootDS = rootDS

	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
	ip-address: %s
	port: 53
	username: ""
	chroot: ""
	zonesdir: %q
	pidfile: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	logfile: %q
	server-count: 1
	do-ip6: no
	verbosity: 1
	hide-version: yes
remote-control:
	control-enable: yes
	control-interface: %q
`, strings.TrimSuffix(AuthAddr, ":53"), zonesDir, filepath.Join(l.Dir, "nsd.pid"),
		filepath.Join(l.Dir, "zone.list"), filepath.Join(l.Dir, "xfrd.state"), l.Dir,
		filepath.Join(l.Dir, "nsd.log"), filepath.Join(l.Dir, "nsd.ctl"))
	for _, f := range files {
		fmt.Fprintf(&conf, "zone:\n\tname: %q\n\tzonefile: %q\n", f.origin, f.file)
	}
	confPath := filepath.Join(l.Dir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("nsd-checkconf", confPath).CombinedOutput(); err != nil {
		return fmt.Errorf("dnslab: nsd-checkconf: %v: %s", err, out)
	}
	hints := fmt.Sprintf(". 3600000 IN NS ns.test.\nns.test. 3600000 IN A %s\n", strings.TrimSuffix(AuthAddr, ":53"))
	if err := os.WriteFile(filepath.Join(l.Dir, "root.hints"), []byte(hints), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(l.Dir, "root.ds"), []byte(rootDS+"\n"), 0o644); err != nil {
		return err
	}

	if l.nsd != nil {
		if err := l.nsd.stop(5 * time.Second); err != nil {
			return fmt.Errorf("dnslab: restart nsd: %w", err)
		}
		l.nsd = nil
	}
	d, err := startDaemon("nsd", filepath.Join(l.Dir, "nsd.out"), "nsd", "-d", "-c", confPath)
	if err != nil {
		return err
	}
	l.nsd = d
	// Ready when it answers for every zone with the current serial.
	for _, f := range files {
		if err := waitSOA(AuthAddr, f.origin, l.serial, d, 10*time.Second); err != nil {
			return fmt.Errorf("dnslab: nsd: %w\n%s", err, tail(filepath.Join(l.Dir, "nsd.log"), 20))
		}
	}
	return nil
}

// waitSOA waits until server answers origin's SOA with serial.
func waitSOA(server, origin string, serial uint32, d *daemon, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(origin, dns.TypeSOA)
	var last string
	for time.Now().Before(deadline) {
		if d.exited() {
			return fmt.Errorf("%s exited", d.name)
		}
		r, _, err := c.Exchange(m, server)
		if err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
			if soa, ok := r.Answer[0].(*dns.SOA); ok && soa.Serial == serial {
				return nil
			}
			last = r.Answer[0].String()
		} else if err != nil {
			last = err.Error()
		} else {
			last = dns.RcodeToString[r.Rcode]
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: no SOA of %q with serial %d after %v (last: %s)", server, origin, serial, timeout, last)
}

func (l *Lab) unboundConf() string { return filepath.Join(l.Dir, "unbound.conf") }

func (l *Lab) startUnbound() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unbound != nil {
		return nil
	}
	conf := fmt.Sprintf(`server:
	interface: %s
	port: 53
	do-ip6: no
	username: ""
	chroot: ""
	directory: %q
	pidfile: %q
	use-syslog: no
	logfile: %q
	verbosity: 1
	val-log-level: 2
	log-servfail: yes
	ede: yes
	do-not-query-localhost: no
	module-config: "validator iterator"
	local-zone: "test." nodefault
	root-hints: %q
	trust-anchor-file: %q
	trust-anchor-signaling: no
	root-key-sentinel: no
	access-control: 127.0.0.0/8 allow
	num-threads: 1
	so-reuseport: no
	qname-minimisation: no
	cache-max-ttl: 3600
	infra-host-ttl: 60
	msg-cache-size: 4m
	rrset-cache-size: 4m
	key-cache-size: 1m
	neg-cache-size: 1m
remote-control:
	control-enable: yes
	control-interface: %q
	control-use-cert: no
`, strings.TrimSuffix(ResolverAddr, ":53"), l.Dir, filepath.Join(l.Dir, "unbound.pid"),
		filepath.Join(l.Dir, "unbound.log"), filepath.Join(l.Dir, "root.hints"),
		filepath.Join(l.Dir, "root.ds"), filepath.Join(l.Dir, "unbound.ctl"))
	if err := os.WriteFile(l.unboundConf(), []byte(conf), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("unbound-checkconf", l.unboundConf()).CombinedOutput(); err != nil {
		return fmt.Errorf("dnslab: unbound-checkconf: %v: %s", err, out)
	}
	d, err := startDaemon("unbound", filepath.Join(l.Dir, "unbound.out"), "unbound", "-d", "-c", l.unboundConf())
	if err != nil {
		return err
	}
	l.unbound = d
	// Ready when the root's DNSKEY validates.
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if d.exited() {
			return fmt.Errorf("dnslab: unbound exited: %s\n%s", tail(filepath.Join(l.Dir, "unbound.out"), 10), tail(filepath.Join(l.Dir, "unbound.log"), 20))
		}
		r, err := Query(context.Background(), ".", dns.TypeDNSKEY)
		if err == nil && r.Rcode == dns.RcodeSuccess && r.AuthenticatedData {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("rcode %s, AD %v", dns.RcodeToString[r.Rcode], r.AuthenticatedData)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("dnslab: unbound does not validate . DNSKEY after 10s (last: %s)\n%s", last, tail(filepath.Join(l.Dir, "unbound.log"), 20))
}

// StartResolver starts unbound again after [Lab.StopResolver] (with an
// empty cache).
func (l *Lab) StartResolver() error { return l.startUnbound() }

// StopResolver stops unbound: queries to ResolverAddr then get no answer
// (ICMP port unreachable: "connection refused").
func (l *Lab) StopResolver() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unbound == nil {
		return nil
	}
	err := l.unbound.stop(5 * time.Second)
	l.unbound = nil
	return err
}

// FlushResolver empties unbound's caches (answers, keys, negative
// answers, server state), so the next query goes to nsd.
func (l *Lab) FlushResolver() error {
	l.mu.Lock()
	running := l.unbound != nil
	l.mu.Unlock()
	if !running {
		return nil
	}
	for _, args := range [][]string{{"flush_zone", "."}, {"flush_bogus"}, {"flush_negative"}, {"flush_infra", "all"}} {
		cmd := exec.Command("unbound-control", append([]string{"-c", l.unboundConf()}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("dnslab: unbound-control %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Query sends one query with the DO bit to the lab's resolver and
// returns the answer, for tests of the lab itself and quick checks.
func Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, true)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, ResolverAddr)
	return r, err
}

// stop stops everything the lab started.
func (l *Lab) stop() error {
	var errs []error
	if err := l.StopSTS(); err != nil {
		errs = append(errs, err)
	}
	if err := l.StopResolver(); err != nil {
		errs = append(errs, err)
	}
	l.mu.Lock()
	if l.nsd != nil {
		if err := l.nsd.stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
		l.nsd = nil
	}
	l.mu.Unlock()
	// Nothing may listen on the lab's addresses any more.
	for _, a := range []string{ResolverAddr, AuthAddr} {
		if c, err := net.ListenPacket("udp4", a); err != nil {
			errs = append(errs, fmt.Errorf("%s still bound after stop: %w", a, err))
		} else {
			c.Close()
		}
	}
	return errors.Join(errs...)
}
