package e2e

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
)

// faultCount is what became of one fault-matrix case's messages.
type faultCount struct {
	// sent: outbound, messages Postfix accepted for the covered peer
	// while the fault held; inbound, messages the covered client tried
	// to send while it held.
	sent int
	// tls: outbound, messages the covered peer received over TLS;
	// inbound, messages Postfix accepted from the client over TLS with
	// tlsgate's judgement (its decision line, result=pass, and its
	// Received and Authentication-Results headers on the copy).
	tls int
	// clear counts MAIL FROM commands the covered peer saw in clear
	// (outbound; -1 = not applicable). Must be 0.
	clear int
	// unjudged counts messages Postfix accepted without tlsgate's
	// judgement: a 2xx at the end of DATA while the milter was faulty,
	// or a delivered copy without tlsgate's headers (inbound; -1 = not
	// applicable). Must be 0.
	unjudged int
	// deferred: outbound, messages Postfix deferred for the fault's own
	// reason; inbound, attempts Postfix answered with 4xx.
	deferred int
	// recovered counts messages delivered after the fault cleared
	// (inbound: after the client retried).
	recovered int
	// dups counts extra copies; lost counts messages never delivered.
	// Both must be 0.
	dups, lost int
	elapsed    time.Duration
}

// faultCase is one row of the fault matrix. run provokes the fault with
// its own Postfix, tlsgate and sinks, clears it and fills c; the matrix
// then asserts the counts every row shares.
type faultCase struct {
	name string
	run  func(t *testing.T, c *faultCount)
}

// TestPostfixFaultMatrix is the fault matrix against the real Postfix 3.7
// of internal/lab/mtalab and the real tlsgate binary, each case
// with its own Postfix wired by "tlsgate mta-config" (run in parallel:
// the hung case waits out Postfix's fixed 100 s socketmap timeout).
//
// Outbound, to a covered peer (verified TLS, CN sink.partner.test): the
// policy daemon down at start, killed with SIGKILL while mail is queued,
// answering TEMP, hung (a socket that accepts and never answers),
// restarted with a bad configuration (exit 2); the peer without STARTTLS;
// the peer with a certificate for another name. Inbound, from a covered
// client (TLS required): the milter down, killed with SIGKILL between
// MAIL and DATA of open sessions, slow beyond milter_command_timeout and
// beyond milter_content_timeout.
//
// For each case: every message sent during the fault is deferred (4xx),
// none reaches a covered peer in clear or is accepted unjudged, and after
// the fault clears (inbound: the client retries) each is delivered exactly
// once. The counts are logged as a table.
func TestPostfixFaultMatrix(t *testing.T) {
	mtalab.RequirePostfix(t)
	start := time.Now()
	cases := []faultCase{
		// The slowest first, so that the others run beside it.
		{"out/daemon-hung", outDaemonHung},
		{"out/daemon-down-at-start", outDaemonDownAtStart},
		{"out/daemon-killed-mid-run", outDaemonKilled},
		{"out/daemon-answers-TEMP", outDaemonTemp},
		{"out/daemon-restarted-bad-config", outDaemonBadConfig},
		{"out/peer-without-starttls", outPeerNoSTARTTLS},
		{"out/peer-wrong-cert", outPeerWrongCert},
		{"in/milter-down", inMilterDown},
		{"in/milter-killed-mid-session", inMilterKilled},
		{"in/milter-slow-command", func(t *testing.T, c *faultCount) { inMilterSlow(t, c, 'M') }},
		{"in/milter-slow-content", func(t *testing.T, c *faultCount) { inMilterSlow(t, c, 'E') }},
	}
	counts := make([]*faultCount, len(cases))
	t.Run("case", func(t *testing.T) {
		for i, fc := range cases {
			c := &faultCount{clear: -1, unjudged: -1}
			counts[i] = c
			t.Run(fc.name, func(t *testing.T) {
				t.Parallel()
				t0 := time.Now()
				defer func() { c.elapsed = time.Since(t0) }()
				fc.run(t, c)
				c.check(t)
			})
		}
	})

	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %4s %4s %9s %8s %8s %9s %4s %4s %7s\n", "case", "sent", "tls", "clear(0)", "unjdg(0)", "deferred", "recovered", "dups", "lost", "time")
	na := func(n int) string {
		if n < 0 {
			return "-"
		}
		return fmt.Sprint(n)
	}
	for i, fc := range cases {
		c := counts[i]
		if c.elapsed == 0 {
			fmt.Fprintf(&b, "%-34s (not run)\n", fc.name)
			continue
		}
		fmt.Fprintf(&b, "%-34s %4d %4d %9s %8s %8d %9d %4d %4d %6.1fs\n", fc.name, c.sent, c.tls, na(c.clear), na(c.unjudged),
			c.deferred, c.recovered, c.dups, c.lost, c.elapsed.Seconds())
	}
	t.Logf("fault matrix (tls: outbound delivered over TLS, inbound accepted over TLS and judged; clear: MAIL FROM in clear "+
		"to the covered peer; unjdg: accepted unjudged; deferred: during the fault; recovered: delivered after it cleared):\n%s"+
		"whole matrix %v", b.String(), time.Since(start).Round(time.Millisecond))
}

