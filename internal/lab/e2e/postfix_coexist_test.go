package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
)

// opendkim is Debian's OpenDKIM milter run for a test: signing mail of
// lab.test with selector e2e, in the foreground, on 127.0.0.1.
type opendkim struct {
	t    *testing.T
	conf string
	cmd  *exec.Cmd
	done chan struct{}
	out  lockedBuffer
	// txt is the DNS TXT record of the selector's public key.
	txt string
}

func startOpenDKIM(t *testing.T, dir string, port int) *opendkim {
	t.Helper()
	bin, err := exec.LookPath("opendkim")
	if err != nil {
		bin = "/usr/sbin/opendkim"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("opendkim is not installed (scripts/install-test-deps.sh installs it)")
			}
			t.Skip("opendkim is not installed (scripts/install-test-deps.sh installs it)")
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "dkim.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	d := &opendkim{t: t, conf: filepath.Join(dir, "opendkim.conf"), txt: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(spki)}
	conf := fmt.Sprintf(`Syslog no
Mode s
Domain lab.test
Selector e2e
KeyFile %s
RequireSafeKeys no
InternalHosts 127.0.0.0/8
Canonicalization relaxed/simple
Socket inet:%d@127.0.0.1
PidFile %s
`, keyFile, port, filepath.Join(dir, "opendkim.pid"))
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	d.start(bin)
	t.Cleanup(d.stop)
	if err := waitListening(port); err != nil {
		t.Fatalf("opendkim: %v\n%s", err, d.out.String())
	}
	return d
}

func (d *opendkim) start(bin string) {
	d.cmd = exec.Command(bin, "-f", "-x", d.conf)
	d.cmd.Stdout, d.cmd.Stderr = &d.out, &d.out
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(d.cmd, d.done)
}

// stop ends OpenDKIM by its PID and waits for it.
func (d *opendkim) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Kill()
	<-d.done
	d.cmd = nil
}

// lookupTXT answers the selector's TXT query from the test's key: no DNS.
func (d *opendkim) lookupTXT(domain string) ([]string, error) {
	if domain == "e2e._domainkey.lab.test" {
		return []string{d.txt}, nil
	}
	return nil, fmt.Errorf("no TXT record for %s in the lab", domain)
}

// waitListening waits until 127.0.0.1:port accepts connections.
func waitListening(port int) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if !waitUntil(20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		return fmt.Errorf("nothing listens on %s", addr)
	}
	return nil
}

