package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/internal/control"
	"github.com/tlsgate/tlsgate/internal/discovery"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/policyd"
)

// resolvConf is read for the default resolver (tests change it).
var resolvConf = "/etc/resolv.conf"

// defaultResolver returns the first nameserver of /etc/resolv.conf as
// "IP:53", the resolver Postfix and Sendmail ask too, or 127.0.0.1:53
// (glibc's own default) when it names none.
func defaultResolver() string {
	f, err := os.Open(resolvConf)
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "nameserver" {
				if a, err := netip.ParseAddr(fields[1]); err == nil {
					return netip.AddrPortFrom(a.WithZone(""), 53).String()
				}
			}
		}
	}
	return "127.0.0.1:53"
}

// discoveryConfig turns the [discovery] settings of p into the engine's
// configuration; an error is a problem at the setting's line.
func discoveryConfig(p *policy.Policy) (discovery.Config, error) {
	d := p.Settings.Discovery
	cfg := discovery.Config{
		MTASTS:       d.MTASTS,
		DANE:         d.DANE,
		Resolver:     d.Resolver,
		STSCAFile:    d.STSCAFile,
		CacheFile:    d.CacheFile,
		CacheEntries: d.CacheEntries,
		CacheBytes:   d.CacheBytes,
	}
	if cfg.Resolver == "" {
		cfg.Resolver = defaultResolver()
		if a, err := netip.ParseAddrPort(cfg.Resolver); err == nil && d.DANE && !a.Addr().IsLoopback() {
			return cfg, p.SettingError("discovery.dane", fmt.Errorf("DANE needs a validating resolver on this host, but the first nameserver of %s is %s: its AD bit could be forged on the way; run one (Debian: apt install unbound; tlsgate mta-config says how) and set resolver = \"127.0.0.1:53\"", resolvConf, a.Addr()))
		}
	}
	return cfg, nil
}

// newDiscoverer builds the discovery engine from p's [discovery]
// settings, the one place serve (at start), check and query (offline)
// make it; events are logged to log (nil: not at all). Only the daemon
// uses the cache file (withCache): the commands must not read a cache
// the daemon is writing, nor rename an unreadable one. A reload never
// rebuilds the engine: a change of the settings needs a restart
// (discoveryUnchanged).
func newDiscoverer(p *policy.Policy, log *slog.Logger, withCache bool) (*discovery.Discoverer, error) {
	cfg, err := discoveryConfig(p)
	if err != nil {
		return nil, err
	}
	if !withCache {
		cfg.CacheFile = ""
	}
	if log != nil {
		cfg.OnEvent = discoveryEvents(log, limitedLogger(log, "discovery"))
	}
	d, err := discovery.New(cfg)
	if err != nil {
		key := "discovery"
		switch {
		case strings.Contains(err.Error(), "sts_ca_file"):
			key = "discovery.sts_ca_file"
		case strings.Contains(err.Error(), "cache_file"):
			key = "discovery.cache_file"
		case strings.Contains(err.Error(), "resolver"):
			key = "discovery.resolver"
		}
		return nil, p.SettingError(key, errors.New(strings.TrimPrefix(err.Error(), "discovery: ")))
	}
	return d, nil
}

// discoveryUnchanged refuses a reload that changes the [discovery]
// settings: the engine, its resolver and its cache are made once at
// start. Part of restartNeeded; its problem names the [discovery] line.
func discoveryUnchanged(old, cur *policy.Policy) error {
	a, b := old.Settings.Discovery, cur.Settings.Discovery
	if (a == nil) == (b == nil) && (a == nil || *a == *b) {
		return nil
	}
	return cur.SettingError("discovery", errors.New("the [discovery] settings differ from those the daemon started with: restart needed (systemctl restart tlsgate); the previous policy stays in force"))
}