// check asserts what every case shares.
func (c *faultCount) check(t *testing.T) {
	t.Helper()
	if c.sent == 0 {
		t.Errorf("no message was sent during the fault")
	}
	if c.clear > 0 {
		t.Errorf("%d MAIL FROM in clear to the covered peer, want 0", c.clear)
	}
	if c.unjudged > 0 {
		t.Errorf("%d messages accepted unjudged, want 0", c.unjudged)
	}
	if c.deferred != c.sent {
		t.Errorf("%d of %d messages deferred during the fault, want all", c.deferred, c.sent)
	}
	if c.recovered != c.sent || c.tls != c.sent {
		t.Errorf("after the fault: %d of %d delivered, %d over TLS; want all, over TLS", c.recovered, c.sent, c.tls)
	}
	if c.dups != 0 || c.lost != 0 {
		t.Errorf("%d duplicates and %d lost messages, want 0 and 0", c.dups, c.lost)
	}
}

// Outbound.

// outRig is one outbound case: a Postfix wired to tlsgate by mta-config
// whose mail for good.partner.test goes to a covered peer behind a fixed
// address (a proxy), normally a sink with STARTTLS and a certificate for
// sink.partner.test; a case may put a faulty sink there for a while.
type outRig struct {
	t    *testing.T
	l    *lab
	pf   *mtalab.Postfix
	g    *gate
	cfg  gateConfig
	sock string
	key  string // the policy lookup key Postfix sends
	// good is the covered peer as it should be; refuse makes it answer
	// 451 to RCPT, which keeps mail queued.
	good   *mtalab.Sink
	refuse atomic.Bool
	// sinks are all sinks that ever stood behind peer.
	sinks []*mtalab.Sink
	peer  *tcpProxy
	rcpts []string
}

// policyError matches Postfix's deferral when the policy lookup failed:
// it skips the peer without connecting.
const policyError = `relay=none, .*dsn=4\.7\.5, status=deferred \((delivery temporarily suspended: )?client TLS configuration problem\)`

// newOutRig starts the case; c gets its clear column.
func newOutRig(t *testing.T, c *faultCount) *outRig {
	t.Helper()
	c.clear = 0
	l := newLab(t)
	r := &outRig{t: t, l: l}
	r.good = mtalab.StartSink(t, mtalab.SinkOptions{TLS: l.pki.Sink, Reply: func(stage, arg string) string {
		if stage == "RCPT" && r.refuse.Load() {
			return "451 4.7.1 lab says try later"
		}
		return ""
	}})
	r.sinks = []*mtalab.Sink{r.good}
	var err error
	if r.peer, err = startProxy(t, "tcp4", "127.0.0.1:0", r.good.Addr(), nil); err != nil {
		t.Fatal(err)
	}
	r.key = fmt.Sprintf("[good.partner.test]:%d", r.peer.Port())
	r.pf = mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: map[string]string{"good.partner.test": "smtp:" + r.key},
		Hosts:     []string{"127.0.0.1 good.partner.test"},
		MainCF:    postfixRetry,
	})
	r.sock = filepath.Join(r.pf.QueueDir(), "tlsgate", "policy.sock")
	if err := os.Mkdir(filepath.Dir(r.sock), 0o755); err != nil {
		t.Fatal(err)
	}
	r.cfg = gateConfig{MTA: "postfix", Listen: "unix:" + r.sock, SocketGroup: "postfix", Endpoints: []string{
		endpoint("partner", []string{"good.partner.test"}, "[endpoint.outbound]\nvalidate_cert = true\ncn = \"sink.partner.test\""),
	}}
	l.writeConfig(r.cfg.render(l))
	applyMTAConfig(t, l, r.pf)
	r.g = newGate(l)
	return r
}

