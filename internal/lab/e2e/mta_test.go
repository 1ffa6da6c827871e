package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
)

// postfixRetry are main.cf lines that make Postfix retry deferred mail
// within seconds, so that a test sees the effect of a recovered daemon
// without waiting for the defaults (minutes).
var postfixRetry = []string{
	"minimal_backoff_time = 1s",
	"maximal_backoff_time = 2s",
	"queue_run_delay = 1s",
}

// applyMTAConfig runs "tlsgate mta-config -c CONFIG --queue-dir QUEUE
// --postconf-dir DIR" against pf's main.cf, which prints the merged
// settings, then the same with --apply, as an administrator following
// README would, and reloads Postfix. It returns the printed "name =
// value" lines. extra are more "name=value" settings applied with
// postconf -e before the reload (postconf -e edits in place: a setting
// given to StartPostfix through MainCF would be a duplicate that makes
// every Postfix command warn).
func applyMTAConfig(t *testing.T, l *lab, pf *mtalab.Postfix, extra ...string) []string {
	t.Helper()
	args := []string{"mta-config", "-c", l.config, "--queue-dir", pf.QueueDir(), "--postconf-dir", pf.ConfigDir()}
	text := l.tlsgate(args...)
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, ok := strings.Cut(line, "="); !ok {
			t.Fatalf("mta-config printed a line that is not name = value: %q\n%s", line, text)
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		t.Fatalf("mta-config printed no main.cf lines:\n%s", text)
	}
	applied := l.tlsgate(append(args, "--apply")...)
	if !strings.Contains(applied, "postfix check passed") {
		t.Fatalf("mta-config --apply:\n%s", applied)
	}
	postconfReload(t, pf, extra...)
	t.Logf("applied tlsgate mta-config to %s/main.cf:\n  %s", pf.ConfigDir(), strings.Join(lines, "\n  "))
	return lines
}

