package posture

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/milter"
)

// capture re-records the log fixtures in testdata/lab from real Postfix and
// Sendmail runs: go test ./internal/posture -run TestCaptureFixtures -capture
// (as root, with the lab installed; see scripts/install-test-deps.sh).
// The golden JSON files are then rewritten with -update.
var capture = flag.Bool("capture", false, "re-capture testdata/lab/*.log from the real MTA lab")

// labPolicy is the tlsgate configuration the Postfix capture runs its
// milter with, and the "current policy" the golden reports judge with.
const labPolicyFile = "testdata/lab/current.toml"

// inbound clients of the lab, each from its own loopback address with a
// host name in the namespace's hosts file, so that every client is its
// own peer.
type labClient struct {
	addr, name, sender string
	cert               func(*testpki.PKI) *testpki.Cert // nil: no client certificate
	tls                bool
	n                  int
}

func labClients() []labClient {
	ca := func(p *testpki.PKI) *testpki.Cert { return p.Client }
	self := func(p *testpki.PKI) *testpki.Cert { return p.SelfSigned }
	return []labClient{
		{addr: "127.0.0.2", name: "mx.trusted.test", sender: "alice@trusted.test", cert: ca, tls: true, n: 4},
		{addr: "127.0.0.3", name: "mx.anon.test", sender: "bob@anon.test", tls: true, n: 3},
		{addr: "127.0.0.4", name: "mx.untrusted.test", sender: "carol@untrusted.test", cert: self, tls: true, n: 2},
		{addr: "127.0.0.5", name: "mx.plain.test", sender: "dave@plain.test", n: 2},
		// A peer that mixes: mostly TLS, one plaintext session.
		{addr: "127.0.0.6", name: "mx.mixed.test", sender: "erin@mixed.test", tls: true, n: 3},
		{addr: "127.0.0.6", name: "mx.mixed.test", sender: "erin@mixed.test", n: 1},
	}
}

func (c labClient) hostsLine() string { return c.addr + " " + c.name }

// labSend sends n messages from c to rcpt at addr, one session each.
func labSend(t *testing.T, pki *testpki.PKI, addr string, c labClient, rcpt string) {
	t.Helper()
	for i := 0; i < c.n; i++ {
		var cfg *tls.Config
		if c.tls {
			cfg = &tls.Config{InsecureSkipVerify: true}
			if c.cert != nil {
				pair, err := tls.LoadX509KeyPair(c.cert(pki).ChainFile, c.cert(pki).KeyFile)
				if err != nil {
					t.Fatal(err)
				}
				// Sent even when the server's CA list does not name its
				// issuer (the self-signed one), as MTAs do.
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
			}
		}
		if err := smtpSend(addr, c.addr, cfg, c.sender, rcpt, fmt.Sprintf("%s #%d", c.name, i)); err != nil {
			t.Fatalf("send from %s to %s: %v", c.name, addr, err)
		}
	}
}