// send submits n messages, one recipient each, and counts them as sent.
func (r *outRig) send(c *faultCount, n int) []string {
	r.t.Helper()
	var out []string
	for range n {
		rcpt := fmt.Sprintf("user%d@good.partner.test", len(r.rcpts)+1)
		mustSubmit(r.t, r.pf.SMTPAddr("smtp"), message{From: "sender@lab.test", To: []string{rcpt}, Subject: "fault " + rcpt})
		r.rcpts = append(r.rcpts, rcpt)
		out = append(out, rcpt)
	}
	c.sent += n
	return out
}

// deferred waits (for all of them at most timeout) for each recipient's
// deferral after mark whose status matches reason and counts the
// recipients that got one.
func (r *outRig) deferred(c *faultCount, mark int, reason string, timeout time.Duration, rcpts []string) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for _, rcpt := range rcpts {
		re := regexp.MustCompile(`postfix/smtp\[\d+\]: \w+: to=<` + regexp.QuoteMeta(rcpt) + `>, ` + reason)
		line, err := r.pf.WaitLogAfter(mark, re, max(time.Until(deadline), time.Second))
		if err != nil {
			r.t.Error(err)
			continue
		}
		c.deferred++
		r.t.Logf("Postfix: %s", line[strings.Index(line, "to=<"):])
	}
}

// sessions counts the connections the covered peer's sinks got.
func (r *outRig) sessions() int {
	n := 0
	for _, s := range r.sinks {
		n += len(s.Sessions())
	}
	return n
}

// standIn puts a sink with opts behind the peer's address.
func (r *outRig) standIn(opts mtalab.SinkOptions) *mtalab.Sink {
	s := mtalab.StartSink(r.t, opts)
	r.sinks = append(r.sinks, s)
	r.peer.SetTarget(s.Addr())
	return s
}

// recover clears the fault: the daemon's with clear (nil if there is
// none), the peer's by putting the good sink back. It then flushes the
// queue and fills in what became of every message. Deliveries count as
// recovered when they end after clearing began: Postfix retries every
// second or two, so one can follow clear() at once.
func (r *outRig) recover(c *faultCount, clear func()) {
	r.t.Helper()
	cleared := time.Now()
	if clear != nil {
		clear()
	}
	r.peer.SetTarget(r.good.Addr())
	r.refuse.Store(false)
	if err := r.pf.Flush(); err != nil {
		r.t.Fatal(err)
	}
	if !waitUntil(60*time.Second, func() bool { return len(countTo(r.good.Messages())) >= len(r.rcpts) }) {
		r.t.Errorf("not every message arrived after the fault cleared; queue: %s", queueSummary(r.pf))
	}
	if err := r.pf.WaitQueueEmpty(30 * time.Second); err != nil {
		r.t.Error(err)
	}
	time.Sleep(time.Second) // a duplicate would arrive now
	per, after := map[string]int{}, map[string]bool{}
	for _, s := range r.sinks {
		for _, m := range s.Envelopes() {
			if m.TLS == nil {
				c.clear++
				r.t.Errorf("the covered peer got MAIL FROM:<%s> in clear (recipients %v)", m.From, m.To)
			}
			if !m.Completed {
				continue
			}
			for _, to := range m.To {
				per[strings.ToLower(to)]++
				after[strings.ToLower(to)] = after[strings.ToLower(to)] || m.Time.After(cleared)
			}
			if m.TLS != nil {
				c.tls++
			}
		}
	}
	for _, rcpt := range r.rcpts {
		if after[rcpt] {
			c.recovered++
		}
		switch n := per[rcpt]; {
		case n == 0:
			c.lost++
		case n > 1:
			c.dups += n - 1
		}
	}
}