// postconfReload sets main.cf parameters (NAME=VALUE) with postconf -e and
// waits until the master has reloaded.
func postconfReload(t *testing.T, pf *mtalab.Postfix, args ...string) {
	t.Helper()
	if len(args) > 0 {
		out, err := exec.Command("/usr/sbin/postconf", append([]string{"-c", pf.ConfigDir(), "-e"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("postconf -e %q: %v\n%s", args, err, out)
		}
	}
	mark := pf.LogMark()
	if err := pf.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := pf.WaitLogAfter(mark, regexp.MustCompile(`postfix/master\[\d+\]: reload`), 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

// message is one SMTP submission.
type message struct {
	// From and To are the envelope.
	From string
	To   []string
	// Subject identifies the message in the sink.
	Subject string
	// Local is the source address to connect from ("" = any).
	Local string
	// TLS, if set, makes the client issue STARTTLS first.
	TLS *tls.Config
}

// submit sends m to addr over SMTP and returns the first error, for
// example the *textproto.Error of a refused RCPT TO.
func submit(addr string, m message) error {
	c, err := openSMTP(addr, m)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail(m.From); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := sendRcpts(c, m); err != nil {
		return err
	}
	return sendData(c, m)
}

// openSMTP connects to addr and greets it (and issues STARTTLS if m.TLS is
// set); the caller goes on with MAIL FROM and closes the client.
func openSMTP(addr string, m message) (*smtp.Client, error) {
	return greet(addr, m.Local, m.TLS, 60*time.Second)
}

// greet connects to addr from the local address src (an IP address; ""
// lets the kernel choose, which for 127.0.0.1 is 127.0.0.1), says EHLO
// and, with tlsCfg, STARTTLS (net/smtp repeats EHLO afterwards). The
// connection must be done within limit, so that a wedged MTA fails the
// test instead of hanging it. On Linux every address of 127.0.0.0/8 is
// local, so a test can be a client that no other test is.
func greet(addr, src string, tlsCfg *tls.Config, limit time.Duration) (*smtp.Client, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	if src != "" {
		ip := net.ParseIP(src)
		if ip == nil {
			return nil, fmt.Errorf("bad source address %q", src)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(limit))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Hello("client.lab.test"); err != nil {
		c.Close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if tlsCfg != nil {
		if err := c.StartTLS(tlsCfg); err != nil {
			c.Close()
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	}
	return c, nil
}

// sendRcpts sends RCPT TO for each of m's recipients.
func sendRcpts(c *smtp.Client, m message) error {
	for _, rcpt := range m.To {
		if err := c.Rcpt(rcpt); err != nil {
			return fmt.Errorf("RCPT TO:<%s>: %w", rcpt, err)
		}
	}
	return nil
}

// sendData sends DATA, the message and QUIT.
func sendData(c *smtp.Client, m message) error {
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d.%s@client.lab.test>\r\n\r\ne2e test message\r\n",
		m.From, strings.Join(m.To, ">, <"), m.Subject, time.Now().UnixNano(), strings.ReplaceAll(m.Subject, " ", "-"))
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}

// mustSubmit is submit that fails the test on error.
func mustSubmit(t *testing.T, addr string, m message) {
	t.Helper()
	if err := submit(addr, m); err != nil {
		t.Fatalf("submit %q to %s: %v", m.Subject, addr, err)
	}
}

// proxy6 listens on [::1] and forwards every connection to target, so that
// an MTA can reach a 127.0.0.1 sink through an IPv6 literal next hop. It
// returns the port, or an error if ::1 cannot be used here.
func proxy6(t *testing.T, target string) (int, error) {
	p, err := startProxy(t, "tcp6", "[::1]:0", target, nil)
	if err != nil {
		return 0, err
	}
	return p.Port(), nil
}

// tcpProxy accepts connections and relays each to the address its target
// held when the connection came in: a fixed address whose peer a test can
// swap, or bend (see relay).
type tcpProxy struct {
	ln     net.Listener
	target atomic.Value // string
	// relay carries one connection both ways and returns when done;
	// nil copies each direction as it comes.
	relay func(client, server net.Conn)

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// startProxy listens on addr (network "tcp4", "tcp6" or "tcp") and relays
// to target until the test ends.
func startProxy(t *testing.T, network, addr, target string, relay func(client, server net.Conn)) (*tcpProxy, error) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	p := &tcpProxy{ln: ln, relay: relay}
	if p.relay == nil {
		p.relay = pipeBoth
	}
	p.target.Store(target)
	t.Cleanup(p.close)
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Port returns the port the proxy listens on.
func (p *tcpProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// SetTarget makes new connections go to addr; open ones stay.
func (p *tcpProxy) SetTarget(addr string) { p.target.Store(addr) }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target.Load().(string), 10*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.relay(c, up)
			c.Close()
			up.Close()
		}()
	}
}

func (p *tcpProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// pipeBoth copies each direction until EOF and passes the half-close on.
func pipeBoth(a, b net.Conn) {
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	wg.Add(2)
	go pipe(b, a)
	go pipe(a, b)
	wg.Wait()
}

// countTo counts, per recipient, the completed messages a sink received.
func countTo(msgs []mtalab.Message) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		for _, r := range m.To {
			n[strings.ToLower(r)]++
		}
	}
	return n
}

// envelopesTo returns the envelopes (completed or not) naming rcpt.
func envelopesTo(s *mtalab.Sink, rcpt string) []mtalab.Message {
	var out []mtalab.Message
	for _, m := range s.Envelopes() {
		for _, r := range m.To {
			if strings.EqualFold(r, rcpt) {
				out = append(out, m)
			}
		}
	}
	return out
}

// queued returns the queue entries that still hold rcpt.
func queued(q []mtalab.QueueEntry, rcpt string) []mtalab.QueueRecipient {
	var out []mtalab.QueueRecipient
	for _, e := range q {
		for _, r := range e.Recipients {
			if strings.EqualFold(r.Address, rcpt) {
				out = append(out, r)
			}
		}
	}
	return out
}

// logLines returns the lines of log that match re.
func logLines(log string, re *regexp.Regexp) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		if re.MatchString(sc.Text()) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// waitUntil polls cond every 50 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
