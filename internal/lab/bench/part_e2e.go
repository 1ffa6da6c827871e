package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// End-to-end set-ups of part 4.
const (
	setupAlone   = "postfix-alone"
	setupNoop    = "noop-addons"
	setupTlsgate = "tlsgate"
)

// e2eSetup is one of the three ways through the same Postfix.
type e2eSetup struct {
	name    string
	domain  string // recipient domain, routed to the set-up's smtp transport
	service string // smtpd listener (TLS-wrapped), with the set-up's milter
	proxy   *TLSProxy
	procs   []*Process
}

// e2eSize is a message size of part 4.
type e2eSize struct {
	label string
	bytes int
	msgs  int
}

// partE2E runs smtp-source through a private Postfix in three set-ups.
func (r *runner) partE2E(s *Section) error {
	for _, cmd := range []string{"/usr/sbin/smtp-source"} {
		if _, err := os.Stat(cmd); err != nil {
			s.Skipped = fmt.Sprintf("%s is missing (Debian package postfix): %v", cmd, err)
			return nil
		}
	}
	t := mtalab.NewRunner(r.o.Progress, "    e2e: ")
	err := t.Do(func() { r.e2e(t, s) })
	if errors.Is(err, mtalab.ErrSkipped) {
		s.Skipped = "bench: skipped: " + err.Error() + " (" + mtalab.InstallHint + "; part 4 needs root)"
		err = nil
	} else if err != nil {
		err = fmt.Errorf("bench: e2e: %w", err)
	}
	if cerr := t.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("bench: e2e: %w", cerr))
	}
	return err
}

// fatal ends the end-to-end part with err.
func fatal(t mtalab.T, err error) {
	if err != nil {
		t.Fatalf("%v", err)
	}
}

