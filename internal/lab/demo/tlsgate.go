package demo

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// configTemplate is the demo's policy file: the two partners of the
// README's example, with their servers on loopback addresses.
const configTemplate = `# tlsgate demo policy (written by tlsgate-demo; removed when it ends)
mta = "postfix"

[milter]
listen      = "inet:127.0.0.1:{{.MilterPort}}"
authserv_id = "mx.lab.test"

[policyd]
listen   = "inet:127.0.0.1:{{.SocketmapPort}}"
map_name = "tlspolicy"

[certs]
ca_bundle   = "{{.CABundle}}"
server_cert = "{{.ServerCert}}"
server_key  = "{{.ServerKey}}"

[log]
level  = "debug" # the demo shows every outbound lookup
syslog = "no"

# company-b must use TLS with a verified certificate, both ways.
[[endpoint]]
name   = "company-b"
notes  = "contract 2026-114"
hosts  = ["company-b.example", ".company-b.example", "127.0.0.2"]
mode   = "enforce"
action = "defer"

  [endpoint.inbound]
  encryption    = true
  min_bits      = 128
  validate_cert = true
  cn            = "out.company-b.example"
  issuer_cn     = "{{.IssuerCN}}"

  [endpoint.outbound]
  encryption    = true
  min_bits      = 128
  validate_cert = true
  cn            = "mx1.company-b.example"

# company-c must encrypt, both ways; its servers do not offer TLS.
[[endpoint]]
name   = "company-c"
hosts  = ["company-c.example", ".company-c.example", "127.0.0.3"]
mode   = "enforce"
action = "reject"

  [endpoint.inbound]
  encryption = true

  [endpoint.outbound]
  encryption = true
`

// configValues fill configTemplate.
type configValues struct {
	MilterPort, SocketmapPort       int
	CABundle, ServerCert, ServerKey string
	IssuerCN                        string
}

// writeConfig writes the policy file to path.
func writeConfig(path string, v configValues) error {
	t := template.Must(template.New("config").Parse(configTemplate))
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// endpointText returns the [[endpoint]] part of the policy file, for
// printing.
func endpointText(cfg string) string {
	data, err := os.ReadFile(cfg)
	if err != nil {
		return ""
	}
	s := string(data)
	if i := strings.Index(s, "# company-b"); i >= 0 {
		s = s[i:]
	}
	return strings.TrimRight(s, "\n")
}

// mtaConfig runs "tlsgate mta-config -c cfg --main-cf FILE" and returns
// its output and the main.cf lines in it ("name = value", comments
// dropped). The private Postfix does not exist yet: FILE is the main.cf
// it starts from (mtalab's base sets compatibility_level = 3.6, which
// decides Postfix's defaults), so the lines are what tlsgate needs on top.
func mtaConfig(tlsgate, cfg string) (text string, mainCF []string, err error) {
	base := filepath.Join(filepath.Dir(cfg), "main.cf.base")
	if err := os.WriteFile(base, []byte("compatibility_level = 3.6\n"), 0o644); err != nil {
		return "", nil, err
	}
	out, err := exec.Command(tlsgate, "mta-config", "-c", cfg, "--main-cf", base).CombinedOutput()
	if err != nil {
		return string(out), nil, fmt.Errorf("%s mta-config -c %s: %v\n%s", tlsgate, cfg, err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !strings.Contains(l, "=") {
			return string(out), nil, fmt.Errorf("mta-config printed a line that is not a main.cf parameter: %q", l)
		}
		mainCF = append(mainCF, l)
	}
	if len(mainCF) == 0 {
		return string(out), nil, fmt.Errorf("mta-config printed no main.cf parameters:\n%s", out)
	}
	return string(out), mainCF, nil
}

// daemon is the "tlsgate serve" subprocess.
type daemon struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // the exit status, set when done is closed
}

// startDaemon runs "tlsgate serve -c cfg" with its log (stderr) in
// logPath and waits until it has opened its listeners.
func startDaemon(tlsgate, cfg, logPath string) (*daemon, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(tlsgate, "serve", "-c", cfg, "--grace", "5s")
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a Ctrl-C in the terminal reaches the demo,
	// which then stops the daemon itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", tlsgate, err)
	}
	d := &daemon{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	started := regexp.MustCompile(`(?m)^(<\d>)?NOQUEUE: start `)
	for !started.MatchString(d.log()) {
		select {
		case <-d.done:
			return nil, fmt.Errorf("tlsgate serve exited (%v):\n%s", d.err, d.log())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("tlsgate serve did not start within 15s:\n%s", d.log())
		}
	}
	return d, nil
}

// pid returns the daemon's process ID.
func (d *daemon) pid() int { return d.cmd.Process.Pid }

// log returns the daemon's log so far.
func (d *daemon) log() string {
	data, _ := os.ReadFile(d.logPath)
	return string(data)
}

// logLines returns the log lines that contain every one of subs, with
// the "<N>" severity prefix removed.
func (d *daemon) logLines(subs ...string) []string {
	var out []string
	for _, l := range strings.Split(d.log(), "\n") {
		ok := l != ""
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			out = append(out, stripSeverity(l))
		}
	}
	return out
}

// waitLogLine waits up to timeout for a line containing all of subs and
// returns the first.
func (d *daemon) waitLogLine(timeout time.Duration, subs ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if ls := d.logLines(subs...); len(ls) > 0 {
			return ls[0], nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no tlsgate log line with %q after %v; log:\n%s", subs, timeout, d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stripSeverity(l string) string {
	if len(l) > 3 && l[0] == '<' && l[2] == '>' {
		return l[3:]
	}
	return l
}

// stop sends SIGTERM to the daemon's PID, waits up to 10 s for it to
// exit and kills it (by PID) if it does not. It is idempotent and reports
// how the daemon ended.
func (d *daemon) stop() error {
	select {
	case <-d.done:
		return d.exitErr()
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-d.done:
		return d.exitErr()
	case <-ctx.Done():
	}
	d.cmd.Process.Kill()
	<-d.done
	return fmt.Errorf("tlsgate serve (pid %d) did not stop within 10s of SIGTERM and was killed", d.pid())
}

func (d *daemon) exitErr() error {
	if d.err != nil {
		return fmt.Errorf("tlsgate serve (pid %d) exited: %v", d.pid(), d.err)
	}
	return nil
}