// TestPostfixCoexistsWithOpenDKIM: a Postfix that already has a milter,
// Debian's OpenDKIM signing mail of lab.test, with milter_default_action =
// accept (OpenDKIM's own choice: mail flows when it is down), wired to
// tlsgate with "tlsgate mta-config --apply". It proves:
//   - the merge: tlsgate's milter first in smtpd_milters with its own
//     default_action=tempfail, OpenDKIM's kept, the global
//     milter_default_action left at accept;
//   - both milters work: tlsgate refuses the covered partner without
//     TLS, and OpenDKIM signs the accepted mail, whose DKIM signature
//     verifies (go-msgauth, the public key from the test, no DNS) and
//     which carries tlsgate's trace headers;
//   - with OpenDKIM stopped, mail still flows (unsigned): its accept;
//   - with tlsgate stopped, mail is deferred: tlsgate's tempfail.
func TestPostfixCoexistsWithOpenDKIM(t *testing.T) {
	mtalab.Require(t)
	t.Parallel()
	l := newLab(t)
	dkimPort := mtalab.FreePort(t)
	dk := startOpenDKIM(t, l.dir, dkimPort)
	sink := mtalab.StartSink(t, mtalab.SinkOptions{})
	dkimMilter := fmt.Sprintf("inet:127.0.0.1:%d", dkimPort)
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		Transport: map[string]string{"in.test": sink.Nexthop()},
		TLS:       l.pki.Server,
		Milter:    dkimMilter,
		MainCF:    append([]string{"milter_default_action = accept"}, postfixRetry...),
	})
	gateAddr := fmt.Sprintf("127.0.0.1:%d", mtalab.FreePort(t))
	l.writeConfig(gateConfig{MTA: "postfix", Milter: "inet:" + gateAddr, ServerCert: l.pki.Server, Endpoints: []string{
		endpoint("partner", []string{"127.0.0.5"}, "action = \"defer\"\n[endpoint.inbound]\nencryption = true"),
	}}.render(l))
	applied := applyMTAConfig(t, l, pf)
	wantMilters := "{ inet:" + gateAddr + ", default_action=tempfail }, " + dkimMilter
	if got, err := pf.Postconf("smtpd_milters"); err != nil || got != wantMilters {
		t.Fatalf("smtpd_milters = %q (%v), want %q", got, err, wantMilters)
	}
	if got, err := pf.Postconf("milter_default_action"); err != nil || got != "accept" {
		t.Fatalf("milter_default_action = %q (%v), want OpenDKIM's accept left alone", got, err)
	}
	for _, l := range applied {
		if strings.HasPrefix(l, "milter_default_action") {
			t.Errorf("mta-config printed %q", l)
		}
	}
	g := newGate(l)
	g.Start()
	addr := pf.SMTPAddr("smtp")

	// tlsgate refuses the covered partner without TLS.
	err := submit(addr, message{From: "orders@partner.test", To: []string{"user@in.test"}, Subject: "plaintext partner", Local: "127.0.0.5"})
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 451 || !strings.HasPrefix(te.Msg, "4.7.1 ") {
		t.Errorf("the covered partner without TLS: %v, want 451 4.7.1 at MAIL FROM", err)
	} else {
		t.Logf("plaintext partner: %v", err)
	}

	// OpenDKIM signs accepted mail; the signature verifies.
	mustSubmit(t, addr, message{From: "sender@lab.test", To: []string{"user@in.test"}, Subject: "signed"})
	msgs, err := sink.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := msgs[0].Data
	if !bytes.Contains(data, []byte("DKIM-Signature: ")) || !bytes.Contains(data, []byte("Authentication-Results: ")) {
		t.Fatalf("the accepted message lacks OpenDKIM's signature or tlsgate's stamp:\n%s", data)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{LookupTXT: dk.lookupTXT})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "lab.test" {
		t.Errorf("DKIM verification: %v %+v\n%s", err, vs, data)
	} else {
		t.Logf("DKIM signature of d=%s verifies; signed headers %v", vs[0].Domain, vs[0].HeaderKeys)
	}
	if m := regexp.MustCompile(`(?m)^Authentication-Results: .*$`).Find(data); m != nil {
		t.Logf("tlsgate: %s", m)
	}

	// OpenDKIM down: mail still flows, unsigned (its default_action is
	// the global accept).
	dk.stop()
	mark := pf.LogMark()
	mustSubmit(t, addr, message{From: "sender@lab.test", To: []string{"user@in.test"}, Subject: "opendkim down"})
	msgs, err = sink.WaitMessages(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(msgs[1].Data, []byte("DKIM-Signature: ")) {
		t.Errorf("signed although OpenDKIM is down:\n%s", msgs[1].Data)
	}
	if line, err := pf.WaitLogAfter(mark, regexp.MustCompile(`warning: connect to Milter service `+regexp.QuoteMeta(dkimMilter)+`: Connection refused`), 10*time.Second); err != nil {
		t.Error(err)
	} else {
		t.Logf("Postfix (OpenDKIM down): %s", line[strings.Index(line, "warning:"):])
	}

	// tlsgate down: mail is deferred (its default_action=tempfail).
	g.Stop()
	mark = pf.LogMark()
	err = submit(addr, message{From: "sender@lab.test", To: []string{"user@in.test"}, Subject: "tlsgate down"})
	if !errors.As(err, &te) || te.Code/100 != 4 {
		t.Errorf("with tlsgate down: %v, want a 4xx reply", err)
	}
	if line, err := pf.WaitLogAfter(mark, regexp.MustCompile(`milter-reject: CONNECT from \S+: 451 4\.7\.1 Service unavailable - try again later`), 10*time.Second); err != nil {
		t.Error(err)
	} else {
		t.Logf("Postfix (tlsgate down): %s", line[strings.Index(line, "NOQUEUE:"):])
	}
	if n := len(sink.Messages()); n != 2 {
		t.Errorf("the sink has %d messages, want 2 (nothing while tlsgate was down)", n)
	}
}