func (r *runner) e2e(t mtalab.T, s *Section) {
	mtalab.RequirePostfix(t)
	// Everything of Postfix (queue, logs) and the sockets on a tmpfs.
	base := "/dev/shm"
	if !IsTmpfs(base) {
		base = ""
	}
	dir, err := os.MkdirTemp(base, "tlsgate-bench-e2e-")
	fatal(t, err)
	t.Cleanup(func() {
		if !r.o.KeepWork {
			os.RemoveAll(dir)
		}
	})
	fatal(t, os.Chmod(dir, 0o755))
	onTmpfs := IsTmpfs(dir)

	// PKI: the lab CA signs ECDSA P-256 leaves for Postfix, the sink and the client.
	pki, err := testpki.New(filepath.Join(dir, "pki"))
	fatal(t, err)
	issue := func(name, cn string, dns ...string) *testpki.Cert {
		c, err := pki.Issue(testpki.Options{Name: name, Subject: pkix.Name{Country: []string{"DE"}, Organization: []string{"Lab Test"}, CommonName: cn},
			DNSNames: dns, KeyType: testpki.ECDSAP256, Signer: pki.CA})
		fatal(t, err)
		return c
	}
	mxCert := issue("bench-mx", "mx.lab.test", "mx.lab.test")
	sinkCert := issue("bench-sink", "sink.partner.test", "sink.partner.test")
	clientCert := issue("bench-client", "client.lab.test", "client.lab.test")
	sink := mtalab.StartSink(t, mtalab.SinkOptions{Hostname: "sink.partner.test", TLS: sinkCert, Discard: true, WrapConn: newQuickAckConn})

	setups := []*e2eSetup{
		{name: setupAlone, domain: "alone.partner.test", service: "alone"},
		{name: setupNoop, domain: "noop.partner.test", service: "noop"},
		{name: setupTlsgate, domain: "gate.partner.test", service: "gate"},
	}
	sock := func(n string) string { return filepath.Join(dir, n+".sock") }

	// tlsgate: 1,000 generated endpoints plus the lab's client and sink.
	extra := fmt.Sprintf(`
[[endpoint]]
name = "lab-client"
hosts = ["127.0.0.1"]
  [endpoint.inbound]
  validate_cert = true
  cn = "client.lab.test"
  issuer_cn = %q
  min_bits = 128

[[endpoint]]
name = "lab-sink"
hosts = ["sink.partner.test"]
  [endpoint.outbound]
  validate_cert = true
  cn = "sink.partner.test"
  min_bits = 128
`, pki.CA.Cert.Subject.CommonName)
	g, err := GenerateConfig(ConfigOptions{Endpoints: 1000, MilterListen: "unix:" + sock("gate-milter"), SocketmapListen: "unix:" + sock("gate-policy"), Extra: extra})
	fatal(t, err)
	cfg := filepath.Join(dir, "tlsgate.toml")
	fatal(t, os.WriteFile(cfg, g.TOML, 0o644))
	pol, err := policy.Parse(cfg, g.TOML)
	fatal(t, err)
	nexthop := fmt.Sprintf("[sink.partner.test]:%d", sink.Port())
	ans, err := pol.Outbound(nexthop)
	fatal(t, err)
	if !ans.Found {
		t.Fatalf("the benchmark policy does not cover %s", nexthop)
	}

	start := func(name, spec string, argv ...string) *Process {
		p, err := StartProcess(name, spec, filepath.Join(dir, name+".log"), -1, nil, argv...)
		fatal(t, err)
		t.Cleanup(func() { p.Stop() })
		return p
	}
	gate := start("tlsgate", "unix:"+sock("gate-policy"), r.o.Tlsgate, "serve", "-c", cfg)
	setups[2].procs = []*Process{gate}
	setups[1].procs = []*Process{
		start("noop-milter", "unix:"+sock("noop-milter"), r.o.Self, "noop-milter", "-listen", "unix:"+sock("noop-milter")),
		start("noop-socketmap", "unix:"+sock("noop-policy"), r.o.Self, "noop-socketmap", "-impl", "raw", "-listen", "unix:"+sock("noop-policy"), "-reply", "OK "+ans.Text),
	}

	// One Postfix; each set-up has its own TLS-wrapped smtpd (with its
	// milter) and its own smtp transport (with its socketmap).
	opts := mtalab.PostfixOptions{
		TLS:          mxCert,
		ClientCAFile: pki.CA.CertFile,
		SMTPCAFile:   pki.CA.CertFile,
		Hosts:        []string{"127.0.0.1 sink.partner.test"},
		Transport:    map[string]string{},
		MainCF:       []string{"milter_default_action = tempfail", "milter_protocol = 6"},
	}
	milters := map[string]string{setupAlone: "", setupNoop: "unix:" + sock("noop-milter"), setupTlsgate: "unix:" + sock("gate-milter")}
	maps := map[string]string{setupAlone: "", setupNoop: "socketmap:unix:" + sock("noop-policy") + ":tlspolicy", setupTlsgate: "socketmap:unix:" + sock("gate-policy") + ":tlspolicy"}
	for _, st := range setups {
		opts.Services = append(opts.Services, mtalab.Service{Name: st.service,
			Overrides: []string{"smtpd_tls_wrappermode=yes", "smtpd_milters=" + milters[st.name]}})
		opts.Transport[st.domain] = fmt.Sprintf("smtp-%s:%s", st.service, nexthop)
		opts.MasterCF = append(opts.MasterCF, fmt.Sprintf("smtp-%s unix - - n - - smtp\n  -o smtp_tls_policy_maps=%s", st.service, maps[st.name]))
	}
	pf := startPostfixIn(t, dir, opts)

	pool := x509.NewCertPool()
	pool.AddCert(pki.CA.Cert)
	clientPair, err := tls.LoadX509KeyPair(clientCert.CertFile, clientCert.KeyFile)
	fatal(t, err)
	for _, st := range setups {
		st.proxy, err = NewTLSProxy(pf.SMTPAddr(st.service), &tls.Config{ServerName: "mx.lab.test", RootCAs: pool, Certificates: []tls.Certificate{clientPair}})
		fatal(t, err)
		t.Cleanup(func() { st.proxy.Close() })
	}

	sizes := []e2eSize{{"2 KB", 2048, r.o.Messages2K}, {"100 KB", 102400, r.o.Messages100K}}
	qdir := pf.QueueDir()
	s.Intro = fmt.Sprintf(`One private Postfix 3.7 (package mtalab: own mount namespace, loopback only, queue and maillog on %s) with three
smtpd listeners and three smtp transports, one pair per set-up, so the set-ups differ only in what is plugged in:
**postfix-alone** (no milter, no policy map); **noop-addons** (go-milter's NoOpMilter negotiating like tlsgate, and the noop-raw
socketmap answering "OK %s" to every lookup, the answer tlsgate gives); **tlsgate** (`+"`tlsgate serve`"+` with the 1,000 generated
endpoints plus the lab's client and sink, milter and socketmap, default logging). TLS on both legs in all three: Postfix's
smtp-source (which has no TLS) talks to a small proxy in the runner that opens a TLS connection with a client certificate to the
set-up's smtpd (smtpd_tls_wrappermode = yes), so Postfix reports the certificate to the milter, tlsgate judges "pass" and stamps its headers;
Postfix delivers over STARTTLS to a discard sink (a Go SMTP server that counts and drops messages) whose certificate it verifies.
Proxy and sink set TCP_QUICKACK: on loopback, Postfix's Nagle algorithm meeting a delayed ACK otherwise stalls the end of each
TLS handshake and message by 40 ms, and the run would measure those stalls instead of CPU.
Certificates are ECDSA P-256 from the lab CA. One message per SMTP connection, %d parallel sessions, messages of %s bytes;
the set-ups run interleaved, %d rounds, after a warm-up of 50 messages each. msgs/s = messages / (smtp-source start to the sink
receiving the last one); "inject" is smtp-source alone. delays=a/b/c/d are the medians of Postfix's own split per message
(a: before the queue manager, including the milter; b: queue manager; c: connection set-up including TLS and the policy lookup; d: transmission).
Add-on CPU counts the milter and socketmap processes; machine CPU is all CPUs' busy time from /proc/stat (every process, including
anything else running); harness CPU is the runner's own process (TLS proxy and sink). Nothing is pinned here: Postfix, the add-ons, the proxy and the sink share the CPUs.`,
		map[bool]string{true: "tmpfs", false: "disk (no tmpfs found)"}[onTmpfs], ans.Text, r.o.Sessions, sizeList(sizes), r.o.E2ERounds)
	s.Commands = append(s.Commands,
		fmt.Sprintf("smtp-source -s %d -m N -l SIZE -f sender@lab.test -t user@DOMAIN -M client.lab.test 127.0.0.1:PROXYPORT", r.o.Sessions),
		"tlsgate serve -c tlsgate.toml   # [milter] and [policyd] on unix sockets, 1,002 endpoints",
		"tlsgate-bench noop-milter -listen unix:noop-milter.sock",
		fmt.Sprintf("tlsgate-bench noop-socketmap -impl raw -listen unix:noop-policy.sock -reply 'OK %s'", ans.Text),
		"main.cf: smtpd_milters per listener (-o), smtp_tls_policy_maps = socketmap:unix:...:tlspolicy per transport (-o), smtp_tls_CAfile, smtpd_tls_CAfile, smtpd_tls_ask_ccert = yes")

	e := &e2eRun{r: r, pf: pf, sink: sink, qdir: qdir}
	// Warm-up, which also checks that each set-up delivers over TLS.
	for _, st := range setups {
		if _, err := e.run(st, e2eSize{"warm-up", 2048, 50}, 0); err != nil {
			t.Fatalf("warm-up of %s: %v", st.name, err)
		}
	}
	// The warm-up must have gone through tlsgate's two parts: the milter
	// passed the client, and the socketmap answered for the sink.
	data, _ := os.ReadFile(gate.LogPath)
	if !strings.Contains(string(data), "result=pass") {
		t.Fatalf("tlsgate judged no message \"pass\" in the warm-up: %s", tailFile(gate.LogPath, 1500))
	}
	// Answered lookups are logged at debug only; that Postfix applied
	// tlsgate's answer (a verify/secure level, ans.Text) shows as
	// "Verified", which its default level (may) never logs.
	if !strings.Contains(pf.Log(), "Verified TLS connection established to sink.partner.test") {
		t.Fatalf("Postfix did not apply tlsgate's policy %q for the sink in the warm-up:\n%s", ans.Text, pf.Log())
	}
	for round := 1; round <= r.o.E2ERounds; round++ {
		for si, size := range sizes {
			for _, st := range rotate(setups, round+si) {
				res, err := e.run(st, size, round)
				fatal(t, err)
				r.logf("  %s %s round %d: %.0f msg/s (inject %.0f/s) delays %s", st.name, size.label, round, res.rate, res.injectRate, res.delays)
			}
		}
	}
	if n, _ := sink.Count(setupTlsgate); n > 0 && sink.TLSSessions() == 0 {
		t.Fatalf("no delivery used TLS")
	}
	r.e2eTables(s, sizes, setups)
}

