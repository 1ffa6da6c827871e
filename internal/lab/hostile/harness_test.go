package hostile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"golang.org/x/sys/unix"

	"github.com/tlsgate/tlsgate/policyd"
)

// Endpoint sets. endpointsA is the default; the load test alternates it
// with endpointsB, in which the answers for partner.example / 192.0.2.10
// differ (outbound "OK encrypt" → "OK secure match=mx.partner.example",
// inbound pass → defer).
const endpointsA = `
[[endpoint]]
name  = "partner"
hosts = ["partner.example", "192.0.2.10"]
  [endpoint.inbound]
  encryption = true
  [endpoint.outbound]
  encryption = true

[[endpoint]]
name  = "verified"
hosts = ["verified.example", "192.0.2.20"]
  [endpoint.inbound]
  encryption    = true
  min_bits      = 128
  validate_cert = true
  cn            = "client.verified.example"
  issuer_cn     = "Lab CA"
  [endpoint.outbound]
  encryption    = true
  validate_cert = true
  cn            = "mx.verified.example"

[[endpoint]]
name  = "monitored"
hosts = ["192.0.2.40"]
mode  = "monitor"
  [endpoint.inbound]
  encryption    = true
  validate_cert = true
  cn            = "client.monitored.example"

[[endpoint]]
name  = "pinned"
hosts = ["192.0.2.30"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints  = ["sha256:3D:95:34:A2:1B:7E:0F:C8:9D:11:5A:6B:E4:72:90:CC:41:0E:BA:58:77:23:9F:D6:8A:C5:13:44:60:B2:E9:0F"]
`

const endpointsB = `
[[endpoint]]
name  = "partner"
hosts = ["partner.example", "192.0.2.10"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = true
  cn            = "mx9.partner.example"
  [endpoint.outbound]
  encryption    = true
  validate_cert = true
  cn            = "mx.partner.example"
`

// endpointsSendmail are for a daemon in Sendmail mode (DN matching).
const endpointsSendmail = `
[[endpoint]]
name  = "partner"
hosts = ["192.0.2.10"]
  [endpoint.inbound]
  encryption    = true
  validate_cert = true
  subject_dn    = "/C=DE/O=Partner/CN=client.partner.example"
  issuer_dn     = "/C=DE/O=Lab/CN=Lab CA"
`

// Answers the well-behaved clients expect from endpointsA.
const (
	answerPartnerA  = "OK encrypt"
	answerPartnerB  = "OK secure match=mx.partner.example"
	answerVerified  = "OK secure match=mx.verified.example"
	answerNotFound  = "NOTFOUND "
	actionDefer     = "action=451 4.7.1 TLS required by local policy for this peer"
	actionDunno     = "action=DUNNO"
	actionTempFail  = "action=451 4.3.0 TLS policy check failed temporarily, try again later"
	milterDeferCode = 451
)

// conf describes one daemon configuration.
type conf struct {
	MTA       string // "postfix" (default) or "sendmail"
	Level     string // log level, default "info"
	Endpoints string // default endpointsA
	Metrics   bool   // open a metrics listener
	Nofile    uint64 // start the daemon with this RLIMIT_NOFILE (soft and hard); 0: the test's
	// NoDelegation leaves [policyd] delegation_listen out (Postfix).
	NoDelegation bool
	// MilterMode is [milter] socket_mode, "" for the default.
	MilterMode string
	// Certs is the body of a [certs] table, "" for none.
	Certs string
	// Include is the top-level include list (TOML array text), "" for none.
	Include string
}