func smtpSend(addr, local string, cfg *tls.Config, from, to, subject string) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("client.lab.test"); err != nil {
		return err
	}
	if cfg != nil {
		if err := c.StartTLS(cfg); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nposture fixture\r\n", from, to, subject)
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// syslogWriter prefixes each line tlsgate writes with a classic syslog
// header, as rsyslog would write it to /var/log/mail.log, and appends it
// to the MTA's log file (O_APPEND: whole lines, interleaved in time).
type syslogWriter struct {
	mu   sync.Mutex
	f    *os.File
	host string
}

func (w *syslogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// syslog and journald strip the "<6>" severity prefix.
	msg := string(p)
	if len(msg) > 3 && msg[0] == '<' && msg[2] == '>' {
		msg = msg[3:]
	}
	line := time.Now().Format(time.Stamp) + " " + w.host + fmt.Sprintf(" tlsgate[%d]: ", os.Getpid()) + msg
	_, err := w.f.WriteString(line)
	return len(p), err
}

// startMilter runs tlsgate's milter with the lab policy, logging to w,
// and returns its address for smtpd_milters.
func startMilter(t *testing.T, w *syslogWriter) string {
	t.Helper()
	p, err := policy.Load(labPolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(logx.NewWriter(w, nil))
	srv, err := milter.New(milter.Options{Policy: func() *policy.Policy { return p }, Logger: logger, Hostname: w.host})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return "inet:" + ln.Addr().String()
}

// outbound sinks of the Postfix capture.
type labSink struct {
	domain string
	cert   func(*testpki.PKI) *testpki.Cert // nil: no STARTTLS
	policy string                           // smtp_tls_policy_maps entry for the sink's next hop, "" = none (may)
	reuse  bool                             // via the "reuse" transport (tlsproxy, connection cache)
	n      int
	// plainAfter more messages go, after the n, to a sink without
	// STARTTLS: the transport is re-pointed and Postfix reloaded.
	plainAfter int
}

func labSinks() []labSink {
	sink := func(p *testpki.PKI) *testpki.Cert { return p.Sink }
	return []labSink{
		{domain: "verified.partner.test", cert: sink, policy: "secure match=sink.partner.test", n: 4},
		{domain: "trusted.partner.test", cert: sink, n: 3},
		{domain: "untrusted.partner.test", cert: func(p *testpki.PKI) *testpki.Cert { return p.OtherCASink }, n: 2},
		{domain: "wrongname.partner.test", cert: func(p *testpki.PKI) *testpki.Cert { return p.WrongCN }, n: 2},
		{domain: "plain.partner.test", n: 2},
		{domain: "reuse.partner.test", cert: sink, policy: "secure match=sink.partner.test", reuse: true, n: 4},
		// The proposal rules: 20 verified sessions are ready, 20 verified
		// and one plaintext session are not.
		{domain: "ready.partner.test", cert: sink, policy: "secure match=sink.partner.test", n: 20},
		{domain: "notready.partner.test", cert: sink, policy: "secure match=sink.partner.test", n: 20, plainAfter: 1},
	}
}

func TestCaptureFixtures(t *testing.T) {
	if !*capture {
		t.Skip("re-capture with -capture (root, real MTA lab)")
	}
	out := filepath.Join("testdata", "lab")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("postfix", func(t *testing.T) { capturePostfix(t, out) })
	t.Run("sendmail", func(t *testing.T) { captureSendmail(t, out) })
	derive(t, out)
}

func capturePostfix(t *testing.T, out string) {
	pki := testpki.NewT(t)
	dir, err := os.MkdirTemp("", "posture-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)

	transport := map[string]string{"in.lab.test": "discard:"}
	var policyMap strings.Builder
	var sinks []*mtalab.Sink
	var reuseDest string
	for _, s := range labSinks() {
		opts := mtalab.SinkOptions{}
		if s.cert != nil {
			opts.TLS = s.cert(pki)
		}
		sk := mtalab.StartSink(t, opts)
		sinks = append(sinks, sk)
		nh := fmt.Sprintf("[127.0.0.1]:%d", sk.Port())
		if s.reuse {
			transport[s.domain] = "reuse:" + nh
			reuseDest = nh
		} else {
			transport[s.domain] = "smtp:" + nh
		}
		if s.policy != "" {
			fmt.Fprintf(&policyMap, "%s %s\n", nh, s.policy)
		}
	}
	policyPath := filepath.Join(dir, "tls_policy")
	if err := os.WriteFile(policyPath, []byte(policyMap.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, c := range labClients() {
		hosts = append(hosts, c.hostsLine())
	}
	// The milter logs into Postfix's maillog (see syslogWriter), whose
	// path is known once Postfix runs; no mail arrives before that.
	mw := &syslogWriter{host: "mx"}
	maddr := startMilter(t, mw)
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		TLS:           pki.Server,
		ClientCAFile:  pki.CA.CertFile,
		SMTPCAFile:    pki.CA.CertFile,
		TLSPolicyMaps: "texthash:" + policyPath,
		Transport:     transport,
		Hosts:         hosts,
		MasterCF: []string{
			"tlsproxy  unix  -       -       n       -       0       tlsproxy",
			"reuse     unix  -       -       n       -       -       smtp -o smtp_tls_connection_reuse=yes -o smtp_connection_cache_destinations=" + reuseDest,
		},
		Milter: maddr,
		// The reuse transport's mail waits in the deferred queue until all
		// of it is there, then goes out one delivery at a time: each
		// delivery finds the previous one's cached TLS connection.
		MainCF: []string{"defer_transports = reuse", "reuse_destination_concurrency_limit = 1"},
	})
	f, err := os.OpenFile(pf.MaillogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	mw.mu.Lock()
	mw.f = f
	mw.mu.Unlock()

	addr := pf.SMTPAddr("smtp")
	for _, c := range labClients() {
		labSend(t, pki, addr, c, "user@in.lab.test")
	}
	plainSink := mtalab.StartSink(t, mtalab.SinkOptions{})
	plainSent := 0
	for i, s := range labSinks() {
		for j := 0; j < s.n; j++ {
			if err := smtpSend(addr, "", nil, "sender@lab.test", "user@"+s.domain, fmt.Sprintf("%s #%d", s.domain, j)); err != nil {
				t.Fatal(err)
			}
		}
		if s.reuse {
			if out, err := exec.Command("postconf", "-c", pf.ConfigDir(), "-e", "defer_transports =").CombinedOutput(); err != nil {
				t.Fatalf("postconf: %v %s", err, out)
			}
			if err := pf.Reload(); err != nil {
				t.Fatal(err)
			}
			if err := pf.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := sinks[i].WaitMessages(s.n, time.Minute); err != nil {
			t.Fatalf("%s: %v", s.domain, err)
		}
		if s.reuse {
			if _, err := pf.WaitLog(regexp.MustCompile(`to=<user@reuse\.partner\.test>, relay=[^,]*, conn_use=[2-9]`), 10*time.Second); err != nil || !strings.Contains(pf.Log(), "TLS connection reused to") {
				t.Fatalf("the reuse transport did not reuse its TLS connection: %v", err)
			}
		}
		if s.plainAfter == 0 {
			continue
		}
		transport[s.domain] = plainSink.Nexthop()
		var tr strings.Builder
		for k, v := range transport {
			fmt.Fprintf(&tr, "%s\t%s\n", k, v)
		}
		tr.WriteString("lab.test\tdiscard:\n")
		must(t, os.WriteFile(filepath.Join(pf.ConfigDir(), "transport"), []byte(tr.String()), 0o644))
		mark := pf.LogMark()
		if err := pf.Reload(); err != nil {
			t.Fatal(err)
		}
		// The master logs the reload once it has re-read its files.
		if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`postfix/master\[\d+\]: reload -- version`), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := pf.WaitQueueEmpty(time.Minute); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < s.plainAfter; j++ {
			if err := smtpSend(addr, "", nil, "sender@lab.test", "user@"+s.domain, fmt.Sprintf("%s plain #%d", s.domain, j)); err != nil {
				t.Fatal(err)
			}
		}
		plainSent += s.plainAfter
		if _, err := plainSink.WaitMessages(plainSent, time.Minute); err != nil {
			t.Fatalf("%s: %v", s.domain, err)
		}
	}
	if err := pf.WaitQueueEmpty(time.Minute); err != nil {
		t.Fatal(err)
	}
	// qmgr's "removed" line for the last message may follow the queue
	// file's removal: wait for one per accepted message.
	waitLog(t, pf.Log, func(log string) bool {
		return strings.Count(log, ": removed\n") == strings.Count(log, "postfix/cleanup[")
	})
	copyFile(t, pf.MaillogPath(), filepath.Join(out, "postfix.log"))
}

func captureSendmail(t *testing.T, out string) {
	pki := testpki.NewT(t)
	tlsSink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.Sink})
	var hosts []string
	for _, c := range labClients() {
		hosts = append(hosts, c.hostsLine())
	}
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{
		TLS: pki.Server, CAFile: pki.CA.CertFile, SmartHostPort: tlsSink.Port(), Hosts: hosts,
	})
	n := 0
	for _, c := range labClients() {
		labSend(t, pki, sm.Addr(), c, "user@sm-out.test")
		n += c.n
	}
	if _, err := tlsSink.WaitMessages(n, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := sm.WaitQueueEmpty(time.Minute); err != nil {
		t.Fatal(err)
	}
	// One "stat=Sent" line per message: the last may be logged after the
	// sink saw the message.
	waitLog(t, sm.Log, func(log string) bool { return strings.Count(log, "stat=Sent") == n })
	first := readFile(t, sm.MaillogPath())

	// A second instance delivers to a sink without STARTTLS.
	plainSink := mtalab.StartSink(t, mtalab.SinkOptions{})
	sm2 := mtalab.StartSendmail(t, mtalab.SendmailOptions{
		TLS: pki.Server, CAFile: pki.CA.CertFile, SmartHostPort: plainSink.Port(), Hosts: hosts,
	})
	for i := 0; i < 2; i++ {
		if err := smtpSend(sm2.Addr(), "127.0.0.2", nil, "alice@trusted.test", "user@plain-out.test", "plain out"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := plainSink.WaitMessages(2, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := sm2.WaitQueueEmpty(time.Minute); err != nil {
		t.Fatal(err)
	}
	waitLog(t, sm2.Log, func(log string) bool { return strings.Count(log, "stat=Sent") == 2 })
	second := readFile(t, sm2.MaillogPath())
	if err := os.WriteFile(filepath.Join(out, "sendmail.log"), append(first, second...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// derive makes the rotated and journald fixtures from the captured logs:
// postfix.log split into postfix-rotated.log.1.gz (first half) and
// postfix-rotated.log (second half), and postfix.journal, the log as
// "journalctl -o short-iso" prints it.
func derive(t *testing.T, out string) {
	data := readFile(t, filepath.Join(out, "postfix.log"))
	lines := bytes.SplitAfter(data, []byte("\n"))
	half := len(lines) / 2
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Join(lines[:half], nil))
	zw.Close()
	must(t, os.WriteFile(filepath.Join(out, "postfix-rotated.log.1.gz"), gz.Bytes(), 0o644))
	must(t, os.WriteFile(filepath.Join(out, "postfix-rotated.log"), bytes.Join(lines[half:], nil), 0o644))
	must(t, os.WriteFile(filepath.Join(out, "postfix.journal"), []byte(toJournal(t, data)), 0o644))
}

// toJournal rewrites classic syslog lines ("Dec  7 19:40:01 host ...")
// into journalctl -o short-iso output ("2026-12-07T19:40:01+0000 host
// ..."), with journalctl's header line. The year is the capture's.
func toJournal(t *testing.T, data []byte) string {
	var b strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	first := true
	year := time.Now().Year()
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 16 {
			continue
		}
		ts, err := time.Parse(time.Stamp, line[:15])
		if err != nil {
			t.Fatalf("toJournal: %q: %v", line, err)
		}
		ts = ts.AddDate(year, 0, 0)
		if first {
			fmt.Fprintf(&b, "-- Journal begins at %s, ends at %s. --\n", ts.Format("Mon 2006-01-02 15:04:05 MST"), ts.Format("Mon 2006-01-02 15:04:05 MST"))
			first = false
		}
		b.WriteString(ts.Format("2006-01-02T15:04:05-0700") + line[15:] + "\n")
	}
	return b.String()
}

// waitLog waits until cond holds for the log text (a minute at most).
func waitLog(t *testing.T, log func() string, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond(log()) {
		if time.Now().After(deadline) {
			t.Fatalf("the log did not reach the expected state:\n%s", log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	must(t, os.WriteFile(to, readFile(t, from), 0o644))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