// startPostfixIn starts Postfix with its instance directory (queue, maillog)
// under dir: mtalab makes it under $TMPDIR, which is set for the call.
func startPostfixIn(t mtalab.T, dir string, opts mtalab.PostfixOptions) *mtalab.Postfix {
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", dir)
	defer func() {
		if had {
			os.Setenv("TMPDIR", old)
		} else {
			os.Unsetenv("TMPDIR")
		}
	}()
	return mtalab.StartPostfix(t, opts)
}

func sizeList(sizes []e2eSize) string {
	var ss []string
	for _, z := range sizes {
		ss = append(ss, fmt.Sprintf("%d (%d messages a run)", z.bytes, z.msgs))
	}
	return strings.Join(ss, " and ")
}

// e2eRun runs smtp-source and collects its results.
type e2eRun struct {
	r    *runner
	pf   *mtalab.Postfix
	sink *mtalab.Sink
	qdir string
}

// e2eResult is one run of one set-up.
type e2eResult struct {
	rate, injectRate float64
	delays           string
}

var sentRE = regexp.MustCompile(`: to=<[^@>]*@([^>]+)>, relay=[^,]*, (?:conn_use=\d+, )?delay=([0-9.]+), delays=([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+), dsn=[0-9.]+, status=(\w+)`)