// render returns the TOML text of c with every socket in dir.
func (c conf) render(dir string) string {
	mta, level, eps := c.MTA, c.Level, c.Endpoints
	if mta == "" {
		mta = "postfix"
	}
	if level == "" {
		level = "info"
	}
	if eps == "" {
		eps = endpointsA
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mta = %q\n", mta)
	if c.Include != "" {
		fmt.Fprintf(&b, "include = %s\n", c.Include)
	}
	fmt.Fprintf(&b, "[milter]\nlisten = \"unix:%s/milter.sock\"\nauthserv_id = \"mx.hostile.test\"\n", dir)
	if c.MilterMode != "" {
		fmt.Fprintf(&b, "socket_mode = %q\n", c.MilterMode)
	}
	fmt.Fprintf(&b, "[policyd]\nlisten = \"unix:%s/policy.sock\"\n", dir)
	if mta == "postfix" {
		b.WriteString("map_name = \"tlspolicy\"\n")
		if !c.NoDelegation {
			fmt.Fprintf(&b, "delegation_listen = \"unix:%s/delegation.sock\"\n", dir)
		}
	}
	fmt.Fprintf(&b, "[log]\nlevel = %q\nsyslog = \"no\"\n", level)
	if c.Metrics {
		fmt.Fprintf(&b, "[metrics]\nlisten = \"unix:%s/metrics.sock\"\n", dir)
	}
	if c.Certs != "" {
		fmt.Fprintf(&b, "[certs]\n%s\n", c.Certs)
	}
	b.WriteString(eps)
	return b.String()
}

// daemon is one running "tlsgate serve".
type daemon struct {
	t           testing.TB
	dir         string
	conf        string
	mta         string
	noDel       bool // no delegation listener
	withMetrics bool // a metrics listener
	cmd         *exec.Cmd
	pid         int
	logs        *lineLog
	done        chan struct{} // closed when the process has exited
	status      *os.ProcessState

	socketmap, milter, delegation, metrics string // socket paths

	mu         sync.Mutex // guards the persistent clients below
	sm         *policyd.SocketmapClient
	dc         net.Conn
	dbr        *bufio.Reader
	reconnects int // persistent clients re-dialled after the server closed them
}

// startDaemon writes c to a fresh directory, starts tlsgate serve on it,
// waits until it serves, and stops it (SIGTERM, expecting exit status 0)
// when the test ends.
func startDaemon(t testing.TB, c conf) *daemon {
	t.Helper()
	d := launchDaemon(t, c)
	d.waitListening()
	return d
}

// launchDaemon is startDaemon without the wait: tlsgate serve may not
// have loaded its configuration yet.
func launchDaemon(t testing.TB, c conf) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "hx") // short: unix socket paths are limited to 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &daemon{
		t: t, dir: dir, conf: filepath.Join(dir, "tlsgate.toml"), mta: c.MTA,
		logs:      &lineLog{},
		done:      make(chan struct{}),
		socketmap: filepath.Join(dir, "policy.sock"), milter: filepath.Join(dir, "milter.sock"),
		delegation: filepath.Join(dir, "delegation.sock"), metrics: filepath.Join(dir, "metrics.sock"),
	}
	if d.mta == "" {
		d.mta = "postfix"
	}
	d.noDel, d.withMetrics = c.NoDelegation, c.Metrics
	d.writeConf(c)
	d.cmd = exec.Command(tlsgateBin, "serve", "-c", d.conf, "--grace", "3s")
	if c.Nofile > 0 {
		// The shell lowers the limit and becomes tlsgate (same PID).
		d.cmd = exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, c.Nofile), tlsgateBin, "serve", "-c", d.conf, "--grace", "3s")
	}
	d.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1 exitcode=66")
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = d.cmd.Process.Pid
	go func() {
		d.logs.consume(stderr)
		d.cmd.Wait()
		d.status = d.cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(d.stop)
	return d
}

// waitListening waits until every listener of d accepts connections.
func (d *daemon) waitListening() {
	t := d.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !d.listening() {
		select {
		case <-d.done:
			t.Fatalf("tlsgate serve exited at start (%v):\n%s", d.status, d.logs.tail(30))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("tlsgate serve did not start:\n%s", d.logs.tail(30))
		}
	}
}