// discoveryEvents logs the engine's events: one line per policy change
// of a domain (a new MTA-STS policy id, DANE appeared or vanished), the
// resolver self-check, cache file trouble; failed fetches and DNS queries,
// which remote domains cause, through limited (rate-limited warnings).
func discoveryEvents(log, limited *slog.Logger) func(discovery.Event) {
	return func(e discovery.Event) {
		switch e.Kind {
		case discovery.EventChange:
			r := e.Result
			attrs := []any{"domain", e.Domain, "change", e.Change.String(), "source", r.Source.String(), "answer", answerWords(r.Postfix)}
			if r.PolicyID != "" {
				attrs = append(attrs, "sts_id", r.PolicyID, "sts_mode", r.STSMode.String())
			}
			log.Info("discovery-change", attrs...)
		case discovery.EventFetchFailed:
			limited.Warn("discovery-fetch-failed", "domain", e.Domain, "error", errText(e.Err))
		case discovery.EventDNSFailed:
			limited.Warn("discovery-dns-failed", "domain", e.Domain, "error", errText(e.Err))
		case discovery.EventCache:
			log.Error("discovery-cache", "error", errText(e.Err))
		case discovery.EventSelfCheck:
			if e.Err != nil {
				log.Error("discovery-selfcheck", "dane", "off", "error", e.Err.Error())
			} else {
				log.Info("discovery-selfcheck", "dane", "on", "result", "the resolver validates DNSSEC again")
			}
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// answerWords renders a discovered answer as the MTA would get it.
func answerWords(a discovery.Answer) string {
	if a.Kind == discovery.Found {
		return "OK " + a.Text
	}
	return a.Kind.String()
}

// daneGuard holds whether Postfix can enforce "dane" answers: without
// smtp_dns_support_level = dnssec and DNS host lookups it silently turns
// them into "may" (smtp_tls_policy.c, dane_init), weaker than an
// endpoint's "encrypt". The daemon checks it with postconf at start and
// after each reload, and withholds DANE while it fails.
type daneGuard struct {
	dir string // postconf -c, "" for Postfix's own
	mu  sync.Mutex
	ok  atomic.Bool
	why atomic.Pointer[string]
}

// allowed implements policyd.Discovery.DANEAllowed.
func (g *daneGuard) allowed() (bool, string) {
	if g.ok.Load() {
		return true, ""
	}
	if w := g.why.Load(); w != nil {
		return false, *w
	}
	return false, "Postfix's DANE settings are not known"
}

// check runs postconf and logs the outcome when it changes.
func (g *daneGuard) check(log *slog.Logger) {
	g.mu.Lock()
	defer g.mu.Unlock()
	must, _, err := postfixDANEProblems(g.dir)
	was, _ := g.allowed()
	switch {
	case err != nil:
		// Without postconf nothing can be checked (tlsgate on another
		// host than Postfix): answer DANE as configured.
		g.ok.Store(true)
		if log != nil {
			log.Warn("discovery-postfix", "dane", "on", "error", "cannot check Postfix's DANE settings: "+err.Error())
		}
	case len(must) > 0:
		why := strings.Join(must, "; ")
		g.why.Store(&why)
		g.ok.Store(false)
		if log != nil {
			log.Error("discovery-postfix", "dane", "withheld", "error", "Postfix cannot enforce DANE: "+why+"; domains with DANE get their MTA-STS policy or none until a reload (SIGHUP) finds it fixed")
		}
	default:
		g.ok.Store(true)
		if !was && log != nil && g.why.Load() != nil {
			log.Info("discovery-postfix", "dane", "on", "result", "Postfix's DANE settings are right now")
		}
	}
}

// postfixDANEProblems asks the installed Postfix (postconf -c dir) for
// what DANE needs. must are settings without which "dane" becomes "may";
// should are settings discovery.md recommends. err: postconf could not
// be run.
func postfixDANEProblems(dir string) (must, should []string, err error) {
	params := []string{"smtp_dns_support_level", "smtp_host_lookup", "smtp_tls_dane_insecure_mx_policy", "mail_version"}
	args := []string{"-x", "-h"}
	if dir != "" {
		args = append([]string{"-c", dir}, args...)
	}
	out, err := exec.Command("postconf", append(args, params...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("postconf: %s", strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, nil, err
	}
	vals := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(vals) != len(params) {
		return nil, nil, fmt.Errorf("postconf printed %d lines for %d parameters", len(vals), len(params))
	}
	level, lookup, insecure, version := strings.TrimSpace(vals[0]), strings.TrimSpace(vals[1]), strings.TrimSpace(vals[2]), strings.TrimSpace(vals[3])
	if level != "dnssec" {
		must = append(must, fmt.Sprintf("set smtp_dns_support_level = dnssec (it is %q): without it Postfix turns every \"dane\" answer into \"may\"", level))
	}
	if !strings.Contains(strings.ReplaceAll(lookup, ",", " "), "dns") {
		must = append(must, fmt.Sprintf("set smtp_host_lookup = dns (it is %q): DANE needs the DNSSEC status of DNS lookups", lookup))
	}
	if insecure != "dane" {
		note := ""
		if versionLess(version, "3.7.13") {
			note = fmt.Sprintf(" (the default of Postfix %s is unsafe)", version)
		}
		should = append(should, fmt.Sprintf("set smtp_tls_dane_insecure_mx_policy = dane (it is %q%s): an MX found by an insecure lookup would otherwise get \"may\"", insecure, note))
	}
	return must, should, nil
}

// controlHandler answers the control socket's commands on the running
// daemon: show, refresh and purge DOMAIN (the discovery cache), and query
// KEY [MAP] (an outbound answer with where it comes from).
func controlHandler(d *discovery.Discoverer, m *policyd.TLSMap) control.Handler {
	return func(ctx context.Context, cmd string, args []string) ([]string, error) {
		switch cmd {
		case "show", "refresh", "purge":
			if len(args) != 1 {
				return nil, fmt.Errorf("%s takes one DOMAIN", cmd)
			}
			return discoveryCommand(ctx, d, cmd, args[0])
		case "query":
			if len(args) < 1 || len(args) > 2 {
				return nil, errors.New("query takes KEY and an optional MAP")
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return explainLines(m.Explain(ctx, queryMapName(m.Policy(), args[0], name), args[0])), nil
		}
		return nil, fmt.Errorf("unknown command %q (want show, refresh, purge or query)", cmd)
	}
}

// queryMapName is the map a query asks when none is given: Postfix's
// map_name; for Sendmail the access map for a tagged key, else the sts
// map of FEATURE(`sts') when discovery is on.
func queryMapName(p *policy.Policy, key, name string) string {
	if name != "" {
		return name
	}
	if p.MTA != policy.Sendmail {
		return p.Settings.MapName
	}
	if _, tagged := sendmailKey(key); tagged || p.Settings.Discovery == nil {
		return policyd.SendmailMapName
	}
	return policyd.SendmailSTSMapName
}

// discoveryCommand runs show, refresh or purge on d.
func discoveryCommand(ctx context.Context, d *discovery.Discoverer, cmd, domain string) ([]string, error) {
	switch cmd {
	case "show":
		info, ok, err := d.Show(domain)
		if err != nil {
			return nil, err
		}
		if !ok {
			return []string{"cached: no"}, nil
		}
		return infoLines(info), nil
	case "refresh":
		r, err := d.Refresh(ctx, domain)
		if err != nil {
			return nil, err
		}
		return resultLines(r), nil
	}
	ok, err := d.Purge(domain)
	if err != nil {
		return nil, err
	}
	if ok {
		return []string{"purged: yes"}, nil
	}
	return []string{"purged: no (it was not cached)"}, nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// resultLines renders a discovery result.
func resultLines(r discovery.Result) []string {
	l := []string{
		"domain: " + r.Domain,
		"postfix: " + answerWords(r.Postfix),
		"sendmail: " + answerWords(r.Sendmail),
		"source: " + r.Source.String(),
		"cache: " + r.Cache.String(),
		"dane: " + r.DANE.String(),
	}
	if r.PolicyID != "" {
		l = append(l, "sts_id: "+r.PolicyID, "sts_mode: "+r.STSMode.String())
	}
	l = append(l, "expires: "+stamp(r.Expires))
	if r.Change != 0 {
		l = append(l, "change: "+r.Change.String())
	}
	if r.Reason != "" {
		l = append(l, "reason: "+r.Reason)
	}
	return l
}

// infoLines renders what the cache holds for a domain.
func infoLines(i discovery.Info) []string {
	l := append([]string{"cached: yes"}, resultLines(i.Result)...)
	l = append(l,
		"last_used: "+stamp(i.LastUsed),
		"dane_state: "+i.DANE.String(),
		"dane_checked: "+stamp(i.DANEChecked),
		"dane_expires: "+stamp(i.DANEExpires),
		"dane_last_usable: "+stamp(i.DANELastUsable))
	if i.DANEReason != "" {
		l = append(l, "dane_reason: "+i.DANEReason)
	}
	id := i.STSRecordID
	if id == "" {
		id = "-"
	}
	l = append(l, "sts_record_id: "+id, "sts_record_checked: "+stamp(i.STSRecordChecked), "sts_record_expires: "+stamp(i.STSRecordExpires))
	if i.STSPolicy != nil {
		l = append(l, "sts_policy_id: "+i.STSPolicyID, "sts_policy_mode: "+i.STSPolicy.Mode.String(),
			"sts_policy_mx: "+strings.Join(i.STSPolicy.MX, " "),
			"sts_policy_max_age: "+fmt.Sprint(i.STSPolicy.MaxAge),
			"sts_fetched: "+stamp(i.STSFetched), "sts_expires: "+stamp(i.STSExpires))
	}
	if i.STSError != "" {
		l = append(l, "sts_error: "+i.STSError, "sts_retry_after: "+stamp(i.STSRetryAfter))
	}
	return l
}

// explainLines renders an outbound answer with where it comes from; the
// first line is the socketmap reply.
func explainLines(x policyd.Explanation) []string {
	l := []string{"reply: " + x.Reply.String(), "source: " + x.Answer.Source.String()}
	if ep := x.Answer.Endpoint; ep != nil {
		e := ep.Name
		if x.Answer.Monitor() {
			e += " (monitor mode)"
		}
		l = append(l, "endpoint: "+e)
	}
	if e := x.Answer.Exception; e != nil {
		l = append(l, "exception: "+exceptionNote(e))
	}
	if x.Answer.Overrides != policy.SourceNone {
		l = append(l, "overrides: "+x.Answer.Overrides.String())
	}
	if x.Discovered {
		cache := "pending (the discovery goes on and is cached for the next lookup)"
		if !x.Pending {
			cache = x.Result.Cache.String()
		}
		l = append(l, "cache: "+cache)
		if x.Result.Domain != "" {
			l = append(l, "discovered: "+answerWords(x.Result.Postfix)+" ("+x.Result.Source.String()+", dane "+x.Result.DANE.String()+")")
		}
	}
	if x.Reason != "" {
		l = append(l, "reason: "+x.Reason)
	}
	return l
}

const discoveryHelp = `
Acts on the discovery cache of the running daemon (tlsgate serve with a
[discovery] table) through its control socket ([discovery] control_socket,
default ` + policy.DefaultControlSocket + `, mode 0600: run it as root or as
tlsgate's user):
  show DOMAIN      what the cache holds for DOMAIN: the answers for Postfix
                   and Sendmail, DANE state, MTA-STS record and policy, when
                   each expires, the last failure; no network
  refresh DOMAIN   discover DOMAIN again now (DNS and HTTPS), ignoring the
                   cache and the retry back-off, and print the new answer
  purge DOMAIN     drop DOMAIN from the cache; the next lookup discovers it
Exit status: 0 done, 1 DOMAIN is not cached (show, purge), 2 usage or
configuration error, 3 the daemon could not be reached or failed.
`

func cmdDiscovery(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("discovery", "tlsgate discovery [-c FILE | --socket PATH] show|refresh|purge DOMAIN", discoveryHelp, stdout, stderr)
	file := fs.String("c", defaultConfig, "configuration `file` (for [discovery] control_socket)")
	socket := fs.String("socket", "", "control socket `path` of the running daemon (default: from the configuration)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) != 2 || (pos[0] != "show" && pos[0] != "refresh" && pos[0] != "purge") {
		fmt.Fprintln(stderr, "tlsgate discovery: want show, refresh or purge and one DOMAIN")
		return exitUsage
	}
	if _, err := discovery.BareDomain(pos[1]); err != nil {
		fmt.Fprintf(stderr, "tlsgate discovery: %v\n", strings.TrimPrefix(err.Error(), "discovery: "))
		return exitUsage
	}
	path := *socket
	if path == "" {
		p, err := policy.Load(*file)
		if err != nil {
			printLoadError(stderr, err)
			return exitUsage
		}
		if p.Settings.Discovery == nil {
			fmt.Fprintf(stderr, "%s: no [discovery] table: discovery is off\n", p.File)
			return exitUsage
		}
		path = p.Settings.Discovery.ControlSocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), control.Timeout+5*time.Second)
	defer cancel()
	lines, err := control.Ask(ctx, path, pos[0], pos[1])
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate discovery %s: %v\n", pos[0], err)
		return exitRuntime
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, l)
	}
	if len(lines) > 0 && (lines[0] == "cached: no" || strings.HasPrefix(lines[0], "purged: no")) {
		return exitFail
	}
	return exitOK
}

// checkDiscovery is check's part for [discovery]: the engine's settings
// (sts_ca_file readable, cache_file's directory), the resolver self-check
// and, on Postfix with dane = true, Postfix's DANE settings. A setting
// the daemon would refuse is an error (exit 2); a resolver that does not
// validate and missing Postfix settings are warnings, because the daemon
// then keeps DANE off (never silently: it logs so, and check says it here).
func checkDiscovery(p *policy.Policy, pcDir string, detect bool, stderr io.Writer) (string, int) {
	ds := p.Settings.Discovery
	if ds.CacheFile != "" {
		if fi, err := os.Stat(filepath.Dir(ds.CacheFile)); err != nil || !fi.IsDir() {
			printLoadError(stderr, p.SettingError("discovery.cache_file", fmt.Errorf("the directory of %s does not exist; create it, writable by tlsgate's user (the package makes /var/lib/tlsgate)", ds.CacheFile)))
			return "", exitUsage
		}
	}
	d, err := newDiscoverer(p, nil, false)
	if err != nil {
		printLoadError(stderr, err)
		return "", exitUsage
	}
	var what []string
	if ds.MTASTS {
		what = append(what, "mta-sts")
	}
	if ds.DANE {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := d.SelfCheck(ctx)
		cancel()
		warn := func(msg string) {
			fmt.Fprintln(stderr, (&policy.Problem{File: p.File, Line: p.Line("discovery.dane"), Warning: true, Msg: msg}).Error())
		}
		resolver := ds.Resolver
		if resolver == "" {
			resolver = defaultResolver()
		}
		state := "dane (resolver " + resolver + " validates DNSSEC)"
		if err != nil {
			warn(strings.TrimPrefix(err.Error(), "discovery: ") + "; the daemon answers no DANE policy until the resolver validates")
			state = "dane off (resolver " + resolver + " does not validate)"
		}
		if p.MTA == policy.Postfix && detect {
			must, should, perr := postfixDANEProblems(pcDir)
			if perr == nil {
				for _, m := range must {
					warn("Postfix cannot enforce DANE: " + m + " (tlsgate mta-config prints it); until then the daemon withholds DANE answers")
				}
				for _, s := range should {
					warn("Postfix: " + s + " (tlsgate mta-config prints it)")
				}
				if len(must) > 0 {
					state = "dane withheld (Postfix's settings)"
				}
			}
		}
		what = append(what, state)
	}
	return "discovery " + strings.Join(what, ", "), exitOK
}

// queryDiscovered answers `tlsgate query outbound` for a bare domain with
// discovery on: from the running daemon (its cache), else computed here.
func queryDiscovered(p *policy.Policy, key string, offline bool, stdout, stderr io.Writer) int {
	var lines []string
	if !offline {
		ctx, cancel := context.WithTimeout(context.Background(), control.Timeout+5*time.Second)
		l, err := control.Ask(ctx, p.Settings.Discovery.ControlSocket, "query", key)
		cancel()
		if err == nil {
			lines = l
		} else {
			fmt.Fprintf(stderr, "# the daemon was not asked: %v\n", err)
		}
	}
	if lines == nil {
		fmt.Fprintln(stderr, "# discovered here (DNS and HTTPS now, without the daemon's cache)")
		d, err := newDiscoverer(p, nil, false)
		if err != nil {
			printLoadError(stderr, err)
			return exitUsage
		}
		if err := d.SelfCheck(context.Background()); err != nil {
			fmt.Fprintf(stderr, "# %v\n", err)
		}
		dc := &policyd.Discovery{Engine: d, Wait: 60 * time.Second}
		if p.MTA == policy.Postfix && p.Settings.Discovery.DANE {
			g := &daneGuard{}
			g.check(nil)
			dc.DANEAllowed = g.allowed
		}
		m := &policyd.TLSMap{Policy: func() *policy.Policy { return p }, Discovery: dc}
		lines = explainLines(m.Explain(context.Background(), queryMapName(p, key, ""), key))
	}
	if len(lines) == 0 {
		fmt.Fprintln(stderr, "tlsgate query: empty answer")
		return exitRuntime
	}
	reply, ok := strings.CutPrefix(lines[0], "reply: ")
	if !ok {
		fmt.Fprintf(stderr, "tlsgate query: unexpected answer %q\n", lines[0])
		return exitRuntime
	}
	fmt.Fprintln(stdout, reply)
	for _, l := range lines[1:] {
		fmt.Fprintln(stderr, "# "+l)
	}
	r, err := policyd.ParseReply([]byte(reply))
	if err != nil {
		return exitRuntime
	}
	if p.MTA != policy.Postfix {
		// FEATURE(`sts')'s map has no walk: one key, the domain.
		return replyExit(r)
	}
	// Postfix goes on with the parent domains, which get no discovered
	// policy: the file answers them as the daemon does.
	v := p.At(time.Now())
	steps := queryWalk(policy.PostfixKeys(key), func(k string) queryStep {
		if k == key {
			return queryStep{key: k, reply: r}
		}
		a, err := v.Outbound(k)
		return queryStep{key: k, reply: policyd.AnswerReply(a, err), answer: a, known: true}
	})
	return printRest(steps, false, stderr)
}