func (e *e2eRun) run(st *e2eSetup, size e2eSize, round int) (*e2eResult, error) {
	logOff := fileSize(e.pf.MaillogPath())
	n0, _ := e.sink.Count(st.domain)
	var cpu0 time.Duration
	for _, p := range st.procs {
		c, _ := ProcCPU(p.PID())
		cpu0 += c
	}
	self0, _ := ProcCPU(os.Getpid())
	busy0, _ := MachineBusy()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(size.msgs)*50*time.Millisecond+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/sbin/smtp-source", "-s", strconv.Itoa(e.r.o.Sessions), "-m", strconv.Itoa(size.msgs), "-l", strconv.Itoa(size.bytes),
		"-f", "sender@lab.test", "-t", "user@"+st.domain, "-M", "client.lab.test", st.proxy.Addr())
	out, err := cmd.CombinedOutput()
	inject := time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("smtp-source: %v: %s", err, out)
	}
	last, err := e.sink.WaitCount(st.domain, n0+size.msgs, time.Duration(size.msgs)*50*time.Millisecond+60*time.Second)
	if err != nil {
		q, _ := e.pf.Queue()
		reason := ""
		if len(q) > 0 && len(q[0].Recipients) > 0 {
			reason = q[0].Recipients[0].Reason
		}
		return nil, fmt.Errorf("%s: %v; %d queued (%s); proxy errors %d", st.name, err, len(q), reason, st.proxy.Errors())
	}
	elapsed := last.Sub(t0)
	self1, _ := ProcCPU(os.Getpid())
	busy1, _ := MachineBusy()
	var cpu1 time.Duration
	for _, p := range st.procs {
		c, _ := ProcCPU(p.PID())
		cpu1 += c
	}
	// Let Postfix log the deliveries and empty its queue before the next run.
	if err := waitQueueFiles(e.qdir, 60*time.Second); err != nil {
		return nil, err
	}
	res := &e2eResult{rate: float64(size.msgs) / elapsed.Seconds(), injectRate: float64(size.msgs) / inject.Seconds()}
	var dl [5][]float64
	sent, other := 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		dl = [5][]float64{}
		sent, other = 0, 0
		scanFrom(e.pf.MaillogPath(), logOff, func(line string) {
			m := sentRE.FindStringSubmatch(line)
			if m == nil || m[1] != st.domain {
				return
			}
			if m[7] != "sent" {
				other++
				return
			}
			sent++
			for i := range 5 {
				v, _ := strconv.ParseFloat(m[2+i], 64)
				dl[i] = append(dl[i], v)
			}
		})
		if sent+other >= size.msgs || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if other > 0 {
		return nil, fmt.Errorf("%s: %d messages not sent (deferred or bounced); see %s", st.name, other, e.pf.MaillogPath())
	}
	med := func(i int) float64 { return Summarize(dl[i]).Median }
	res.delays = fmt.Sprintf("%.2f/%.2f/%.2f/%.2f", med(1), med(2), med(3), med(4))
	if round > 0 {
		base := Measurement{Section: "e2e", Round: round, Subject: st.name, Variant: size.label}
		add := func(metric string, v float64) {
			m := base
			m.Metric, m.Value = metric, v
			e.r.data.add(m)
		}
		add("rate_per_s", res.rate)
		add("inject_rate_per_s", res.injectRate)
		add("messages", float64(size.msgs))
		add("logged_sent", float64(sent))
		for i, name := range []string{"delay_s", "delay_a_s", "delay_b_s", "delay_c_s", "delay_d_s"} {
			add(name, med(i))
		}
		perMsg := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(size.msgs) }
		if len(st.procs) > 0 {
			add("addon_cpu_ms_per_msg", perMsg(cpu1-cpu0))
		}
		add("machine_cpu_ms_per_msg", perMsg(busy1-busy0))
		add("harness_cpu_ms_per_msg", perMsg(self1-self0))
	}
	return res, nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// scanFrom calls fn for each complete line of the file after offset off.
