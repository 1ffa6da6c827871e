package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// lab is one test's working directory: the lab PKI, tlsgate's CA store
// (lab CA and other CA, added with "tlsgate certs store add"), the CA
// bundle the MTA reads, the directory of trust-anchor files and the
// configuration file. Everything is world-readable so that Postfix's
// unprivileged daemons can read the certificates.
type lab struct {
	t        *testing.T
	dir      string
	pki      *testpki.PKI
	caStore  string
	caBundle string
	taDir    string
	config   string
}

// newLab makes a short private directory (unix socket paths are limited
// to 108 bytes) with the PKI and the CA store, and writes the CA bundle
// with "tlsgate certs store bundle" as an administrator would before
// pointing the MTA at it.
func newLab(t *testing.T) *lab {
	t.Helper()
	dir, err := os.MkdirTemp("", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("MTALAB_KEEP") == "1" {
			t.Logf("e2e: kept %s (MTALAB_KEEP=1)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	l := &lab{
		t:        t,
		dir:      dir,
		pki:      testpki.NewT(t),
		caStore:  filepath.Join(dir, "ca"),
		caBundle: filepath.Join(dir, "ca-bundle.pem"),
		taDir:    filepath.Join(dir, "tafiles"),
		config:   filepath.Join(dir, "tlsgate.toml"),
	}
	if err := os.Mkdir(l.taDir, 0o755); err != nil {
		t.Fatal(err)
	}
	l.tlsgate("certs", "store", "add", "--store", l.caStore, l.pki.CA.CertFile, l.pki.OtherCA.CertFile)
	l.tlsgate("certs", "store", "bundle", "--store", l.caStore, "--out", l.caBundle)
	if err := os.Chmod(l.caStore, 0o755); err != nil {
		t.Fatal(err)
	}
	return l
}

// tlsgate runs a short tlsgate command and returns its standard output;
// it fails the test when the command fails.
func (l *lab) tlsgate(args ...string) string {
	l.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(tlsgateBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		l.t.Fatalf("tlsgate %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// writeConfig writes tlsgate's configuration file.
func (l *lab) writeConfig(text string) {
	l.t.Helper()
	if err := os.WriteFile(l.config, []byte(text), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// gateConfig is a tlsgate configuration file; render turns it into TOML.
type gateConfig struct {
	// MTA is "postfix" or "sendmail".
	MTA string
	// Listen is [policyd] listen, Delegation [policyd] delegation_listen.
	Listen, Delegation string
	// SocketGroup is [policyd] socket_group ("" = root's).
	SocketGroup string
	// MapName is [policyd] map_name ("" = the default, tlspolicy).
	MapName string
	// Milter is [milter] listen ("" = no milter).
	Milter string
	// Metrics is [metrics] listen ("" = no metrics).
	Metrics string
	// ServerCert is the MTA's own certificate ([certs] server_cert/key).
	ServerCert *testpki.Cert
	// Endpoints are [[endpoint]] tables, see endpoint.
	Endpoints []string
	// Discovery is the body of a [discovery] table ("" = none).
	Discovery string
}

// render writes c as TOML for lab l (CA store, bundle, trust anchors).
func (c gateConfig) render(l *lab) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mta = %q\n", c.MTA)
	if c.Milter != "" {
		fmt.Fprintf(&b, "\n[milter]\nlisten = %q\n", c.Milter)
	}
	if c.Listen != "" || c.Delegation != "" {
		b.WriteString("\n[policyd]\n")
	}
	if c.Listen != "" {
		fmt.Fprintf(&b, "listen = %q\n", c.Listen)
	}
	if c.Delegation != "" {
		fmt.Fprintf(&b, "delegation_listen = %q\n", c.Delegation)
	}
	if c.MapName != "" {
		fmt.Fprintf(&b, "map_name = %q\n", c.MapName)
	}
	if c.SocketGroup != "" {
		fmt.Fprintf(&b, "socket_mode = \"0660\"\nsocket_group = %q\n", c.SocketGroup)
	}
	fmt.Fprintf(&b, "\n[certs]\nca_store = %q\nca_bundle = %q\ntrust_anchor_dir = %q\n", l.caStore, l.caBundle, l.taDir)
	if c.ServerCert != nil {
		fmt.Fprintf(&b, "server_cert = %q\nserver_key = %q\n", c.ServerCert.CertFile, c.ServerCert.KeyFile)
	}
	if c.Metrics != "" {
		fmt.Fprintf(&b, "\n[metrics]\nlisten = %q\n", c.Metrics)
	}
	b.WriteString("\n[log]\nlevel = \"debug\"\nsyslog = \"no\"\n")
	if c.Discovery != "" {
		b.WriteString("\n[discovery]\n" + strings.TrimSpace(c.Discovery) + "\n")
	}
	for _, ep := range c.Endpoints {
		b.WriteString("\n" + ep)
	}
	return b.String()
}

// endpoint renders one [[endpoint]] table; body holds its other keys and
// sub-tables, for example "[endpoint.outbound]\nencryption = true".
func endpoint(name string, hosts []string, body string) string {
	q := make([]string, len(hosts))
	for i, h := range hosts {
		q[i] = fmt.Sprintf("%q", h)
	}
	return fmt.Sprintf("[[endpoint]]\nname = %q\nhosts = [%s]\n%s\n", name, strings.Join(q, ", "), strings.TrimSpace(body))
}

// lockedBuffer collects a subprocess's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gate runs "tlsgate serve -c CONFIG" as a subprocess, possibly several
// times in a row (stopped, killed and started again). Its log (stderr,
// syslog = "no") of every run is kept in one buffer.
type gate struct {
	t      *testing.T
	config string
	log    lockedBuffer
	// env are extra environment variables of the daemon, for example
	// MAIL_CONFIG, the Postfix instance postconf asks.
	env []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status of the last run, valid once done is closed
}

// newGate prepares a daemon for l's configuration file; nothing runs yet.
// At cleanup a running daemon is stopped by PID, and on failure its log
// is printed.
func newGate(l *lab) *gate {
	g := &gate{t: l.t, config: l.config}
	l.t.Cleanup(func() {
		if g.running() {
			g.signal(syscall.SIGTERM)
			if !g.wait(30 * time.Second) {
				g.t.Errorf("tlsgate %d still running 30s after SIGTERM; killing it", g.pid())
				g.signal(syscall.SIGKILL)
				g.wait(10 * time.Second)
			}
		}
		if strings.Contains(g.log.String(), "WARNING: DATA RACE") {
			g.t.Errorf("the race detector reported a data race in tlsgate serve")
		}
		if g.t.Failed() {
			g.t.Logf("tlsgate serve log:\n%s", g.log.String())
		}
	})
	return g
}

func (g *gate) running() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done == nil {
		return false
	}
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

func (g *gate) pid() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cmd == nil || g.cmd.Process == nil {
		return 0
	}
	return g.cmd.Process.Pid
}

func (g *gate) signal(sig syscall.Signal) {
	if pid := g.pid(); pid > 0 && g.running() {
		syscall.Kill(pid, sig)
	}
}

// wait waits up to timeout for the current run to end.
func (g *gate) wait(timeout time.Duration) bool {
	g.mu.Lock()
	done := g.done
	g.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Start runs the daemon and waits until it has opened its listeners
// (its "start" line).
func (g *gate) Start() {
	g.t.Helper()
	if g.running() {
		g.t.Fatal("e2e: tlsgate is already running")
	}
	mark := len(g.log.String())
	cmd := exec.Command(tlsgateBin, "serve", "-c", g.config, "--grace", "5s")
	cmd.Stdout, cmd.Stderr = &g.log, &g.log
	cmd.Env = append(os.Environ(), g.env...)
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("e2e: start tlsgate serve: %v", err)
	}
	done := make(chan struct{})
	g.mu.Lock()
	g.cmd, g.done = cmd, done
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		g.mu.Lock()
		g.err = err
		g.mu.Unlock()
		close(done)
	}()
	if _, err := g.waitLogAfter(mark, regexp.MustCompile(`NOQUEUE: start file=`), 30*time.Second); err != nil {
		g.t.Fatalf("e2e: tlsgate serve (pid %d) did not start: %v", cmd.Process.Pid, err)
	}
}

// StartExpectExit runs the daemon on the current configuration file and
// requires it to exit by itself within 30 s with status code (2: a bad
// configuration); it returns what the run printed, which is also added to
// the daemon's log.
func (g *gate) StartExpectExit(code int) string {
	g.t.Helper()
	if g.running() {
		g.t.Fatal("e2e: tlsgate is already running")
	}
	var out lockedBuffer
	cmd := exec.Command(tlsgateBin, "serve", "-c", g.config, "--grace", "5s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("e2e: start tlsgate serve: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
		g.t.Fatalf("e2e: tlsgate serve (pid %d) still ran after 30 s; want exit status %d; killed it", cmd.Process.Pid, code)
	}
	g.log.Write([]byte(out.String()))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != code {
		g.t.Fatalf("e2e: tlsgate serve (pid %d) ended with %v, want exit status %d; output:\n%s", cmd.Process.Pid, err, code, out.String())
	}
	return out.String()
}

// Stop sends SIGTERM by PID and requires a clean exit (status 0) within
// 30 s.
func (g *gate) Stop() {
	g.t.Helper()
	pid := g.pid()
	g.signal(syscall.SIGTERM)
	if !g.wait(30 * time.Second) {
		g.t.Fatalf("e2e: tlsgate %d still running 30s after SIGTERM", pid)
	}
	g.mu.Lock()
	err := g.err
	g.mu.Unlock()
	if err != nil {
		g.t.Fatalf("e2e: tlsgate %d exited after SIGTERM with %v; log:\n%s", pid, err, g.log.String())
	}
}

// Kill sends SIGKILL by PID and waits until the process is gone.
func (g *gate) Kill() {
	g.t.Helper()
	pid := g.pid()
	g.signal(syscall.SIGKILL)
	if !g.wait(10 * time.Second) {
		g.t.Fatalf("e2e: tlsgate %d survived SIGKILL", pid)
	}
	g.mu.Lock()
	err := g.err
	g.mu.Unlock()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		g.t.Fatalf("e2e: tlsgate %d: want death by SIGKILL, got %v", pid, err)
	}
}

// Reload writes a new configuration and sends SIGHUP; it waits for the
// daemon to log the outcome and fails the test unless it is "ok".
func (g *gate) Reload(config string) {
	g.t.Helper()
	mark := len(g.log.String())
	if err := os.WriteFile(g.config, []byte(config), 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.signal(syscall.SIGHUP)
	line, err := g.waitLogAfter(mark, regexp.MustCompile(`NOQUEUE: reload result=`), 20*time.Second)
	if err != nil {
		g.t.Fatalf("e2e: tlsgate reload: %v", err)
	}
	if !strings.Contains(line, "result=ok") {
		g.t.Fatalf("e2e: tlsgate reload failed: %s\n%s", line, g.log.String()[mark:])
	}
}

// Log returns everything the daemon logged so far.
func (g *gate) Log() string { return g.log.String() }

// LogMark returns the current length of the log, for waitLogAfter.
func (g *gate) LogMark() int { return len(g.log.String()) }

// waitLogAfter waits until a line after byte offset mark matches re.
func (g *gate) waitLogAfter(mark int, re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		alive := g.running() // before reading: a finished run's output is complete
		s := g.log.String()
		if mark < len(s) {
			for _, line := range strings.Split(s[mark:], "\n") {
				if re.MatchString(line) {
					return line, nil
				}
			}
		}
		if !alive {
			return "", fmt.Errorf("tlsgate is not running (last exit: %v) and logged no line matching %q", g.exitErr(), re)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no tlsgate log line matching %q after %v", re, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *gate) exitErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// lookups returns the daemon's tls-policy-lookup lines for key (matched
// exactly, as the MTA sent it). The daemon's log reaches the test through
// a pipe, possibly after the MTA's own log line that the test waited for,
// so it waits up to 5 s for the first line.
func (g *gate) lookups(key string) []string {
	var out []string
	waitUntil(5*time.Second, func() bool {
		out = out[:0]
		for _, line := range strings.Split(g.Log(), "\n") {
			if strings.Contains(line, " tls-policy-lookup ") && strings.Contains(line+" ", " key="+key+" ") {
				out = append(out, line)
			}
		}
		return len(out) > 0
	})
	return out
}