func outDaemonDownAtStart(t *testing.T, c *faultCount) {
	r := newOutRig(t, c)
	mark := r.pf.LogMark()
	rcpts := r.send(c, 2)
	r.deferred(c, mark, policyError, 30*time.Second, rcpts)
	if _, err := r.pf.WaitLogAfter(mark, regexp.MustCompile(`warning: smtp_tls_policy_maps, next-hop destination "`+regexp.QuoteMeta(r.key)+`": policy table lookup error`), 5*time.Second); err != nil {
		t.Error(err)
	}
	if n := r.sessions(); n != 0 {
		t.Errorf("Postfix connected to the covered peer %d time(s) without a policy", n)
	}
	r.recover(c, r.g.Start)
}

func outDaemonKilled(t *testing.T, c *faultCount) {
	r := newOutRig(t, c)
	r.g.Start()
	// The peer refuses the first attempt, so that the mail is queued
	// (deferred) when the daemon dies, and Postfix's smtp processes
	// hold open socketmap connections.
	r.refuse.Store(true)
	mark := r.pf.LogMark()
	rcpts := r.send(c, 2)
	for _, rcpt := range rcpts {
		re := regexp.MustCompile(`to=<` + regexp.QuoteMeta(rcpt) + `>, relay=good\.partner\.test\[127\.0\.0\.1\]:\d+, .*status=deferred \(host .* said: 451 4\.7\.1 lab says try later`)
		if _, err := r.pf.WaitLogAfter(mark, re, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	pid := r.g.pid()
	r.g.Kill()
	t.Logf("killed tlsgate serve (pid %d) with SIGKILL; %d messages queued", pid, len(rcpts))
	// A delivery that fetched its policy just before the kill meets the
	// still refusing peer; only then does the peer accept.
	time.Sleep(time.Second)
	before := r.sessions()
	r.refuse.Store(false)
	mark = r.pf.LogMark()
	if err := r.pf.Flush(); err != nil {
		t.Fatal(err)
	}
	r.deferred(c, mark, policyError, 30*time.Second, rcpts)
	if n := len(r.good.Messages()); n != 0 {
		t.Errorf("the peer received %d messages while the daemon was dead", n)
	}
	if n := r.sessions() - before; n != 0 {
		t.Errorf("Postfix connected to the covered peer %d time(s) while the daemon was dead", n)
	}
	// The killed daemon left its socket file behind; the new one
	// replaces it.
	r.recover(c, r.g.Start)
}

func outDaemonTemp(t *testing.T, c *faultCount) {
	r := newOutRig(t, c)
	r.g.Start()
	// Postfix asks for map tlspolicy; a daemon reloaded to serve another
	// map name answers TEMP.
	wrong := r.cfg
	wrong.MapName = "othermap"
	r.g.Reload(wrong.render(r.l))
	mark, gmark := r.pf.LogMark(), r.g.LogMark()
	rcpts := r.send(c, 2)
	r.deferred(c, mark, policyError, 30*time.Second, rcpts)
	if _, err := r.g.waitLogAfter(gmark, regexp.MustCompile(`tls-policy-lookup answer=TEMP map=tlspolicy key=`+regexp.QuoteMeta(r.key)+` reason="unknown map name`), 5*time.Second); err != nil {
		t.Error(err)
	}
	if _, err := r.pf.WaitLogAfter(mark, regexp.MustCompile(`socketmap server temporary error: unknown map tlspolicy`), 5*time.Second); err != nil {
		t.Error(err)
	}
	if n := r.sessions(); n != 0 {
		t.Errorf("Postfix connected to the covered peer %d time(s) while the daemon answered TEMP", n)
	}
	r.recover(c, func() { r.g.Reload(r.cfg.render(r.l)) })
}

// hungServer listens on a unix socket, accepts every connection, reads
// what comes and never answers.
type hungServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startHungServer(t *testing.T, path string) *hungServer {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// Postfix's smtp(8) runs as user postfix.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	h := &hungServer{ln: ln}
	t.Cleanup(h.Close)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return h
}

// accepted returns how many connections came in.
func (h *hungServer) accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Close stops listening (removing the socket file) and drops every
// connection.
func (h *hungServer) Close() {
	h.ln.Close()
	h.mu.Lock()
	for _, c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func outDaemonHung(t *testing.T, c *faultCount) {
	r := newOutRig(t, c)
	h := startHungServer(t, r.sock)
	mark := r.pf.LogMark()
	began := time.Now()
	rcpts := r.send(c, 2)
	// Postfix 3.7's socketmap client gives up after 100 s (fixed).
	r.deferred(c, mark, policyError, 150*time.Second, rcpts)
	if _, err := r.pf.WaitLogAfter(mark, regexp.MustCompile(`warning: table socketmap:unix:tlsgate/policy\.sock:tlspolicy lookup error: time limit exceeded`), 5*time.Second); err != nil {
		t.Error(err)
	}
	t.Logf("hung socket: %d connection(s) accepted, deferral after %v", h.accepted(), time.Since(began).Round(time.Second))
	if h.accepted() == 0 {
		t.Error("Postfix never connected to the hung socket")
	}
	if n := r.sessions(); n != 0 {
		t.Errorf("Postfix connected to the covered peer %d time(s) while the daemon hung", n)
	}
	r.recover(c, func() { h.Close(); r.g.Start() })
}

func outDaemonBadConfig(t *testing.T, c *faultCount) {
	r := newOutRig(t, c)
	r.g.Start()
	r.g.Stop()
	// The administrator restarts tlsgate after a bad edit: serve refuses
	// the file and exits 2, leaving nothing on the socket.
	bad := r.cfg
	bad.Endpoints = []string{endpoint("partner", []string{"good.partner.test"}, "[endpoint.outbound]\nvalidate_cert = \"yes\"\ncn = \"sink.partner.test\"")}
	r.l.writeConfig(bad.render(r.l))
	out := r.g.StartExpectExit(2)
	if !strings.Contains(out, "validate_cert") {
		t.Errorf("tlsgate serve did not name the bad key:\n%s", out)
	}
	t.Logf("tlsgate serve with the bad configuration: %s", strings.TrimSpace(out))
	mark := r.pf.LogMark()
	rcpts := r.send(c, 2)
	r.deferred(c, mark, policyError, 30*time.Second, rcpts)
	if n := r.sessions(); n != 0 {
		t.Errorf("Postfix connected to the covered peer %d time(s) while tlsgate could not start", n)
	}
	r.recover(c, func() { r.l.writeConfig(r.cfg.render(r.l)); r.g.Start() })
}

func outPeerNoSTARTTLS(t *testing.T, c *faultCount) {
	r := newOutRig(t, c)
	r.g.Start()
	plain := r.standIn(mtalab.SinkOptions{})
	mark := r.pf.LogMark()
	rcpts := r.send(c, 2)
	r.deferred(c, mark, `relay=good\.partner\.test\[127\.0\.0\.1\]:\d+, .*dsn=4\.7\.4, status=deferred \(TLS is required, but was not offered by host good\.partner\.test\[127\.0\.0\.1\]\)`, 30*time.Second, rcpts)
	if len(plain.Sessions()) == 0 {
		t.Error("Postfix never connected to the peer without STARTTLS")
	}
	r.recover(c, nil)
}

func outPeerWrongCert(t *testing.T, c *faultCount) {
	r := newOutRig(t, c)
	r.g.Start()
	wrong := r.standIn(mtalab.SinkOptions{TLS: r.l.pki.WrongCN})
	mark := r.pf.LogMark()
	rcpts := r.send(c, 2)
	r.deferred(c, mark, `relay=good\.partner\.test\[127\.0\.0\.1\]:\d+, .*dsn=4\.7\.5, status=deferred \(Server certificate not verified\)`, 30*time.Second, rcpts)
	if _, err := r.pf.WaitLogAfter(mark, regexp.MustCompile(`server certificate verification failed for good\.partner\.test\[127\.0\.0\.1\]:\d+: num=62:hostname mismatch`), 5*time.Second); err != nil {
		t.Error(err)
	}
	if n := len(wrong.Sessions()); n == 0 {
		t.Error("Postfix never connected to the peer with the wrong certificate")
	}
	r.recover(c, nil)
}

// Inbound.

// inRig is one inbound case: a Postfix wired to tlsgate's milter by
// mta-config (default_action=tempfail for tlsgate's milter), with the milter timeouts
// lowered to 3 s, relaying in.test to a sink. The covered client sends
// from partner.test over STARTTLS, as its endpoint requires.
type inRig struct {
	t      *testing.T
	l      *lab
	pf     *mtalab.Postfix
	g      *gate
	sink   *mtalab.Sink
	addr   string // Postfix's smtpd
	milter string // what Postfix connects to (tlsgate or a proxy)
	client *tls.Config
	msgs   []message
}

// milterTimeout is milter_command_timeout and milter_content_timeout.
const milterTimeout = 3 * time.Second

// newInRig starts the case, and c gets its unjudged column; with proxy
// set, Postfix reaches the milter through a proxy made by proxy(tlsgate's
// address).
func newInRig(t *testing.T, c *faultCount, proxy func(target string) *tcpProxy) *inRig {
	t.Helper()
	c.unjudged = 0
	l := newLab(t)
	r := &inRig{t: t, l: l}
	r.sink = mtalab.StartSink(t, mtalab.SinkOptions{})
	r.pf = mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: map[string]string{"in.test": r.sink.Nexthop()},
		MainCF:    postfixRetry,
	})
	r.addr = r.pf.SMTPAddr("smtp")
	gateAddr := fmt.Sprintf("127.0.0.1:%d", mtalab.FreePort(t))
	l.writeConfig(gateConfig{MTA: "postfix", Milter: "inet:" + gateAddr, ServerCert: l.pki.Server, Endpoints: []string{
		endpoint("partner", []string{"partner.test"}, "[endpoint.inbound]\nencryption = true"),
	}}.render(l))
	extra := []string{fmt.Sprintf("milter_command_timeout=%ds", milterTimeout/time.Second), fmt.Sprintf("milter_content_timeout=%ds", milterTimeout/time.Second)}
	r.milter = "inet:" + gateAddr
	if proxy != nil {
		p := proxy(gateAddr)
		r.milter = fmt.Sprintf("inet:127.0.0.1:%d", p.Port())
		extra = append(extra, "smtpd_milters={ "+r.milter+", default_action=tempfail }")
	}
	applyMTAConfig(t, l, r.pf, extra...)
	// mta-config gives tlsgate's milter a default_action of its own.
	if got, err := r.pf.Postconf("smtpd_milters"); err != nil || got != "{ "+r.milter+", default_action=tempfail }" {
		t.Fatalf("smtpd_milters = %q (%v), want %q with default_action=tempfail", got, err, r.milter)
	}
	r.g = newGate(l)
	r.client = clientTLS(t, l.pki, nil)
	return r
}

// next makes the next message from the covered client.
func (r *inRig) next() message {
	n := len(r.msgs) + 1
	m := message{From: fmt.Sprintf("s%d@partner.test", n), To: []string{fmt.Sprintf("u%d@in.test", n)}, Subject: fmt.Sprintf("inbound %d", n), TLS: r.client}
	r.msgs = append(r.msgs, m)
	return m
}

// refused records the outcome of an attempt during the fault: a 4xx is
// deferred, acceptance is a message accepted unjudged, anything else an
// error.
func (r *inRig) refused(c *faultCount, m message, err error) {
	r.t.Helper()
	if r.tempfailed(c, m, err) {
		c.deferred++
	}
}

// tempfailed reports whether err is a 4xx reply; an accepted message
// counts as accepted unjudged, and anything else is an error.
func (r *inRig) tempfailed(c *faultCount, m message, err error) bool {
	r.t.Helper()
	tls := "over TLS"
	if m.TLS == nil {
		tls = "in clear"
	}
	var te *textproto.Error
	switch {
	case err == nil:
		c.unjudged++
		r.t.Errorf("%s (%s): accepted while the milter was faulty", m.From, tls)
	case errors.As(err, &te) && te.Code/100 == 4:
		r.t.Logf("%s (%s): %v", m.From, tls, err)
		return true
	default:
		r.t.Errorf("%s (%s): %v, want a 4xx reply", m.From, tls, err)
	}
	return false
}

// attempt tries n new messages while the fault holds.
func (r *inRig) attempt(c *faultCount, n int) {
	r.t.Helper()
	for range n {
		m := r.next()
		c.sent++
		r.refused(c, m, submit(r.addr, m))
	}
}

// fallBack tries every message again in clear, as an MTA client may after
// a 4xx to STARTTLS: that must be a 4xx too.
func (r *inRig) fallBack(c *faultCount) {
	r.t.Helper()
	for _, m := range r.msgs {
		m.TLS = nil
		r.tempfailed(c, m, submit(r.addr, m))
	}
}

// recover retries every message, as the client would after the 4xx, and
// fills in what became of them.
func (r *inRig) recover(c *faultCount) {
	r.t.Helper()
	if n := len(r.sink.Envelopes()); n != 0 {
		r.t.Errorf("the sink got %d envelope(s) while the milter was faulty", n)
	}
	if q, err := r.pf.Queue(); err != nil || len(q) != 0 {
		r.t.Errorf("Postfix queued mail while the milter was faulty: %+v %v", q, err)
	}
	// The fault is over: Postfix's default milter timeouts again, so that
	// a busy test machine cannot turn a healthy but slow answer into a 4xx.
	postconfReload(r.t, r.pf, "milter_command_timeout=30s", "milter_content_timeout=300s")
	for _, m := range r.msgs {
		if err := submit(r.addr, m); err != nil {
			r.t.Errorf("retry of %s after the fault: %v", m.From, err)
		}
	}
	if !waitUntil(30*time.Second, func() bool { return len(countTo(r.sink.Messages())) >= len(r.msgs) }) {
		r.t.Errorf("not every retried message arrived; queue: %s", queueSummary(r.pf))
	}
	time.Sleep(time.Second) // a duplicate would arrive now
	log := r.g.Log()
	per := map[string]int{}
	for _, d := range r.sink.Messages() {
		for _, to := range d.To {
			per[strings.ToLower(to)]++
		}
		// Judged: tlsgate stamped the copy and logged a pass over TLS
		// under the queue ID Postfix gave the accepted message (a
		// NOQUEUE line is a decision on an attempt Postfix gave up).
		hdr, _, _ := strings.Cut(string(d.Data), "\r\n\r\n")
		stamped := strings.Contains(hdr, "(tlsgate)") && strings.Contains(hdr, "\r\nAuthentication-Results: mx.lab.test;")
		qid := ""
		if m := regexp.MustCompile(`by mx\.lab\.test \(Postfix\) with (?:E|UTF8)SMTPSA? id ([0-9A-F]+)`).FindStringSubmatch(hdr); m != nil {
			qid = m[1]
		}
		pass := regexp.MustCompile(`^` + qid + `: tlsgate: result=pass endpoint=partner .*sender=<` + regexp.QuoteMeta(d.From) + `> tls=TLSv1\.[23] `)
		switch {
		case !stamped:
			c.unjudged++
			r.t.Errorf("%s was delivered without tlsgate's headers:\n%s", d.From, hdr)
		case qid == "":
			c.unjudged++
			r.t.Errorf("%s was not received over TLS (no ESMTPS or UTF8SMTPS in Postfix's Received header):\n%q", d.From, hdr)
		case len(logLines(log, pass)) != 1:
			c.unjudged++
			r.t.Errorf("tlsgate logged %d pass decisions for %s under queue ID %s, want 1", len(logLines(log, pass)), d.From, qid)
		default:
			c.tls++
		}
	}
	for _, m := range r.msgs {
		if per[m.To[0]] > 0 {
			c.recovered++
		}
		switch n := per[m.To[0]]; {
		case n == 0:
			c.lost++
		case n > 1:
			c.dups += n - 1
		}
	}
}

func inMilterDown(t *testing.T, c *faultCount) {
	r := newInRig(t, c, nil)
	mark := r.pf.LogMark()
	r.attempt(c, 2)
	r.fallBack(c)
	if _, err := r.pf.WaitLogAfter(mark, regexp.MustCompile(`warning: connect to Milter service `+regexp.QuoteMeta(r.milter)+`: Connection refused`), 5*time.Second); err != nil {
		t.Error(err)
	}
	r.g.Start()
	r.recover(c)
}

func inMilterKilled(t *testing.T, c *faultCount) {
	r := newInRig(t, c, nil)
	r.g.Start()
	// Two open sessions from the covered client, one after MAIL FROM and
	// one after RCPT TO: tlsgate judged both senders (pass), but has not
	// seen their messages yet.
	type open struct {
		m    message
		cl   *smtp.Client
		rcpt bool
	}
	var sessions []open
	for i, rcpt := range []bool{false, true} {
		m := r.next()
		c.sent++
		cl, err := openSMTP(r.addr, m)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.Mail(m.From); err != nil {
			t.Fatalf("session %d: MAIL FROM before the kill: %v", i+1, err)
		}
		if rcpt {
			if err := sendRcpts(cl, m); err != nil {
				t.Fatalf("session %d: RCPT TO before the kill: %v", i+1, err)
			}
		}
		sessions = append(sessions, open{m, cl, rcpt})
	}
	mark := r.pf.LogMark()
	pid := r.g.pid()
	r.g.Kill()
	t.Logf("killed tlsgate serve (pid %d) with SIGKILL between MAIL and DATA of %d open sessions", pid, len(sessions))
	for _, o := range sessions {
		var err error
		if !o.rcpt {
			err = sendRcpts(o.cl, o.m)
		}
		if err == nil {
			err = sendData(o.cl, o.m)
		}
		r.refused(c, o.m, err)
	}
	if _, err := r.pf.WaitLogAfter(mark, regexp.MustCompile(`warning: milter `+regexp.QuoteMeta(r.milter)+`: `), 5*time.Second); err != nil {
		t.Error(err)
	}
	r.g.Start()
	r.recover(c)
}

// slowMilter returns a relay for a proxy between Postfix and a milter:
// while slow is set, once Postfix sends a command whose code is cmd (milter
// protocol: 'M' MAIL, 'E' end of body), every reply of the milter from
// then on is held back for delay.
func slowMilter(cmd byte, delay time.Duration, slow *atomic.Bool) func(mta, milter net.Conn) {
	return func(mta, milter net.Conn) {
		var late atomic.Bool
		done := make(chan struct{})
		go func() { // Postfix to the milter, packet by packet
			defer close(done)
			defer milter.(*net.TCPConn).CloseWrite()
			for {
				var hdr [5]byte // length (4 bytes, command included), command
				if _, err := io.ReadFull(mta, hdr[:]); err != nil {
					return
				}
				n := binary.BigEndian.Uint32(hdr[:4])
				if n == 0 || n > 1<<24 {
					return
				}
				pkt := make([]byte, 5+n-1)
				copy(pkt, hdr[:])
				if _, err := io.ReadFull(mta, pkt[5:]); err != nil {
					return
				}
				if hdr[4] == cmd && slow.Load() {
					late.Store(true)
				}
				if _, err := milter.Write(pkt); err != nil {
					return
				}
			}
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := milter.Read(buf)
			if n > 0 {
				if late.Load() {
					time.Sleep(delay)
				}
				if _, werr := mta.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		mta.(*net.TCPConn).CloseWrite()
		<-done
	}
}

// inMilterSlow: the milter answers the command cmd ('M': MAIL FROM, under
// milter_command_timeout; 'E': end of message, under
// milter_content_timeout) twice as late as Postfix waits.
func inMilterSlow(t *testing.T, c *faultCount, cmd byte) {
	var slow atomic.Bool
	slow.Store(true)
	r := newInRig(t, c, func(target string) *tcpProxy {
		p, err := startProxy(t, "tcp4", "127.0.0.1:0", target, slowMilter(cmd, 2*milterTimeout, &slow))
		if err != nil {
			t.Fatal(err)
		}
		return p
	})
	r.g.Start()
	mark := r.pf.LogMark()
	began := time.Now()
	r.attempt(c, 2)
	t.Logf("2 attempts against the slow milter took %v", time.Since(began).Round(100*time.Millisecond))
	if _, err := r.pf.WaitLogAfter(mark, regexp.MustCompile(`warning: milter `+regexp.QuoteMeta(r.milter)+`: .*(timed out|timeout)`), 5*time.Second); err != nil {
		t.Error(err)
	}
	slow.Store(false)
	r.recover(c)
}

// queueSummary describes Postfix's queue for failure messages.
func queueSummary(pf *mtalab.Postfix) string {
	q, err := pf.Queue()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, e := range q {
		for _, r := range e.Recipients {
			parts = append(parts, fmt.Sprintf("%s %s (%s)", e.Queue, r.Address, r.Reason))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