// listening reports whether every listener of the daemon accepts
// connections (they are opened before signals are handled and before the
// "start" line, which a log level above info hides).
func (d *daemon) listening() bool {
	socks := []string{d.socketmap, d.milter}
	if d.mta == "postfix" && !d.noDel {
		socks = append(socks, d.delegation)
	}
	if d.withMetrics {
		// serve opens the metrics listener after the others.
		socks = append(socks, d.metrics)
	}
	for _, s := range socks {
		c, err := net.Dial("unix", s)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// writeConf replaces the configuration file atomically.
func (d *daemon) writeConf(c conf) {
	d.t.Helper()
	writeFileAtomic(d.t, d.conf, []byte(c.render(d.dir)))
}

func writeFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// alive fails the test if the daemon has exited.
func (d *daemon) alive(t testing.TB) {
	t.Helper()
	select {
	case <-d.done:
		t.Fatalf("tlsgate serve exited (%v):\n%s", d.status, d.logs.tail(40))
	default:
	}
}

// stop sends SIGTERM and expects a clean exit within the grace period.
func (d *daemon) stop() {
	t := d.t
	d.mu.Lock()
	if d.sm != nil {
		d.sm.Close()
	}
	if d.dc != nil {
		d.dc.Close()
	}
	d.mu.Unlock()
	select {
	case <-d.done:
		t.Errorf("tlsgate serve (pid %d) had exited before the end of the test (%v):\n%s", d.pid, d.status, d.logs.tail(40))
		return
	default:
	}
	start := time.Now()
	syscall.Kill(d.pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(d.pid, syscall.SIGKILL)
		<-d.done
		t.Errorf("tlsgate serve (pid %d) ignored SIGTERM for 20 s:\n%s", d.pid, d.logs.tail(40))
		return
	}
	if code := d.status.ExitCode(); code != 0 {
		t.Errorf("tlsgate serve exited with status %d after SIGTERM:\n%s", code, d.logs.tail(40))
	}
	if d.logs.has("WARNING: DATA RACE") {
		t.Errorf("data race in tlsgate serve:\n%s", d.logs.tail(80))
	}
	if testing.Verbose() {
		t.Logf("tlsgate serve stopped in %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	}
}

// reload sends SIGHUP.
func (d *daemon) reload() {
	d.t.Helper()
	if err := syscall.Kill(d.pid, syscall.SIGHUP); err != nil {
		d.t.Fatal(err)
	}
}

// procStatus returns a "kB" field of /proc/PID/status (VmRSS, VmHWM, ...).
func (d *daemon) procStatus(field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// resetPeak resets the peak RSS (VmHWM) of the daemon to its current RSS.
func (d *daemon) resetPeak() {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.pid), []byte("5"), 0)
}

// peakMB is the daemon's peak RSS since the last resetPeak, in MB.
func (d *daemon) peakMB() float64 { return float64(d.procStatus("VmHWM")) / 1024 }

// rssMB is the daemon's current RSS in MB.
func (d *daemon) rssMB() float64 { return float64(d.procStatus("VmRSS")) / 1024 }

// fds counts the daemon's open file descriptors.
func (d *daemon) fds() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// setNofile limits the daemon's open files (soft and hard).
func (d *daemon) setNofile(n uint64) {
	d.t.Helper()
	if err := unix.Prlimit(d.pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}, nil); err != nil {
		d.t.Fatalf("prlimit: %v", err)
	}
}

// rssLimitMB is the peak RSS a case may reach: the race detector multiplies
// memory use several times.
func rssLimitMB(plain float64) float64 {
	if raceEnabled {
		return plain * 4
	}
	return plain
}

// ---- the daemon's log ----

// lineLog collects the daemon's stderr lines (the most recent maxLogLines).
type lineLog struct {
	mu    sync.Mutex
	lines []string
	total int
	bytes int64 // logged in all, newlines included
}

const maxLogLines = 200000

func (l *lineLog) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		l.mu.Lock()
		if len(l.lines) >= maxLogLines {
			l.lines = append([]string(nil), l.lines[maxLogLines/2:]...)
		}
		l.lines = append(l.lines, sc.Text())
		l.total++
		l.bytes += int64(len(sc.Bytes()) + 1)
		l.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

// size returns how many bytes were logged so far.
func (l *lineLog) size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// mark returns a position for since.
func (l *lineLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// since returns the lines logged after mark (as far as still kept).
func (l *lineLog) since(mark int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := l.total - len(l.lines)
	if mark < first {
		mark = first
	}
	return append([]string(nil), l.lines[mark-first:]...)
}

func (l *lineLog) has(sub string) bool { return l.count(0, sub) > 0 }

// count counts the lines after mark that contain sub.
func (l *lineLog) count(mark int, sub string) int {
	n := 0
	for _, line := range l.since(mark) {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

// waitFor waits until a line after mark contains sub.
func (l *lineLog) waitFor(t testing.TB, mark int, sub string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, line := range l.since(mark) {
			if strings.Contains(line, sub) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within %v; log tail:\n%s", sub, timeout, l.tail(30))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *lineLog) tail(n int) string {
	lines := l.since(0)
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, s := range lines {
		if len(s) > 400 {
			lines[i] = s[:400] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// ---- well-behaved clients ----

// lookup asks the socketmap on the daemon's persistent connection,
// dialling again once if the server closed it (as Postfix does).
func (d *daemon) lookup(name, key string) (policyd.Reply, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if d.sm == nil {
			c, err := policyd.DialSocketmap(context.Background(), "unix:"+d.socketmap)
			if err != nil {
				return policyd.Reply{}, err
			}
			d.sm = c
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := d.sm.Lookup(ctx, name, key)
		cancel()
		if err == nil {
			return r, nil
		}
		d.sm.Close()
		d.sm = nil
		if attempt == 1 {
			return r, err
		}
		d.reconnects++
	}
}

// wantLookup asserts the socketmap answer for key.
func (d *daemon) wantLookup(t testing.TB, key, want string) {
	t.Helper()
	r, err := d.lookup("tlspolicy", key)
	if err != nil || r.String() != want {
		t.Fatalf("well-behaved socketmap client: %s → %q, %v; want %q", key, r.String(), err, want)
	}
}

// decide sends one policy-delegation request on the daemon's persistent
// connection (dialling again once if the server closed it) and returns the
// answer without its blank line.
func (d *daemon) decide(req string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if d.dc == nil {
			c, err := net.Dial("unix", d.delegation)
			if err != nil {
				return "", err
			}
			d.dc, d.dbr = c, bufio.NewReader(c)
		}
		d.dc.SetDeadline(time.Now().Add(10 * time.Second))
		ans, err := exchangeDelegation(d.dc, d.dbr, req)
		if err == nil {
			return ans, nil
		}
		d.dc.Close()
		d.dc = nil
		if attempt == 1 {
			return "", err
		}
		d.reconnects++
	}
}

// exchangeDelegation writes req and reads the answer up to its blank line.
func exchangeDelegation(c net.Conn, br *bufio.Reader, req string) (string, error) {
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if len(lines) == 0 {
				return "", errors.New("empty answer")
			}
			return strings.Join(lines, "\n"), nil
		}
		lines = append(lines, line)
	}
}

// delegationRequest is a Postfix 3.7 request at RCPT; tls adds the
// encryption attributes, extra lines are appended before the blank line.
// An endpoint covers a session by client address or by sender domain.
func delegationRequest(clientAddr, sender string, tls bool, extra ...string) string {
	var b strings.Builder
	b.WriteString("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n")
	fmt.Fprintf(&b, "client_address=%s\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name=client.example\n", clientAddr)
	fmt.Fprintf(&b, "sender=%s\nrecipient=u@hostile.test\nqueue_id=\ninstance=1.2.3\nsize=0\n", sender)
	if tls {
		b.WriteString("encryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n")
	} else {
		b.WriteString("encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n")
	}
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// wantDecide asserts the delegation answer for req.
func (d *daemon) wantDecide(t testing.TB, req, want string) {
	t.Helper()
	got, err := d.decide(req)
	if err != nil || got != want {
		t.Fatalf("well-behaved delegation client: %q, %v; want %q", got, err, want)
	}
}

// mtaSession describes one SMTP session as the MTA reports it to the
// milter, with Postfix's macros.
type mtaSession struct {
	ClientAddr, ClientName, Helo, From string
	TLS                                map[string]string // TLS macros; nil: plaintext
	Headers                            [][2]string
	QueueID                            string
}

// postfixTLS are Postfix's TLS macros for a trusted certificate.
func postfixTLS(subject, issuer string) map[string]string {
	return map[string]string{
		"{tls_version}": "TLSv1.3", "{cipher}": "TLS_AES_256_GCM_SHA384", "{cipher_bits}": "256",
		"{cert_subject}": subject, "{cert_issuer}": issuer,
	}
}

// milterResult is what the milter answered.
type milterResult struct {
	Refused           bool
	Code              uint16 // SMTP code of a refusal
	Reply             string
	Accepted          bool
	Received, AuthRes string // the inserted headers
	Deleted           int    // forged headers removed
}

// macroBag serves the session's macros at every stage.
type macroBag map[string]string

func (m macroBag) Get(name string) string { return m[name] }
func (m macroBag) GetEx(name string) (string, bool) {
	v, ok := m[name]
	return v, ok
}

// runMilter plays s against the milter at path with go-milter's client.
func runMilter(path string, s mtaSession) (milterResult, error) {
	var res milterResult
	macros := macroBag{
		"j": "mx.hostile.test", "v": "Postfix 3.7.11", "{daemon_name}": "smtpd",
		"{client_addr}": s.ClientAddr, "{client_name}": s.ClientName, "{client_resolve}": "OK",
		"{mail_addr}": s.From, "i": s.QueueID,
	}
	for k, v := range s.TLS {
		macros[k] = v
	}
	cl := gomilter.NewClient("unix", path, gomilter.WithReadTimeout(20*time.Second), gomilter.WithWriteTimeout(20*time.Second))
	cs, err := cl.Session(macros)
	if err != nil {
		return res, fmt.Errorf("negotiate: %w", err)
	}
	defer cs.Close()
	family := gomilter.FamilyInet
	if strings.Contains(s.ClientAddr, ":") {
		family = gomilter.FamilyInet6
	}
	act, err := cs.Conn(s.ClientName, family, 41000, s.ClientAddr)
	if err != nil || act.Type != gomilter.ActionContinue {
		return res, fmt.Errorf("connect: %v, %v", act, err)
	}
	if act, err = cs.Helo(s.Helo); err != nil || act.Type != gomilter.ActionContinue {
		return res, fmt.Errorf("helo: %v, %v", act, err)
	}
	if act, err = cs.Mail(s.From, ""); err != nil {
		return res, fmt.Errorf("mail: %w", err)
	}
	if act.Type != gomilter.ActionContinue {
		res.Refused, res.Code, res.Reply = true, act.SMTPCode, act.SMTPReply
		if act.Type != gomilter.ActionRejectWithCode {
			return res, fmt.Errorf("mail: unexpected action %v", act)
		}
		return res, cs.Abort(nil)
	}
	if act, err = cs.Rcpt("u@hostile.test", ""); err != nil || act.Type != gomilter.ActionContinue {
		return res, fmt.Errorf("rcpt: %v, %v", act, err)
	}
	if act, err = cs.DataStart(); err != nil || act.Type != gomilter.ActionContinue {
		return res, fmt.Errorf("data: %v, %v", act, err)
	}
	hdrs := append(append([][2]string(nil), s.Headers...), [2]string{"From", "<" + s.From + ">"}, [2]string{"Subject", "hostile"})
	for _, h := range hdrs {
		if act, err = cs.HeaderField(h[0], h[1], nil); err != nil || act.Type != gomilter.ActionContinue {
			return res, fmt.Errorf("header: %v, %v", act, err)
		}
	}
	if act, err = cs.HeaderEnd(); err != nil || act.Type != gomilter.ActionContinue {
		return res, fmt.Errorf("eoh: %v, %v", act, err)
	}
	if _, err = cs.BodyChunk([]byte("hello\r\n")); err != nil {
		return res, fmt.Errorf("body: %w", err)
	}
	mods, act, err := cs.End()
	if err != nil {
		return res, fmt.Errorf("eom: %w", err)
	}
	switch act.Type {
	case gomilter.ActionAccept, gomilter.ActionContinue:
		res.Accepted = true
	case gomilter.ActionRejectWithCode:
		res.Refused, res.Code, res.Reply = true, act.SMTPCode, act.SMTPReply
	default:
		return res, fmt.Errorf("eom: unexpected action %v", act)
	}
	for _, m := range mods {
		switch {
		case m.Type == gomilter.ActionInsertHeader && m.HeaderName == "Received":
			res.Received = m.HeaderValue
		case m.Type == gomilter.ActionInsertHeader && m.HeaderName == "Authentication-Results":
			res.AuthRes = m.HeaderValue
		case m.Type == gomilter.ActionChangeHeader && m.HeaderValue == "":
			res.Deleted++
		default:
			return res, fmt.Errorf("unexpected modification %+v", m)
		}
	}
	return res, cs.Abort(nil)
}

// partnerTLS is a well-behaved session from the partner with TLS.
var partnerTLS = mtaSession{
	ClientAddr: "192.0.2.10", ClientName: "client.partner.example", Helo: "client.partner.example",
	From: "a@partner.example", TLS: postfixTLS("client.partner.example", "Lab CA"), QueueID: "4XGOOD1",
}

// partnerPlain is the same session without TLS.
var partnerPlain = mtaSession{
	ClientAddr: "192.0.2.10", ClientName: "client.partner.example", Helo: "client.partner.example",
	From: "a@partner.example", QueueID: "4XGOOD2",
}

// wantMilterPass asserts that s is accepted and stamped with result pass.
func wantMilterPass(t testing.TB, path string, s mtaSession) milterResult {
	t.Helper()
	r, err := runMilter(path, s)
	if err != nil || !r.Accepted || !strings.Contains(r.AuthRes, "x-tls=pass") || !strings.Contains(r.Received, "(tlsgate)") {
		t.Fatalf("well-behaved milter session: %+v, %v; want accepted and stamped x-tls=pass", r, err)
	}
	return r
}

// wantMilterDefer asserts that s is deferred at MAIL FROM.
func wantMilterDefer(t testing.TB, path string, s mtaSession) {
	t.Helper()
	r, err := runMilter(path, s)
	if err != nil || !r.Refused || r.Code != milterDeferCode || !strings.Contains(r.Reply, "4.7.1") {
		t.Fatalf("milter session: %+v, %v; want 451 4.7.1", r, err)
	}
}

// checkServed asserts that the daemon is alive and answers well-behaved
// clients correctly on all of its listeners (endpointsA, Postfix).
func (d *daemon) checkServed(t testing.TB) {
	t.Helper()
	d.alive(t)
	d.wantLookup(t, "partner.example", answerPartnerA)
	d.wantLookup(t, "verified.example", answerVerified)
	d.wantLookup(t, "other.example", answerNotFound)
	d.wantDecide(t, delegationRequest("192.0.2.10", "a@partner.example", false), actionDefer)
	d.wantDecide(t, delegationRequest("198.51.100.7", "x@other.example", false), actionDunno)
	wantMilterPass(t, d.milter, partnerTLS)
	wantMilterDefer(t, d.milter, partnerPlain)
	d.alive(t)
}

// ---- raw connections ----

// dialRaw opens a raw connection to a unix socket.
func dialRaw(t testing.TB, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads what the server sends until it closes the connection (or
// timeout, which fails the test), at most limit bytes.
func readUntilClosed(t testing.TB, c net.Conn, limit int64, timeout time.Duration) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(io.LimitReader(c, limit))
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server did not close the connection within %v (read %q): %v", timeout, truncate(string(b)), err)
	}
	return string(b)
}

func truncate(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// netstring frames payload.
func netstring(payload string) string {
	return strconv.Itoa(len(payload)) + ":" + payload + ","
}