func scanFrom(path string, off int64, fn func(string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(off, 0); err != nil {
		return
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
}

// waitQueueFiles waits until Postfix's queue directories hold no message
// file.
func waitQueueFiles(qdir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
			filepath.WalkDir(filepath.Join(qdir, q), func(_ string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					n++
				}
				return nil
			})
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d messages still queued in %s after %v", n, qdir, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *runner) e2eTables(s *Section, sizes []e2eSize, setups []*e2eSetup) {
	d := r.data
	t := Table{Header: []string{"size", "set-up", "msgs/s", "vs noop-addons", "vs postfix-alone", "inject msgs/s", "delays a/b/c/d s (medians)",
		"add-on CPU ms/msg", "machine CPU ms/msg", "harness CPU ms/msg"}}
	var spreads []Spread
	var labels []string
	for _, z := range sizes {
		for _, st := range setups {
			k := key{section: "e2e", subject: st.name, variant: z.label}
			get := func(metric string) Spread { kk := k; kk.metric = metric; return d.spread(kk) }
			kr := k
			kr.subject, kr.metric = "", "rate_per_s"
			vsNoop, vsAlone := "", ""
			if st.name != setupNoop {
				vsNoop = fmtRatio(d.ratios(kr, st.name, setupNoop, r.o.E2ERounds))
			}
			if st.name != setupAlone {
				vsAlone = fmtRatio(d.ratios(kr, st.name, setupAlone, r.o.E2ERounds))
			}
			delays := fmt.Sprintf("%.2f / %.2f / %.2f / %.2f", get("delay_a_s").Median, get("delay_b_s").Median, get("delay_c_s").Median, get("delay_d_s").Median)
			cpu := "–"
			if st.name != setupAlone {
				cpu = fmtSpread(get("addon_cpu_ms_per_msg"), 3)
			}
			t.Rows = append(t.Rows, []string{z.label, st.name, fmtRate(get("rate_per_s")), vsNoop, vsAlone, fmtRate(get("inject_rate_per_s")), delays, cpu,
				fmtSpread(get("machine_cpu_ms_per_msg"), 2), fmtSpread(get("harness_cpu_ms_per_msg"), 2)})
		}
		kr := key{section: "e2e", variant: z.label, metric: "rate_per_s"}
		ratio := d.ratios(kr, setupTlsgate, setupNoop, r.o.E2ERounds)
		s.Targets = append(s.Targets, Target{Name: "msgs/s tlsgate vs noop-addons, " + z.label, Want: "≥ 0.95x", Got: fmtRatio(ratio), Met: ratio.Median >= 0.95})
		spreads, labels = append(spreads, ratio), append(labels, z.label)
	}
	s.Tables = append(s.Tables, t)
	s.Targets = summarize(s.Targets, []targetGroup{{"4. end-to-end msgs/s, tlsgate vs no-op add-ons", "≥ 0.95x", spreads, labels, true, 0.95}})
}
