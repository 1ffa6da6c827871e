// Package demo plays tlsgate's demo (README's first command, "make
// demo"): a private Postfix on loopback with tlsgate attached through the
// lines "tlsgate mta-config" prints, two partners and the two directions
// of mail, told in plain words. It is the body of cmd/tlsgate-demo and
// an instrument of the lab (internal/lab), built on mtalab and testpki.
//
// The partners are those of the README's example. company-b must use TLS
// with a verified certificate both ways; company-c must encrypt but its
// servers do not offer TLS. Inbound, company-b's server (127.0.0.2)
// sends once with STARTTLS and a CA-signed client certificate (accepted
// and stamped by tlsgate's milter) and once in plaintext (deferred with
// 451 4.7.1), and company-c's server (127.0.0.3) sends in plaintext
// (rejected with 550 5.7.1). Outbound, our Postfix delivers to
// company-b's server over verified TLS and keeps the message for
// company-c in its queue ("TLS is required, but was not offered"),
// because tlsgate's socketmap tells it so.
//
// Everything is real: the tlsgate binary runs as "tlsgate serve" with a
// policy file written to a temporary directory, Postfix is Debian's, run
// by internal/lab/mtalab in a private mount namespace where no DNS query can
// leave the machine; the partners' servers are mtalab's SMTP sinks and
// the certificates are made at run time by internal/lab/testpki. All traffic
// stays on 127.0.0.0/8. Every process is stopped by its PID and every
// temporary directory removed when [Run] returns, also on failure.
package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// Options configure [Run].
type Options struct {
	// Tlsgate is the path of the tlsgate binary to run ("make build"
	// writes ./tlsgate). Required.
	Tlsgate string
	// Out receives the story. Default: os.Stdout.
	Out io.Writer
	// Verbose, if set, receives the harness's own log lines (where
	// Postfix lives, how long it took to start).
	Verbose io.Writer
}

// Summary counts what happened in the demo.
type Summary struct {
	// Accepted counts inbound messages accepted and stamped by tlsgate
	// (its Received line and Authentication-Results in the delivered
	// copy).
	Accepted int
	// Refused counts inbound messages refused at MAIL FROM by tlsgate.
	Refused int
	// DeliveredVerified counts outbound messages Postfix delivered over a
	// verified TLS connection.
	DeliveredVerified int
	// Queued counts outbound messages kept in Postfix's queue because the
	// partner's server offered no TLS, and that the partner's server
	// never saw.
	Queued int
}

// Want is the summary of a demo where everything went as the policy says.
var Want = Summary{Accepted: 1, Refused: 2, DeliveredVerified: 1, Queued: 1}

// String returns "accepted and stamped: 1, refused: 2, delivered over
// verified TLS: 1, kept in queue: 1".
func (s Summary) String() string {
	return fmt.Sprintf("accepted and stamped: %d, refused: %d, delivered over verified TLS: %d, kept in queue: %d",
		s.Accepted, s.Refused, s.DeliveredVerified, s.Queued)
}

// Names used in the stories.
const (
	ourHost      = "mx.lab.test"
	ourUser      = "purchasing@lab.test"
	bClientName  = "out.company-b.example" // company-b's sending server
	bClientIP    = "127.0.0.2"
	bServerName  = "mx1.company-b.example" // company-b's receiving server
	cClientName  = "mail.company-c.example"
	cClientIP    = "127.0.0.3"
	cServerName  = "mx.company-c.example"
	workstation  = "desk1.lab.test"
	bSenderTLS   = "orders@company-b.example"
	bSenderPlain = "invoices@company-b.example"
	cSender      = "info@company-c.example"
	bRecipient   = "sales@company-b.example"
	cRecipient   = "info@company-c.example"
)

// Run plays the demo and prints it to o.Out. It returns the counts and,
// if anything did not work (a part could not be started, a story went
// otherwise than the policy says, cleanup failed), an error describing
// it; the counts then tell how far it got. Cancelling ctx ends the demo
// at the next step, with cleanup. Run needs root and Postfix (see
// scripts/install-test-deps.sh); it must not run concurrently with
// itself in one process.
func Run(ctx context.Context, o Options) (sum Summary, err error) {
	if o.Tlsgate == "" {
		return sum, errors.New("demo: Options.Tlsgate (the path of the tlsgate binary) is required")
	}
	if abs, err := filepath.Abs(o.Tlsgate); err == nil {
		o.Tlsgate = abs
	}
	if _, err := os.Stat(o.Tlsgate); err != nil {
		return sum, fmt.Errorf("demo: tlsgate binary: %w (run make build)", err)
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	d := &demo{ctx: ctx, o: o, r: mtalab.NewRunner(o.Verbose, ""), out: o.Out, start: time.Now()}
	err = d.r.Do(func() {
		d.setup()
		d.inbound()
		d.outbound()
		d.summary()
	})
	if err != nil {
		d.say(0, "\nThe demo stopped: %v", err)
	}
	d.say(0, "\nCleaning up: stopping Postfix and tlsgate by PID, closing the partners' servers, removing temporary directories.")
	cerr := d.r.Close()
	d.reportCleanup()
	problems := append([]error{err}, d.problems...)
	err = errors.Join(append(problems, cerr)...)
	d.say(0, "Finished in %.1f s.", time.Since(d.start).Seconds())
	return d.sum, err
}

// demo is one run's state.
type demo struct {
	ctx   context.Context
	o     Options
	r     *mtalab.Runner
	out   io.Writer
	start time.Time

	dir     string
	certs   certs
	cfg     string
	gate    *daemon
	pf      *mtalab.Postfix
	pfDir   string
	pfPID   int
	mailbox *mtalab.Sink
	sinkB   *mtalab.Sink
	sinkC   *mtalab.Sink

	sum      Summary
	problems []error
}

// say prints a line indented by indent steps of two spaces.
func (d *demo) say(indent int, format string, args ...any) {
	pad := strings.Repeat("  ", indent)
	for _, l := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		if l == "" {
			fmt.Fprintln(d.out)
			continue
		}
		fmt.Fprintln(d.out, pad+l)
	}
}

// block prints lines indented by indent steps, each prefixed with "| ".
func (d *demo) block(indent int, lines ...string) {
	pad := strings.Repeat("  ", indent) + "| "
	for _, l := range lines {
		for _, s := range strings.Split(strings.TrimRight(l, "\r\n"), "\n") {
			fmt.Fprintln(d.out, pad+strings.TrimRight(s, "\r"))
		}
	}
}

// heading prints a title with an underline.
func (d *demo) heading(title string) {
	fmt.Fprintf(d.out, "\n%s\n%s\n", title, strings.Repeat("=", len(title)))
}

// problem records a story that did not go as the policy says; the demo
// goes on.
func (d *demo) problem(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	d.problems = append(d.problems, err)
	d.say(2, "PROBLEM: %v", err)
}

// checkpoint ends the demo if ctx was cancelled.
func (d *demo) checkpoint() {
	if err := d.ctx.Err(); err != nil {
		d.r.Fatalf("demo: interrupted (%v)", err)
	}
}

// must ends the demo on err.
func (d *demo) must(err error, what string) {
	if err != nil {
		d.r.Fatalf("demo: %s: %v", what, err)
	}
}

// setup makes the certificates and the policy file, starts tlsgate, the
// partners' servers and Postfix wired by mta-config.
func (d *demo) setup() {
	d.say(0, "tlsgate demo: per-partner mandatory TLS for Postfix, played on this machine")
	d.say(0, "Everything listens on 127.0.0.1; the partners' servers are simulated on loopback, no mail leaves the machine.")
	d.heading("Setting the stage")
	d.checkpoint()
	mtalab.RequirePostfix(d.r)
	d.dir = d.r.TempDir()

	d.certs = d.makeCerts(filepath.Join(d.dir, "pki"))
	d.say(1, "Certificates, made just now under %s by a throw-away CA %q:", filepath.Join(d.dir, "pki"), caName)
	d.say(2, "%-22s our Postfix's server certificate", ourHost)
	d.say(2, "%-22s company-b's client certificate (their sending server)", bClientName)
	d.say(2, "%-22s company-b's server certificate (their receiving server)", bServerName)

	milterPort, smPort := mtalab.FreePort(d.r), mtalab.FreePort(d.r)
	d.cfg = filepath.Join(d.dir, "tlsgate.toml")
	d.must(writeConfig(d.cfg, configValues{
		MilterPort: milterPort, SocketmapPort: smPort,
		CABundle: d.certs.ca.CertFile, ServerCert: d.certs.server.CertFile, ServerKey: d.certs.server.KeyFile,
		IssuerCN: caName,
	}), "write the policy file")
	d.say(1, "\nThe policy file %s names two partners:", d.cfg)
	d.block(2, endpointText(d.cfg))
	var err error
	out, err := exec.Command(d.o.Tlsgate, "check", "-c", d.cfg).CombinedOutput()
	d.must(err, "tlsgate check -c "+d.cfg+": "+string(out))
	d.say(1, "$ tlsgate check -c %s", d.cfg)
	d.block(2, strings.TrimSpace(string(out)))

	d.checkpoint()
	d.gate, err = startDaemon(d.o.Tlsgate, d.cfg, filepath.Join(d.dir, "tlsgate.log"))
	d.must(err, "start tlsgate serve")
	d.r.Cleanup(func() {
		if err := d.gate.stop(); err != nil {
			d.r.Errorf("demo: %v", err)
		}
	})
	d.say(1, "\n$ tlsgate serve -c %s   (pid %d, log in %s)", d.cfg, d.gate.pid(), d.gate.logPath)
	d.say(2, "milter (inbound checks and trace headers) on 127.0.0.1:%d", milterPort)
	d.say(2, "socketmap (outbound TLS policy for Postfix) on 127.0.0.1:%d", smPort)

	_, mainCF, err := mtaConfig(d.o.Tlsgate, d.cfg)
	d.must(err, "tlsgate mta-config")
	d.say(1, "\n$ tlsgate mta-config -c %s   printed these main.cf lines; they are applied as they are:", d.cfg)
	d.block(2, mainCF...)

	// The partners' servers and our internal mailbox server.
	d.mailbox = mtalab.StartSink(d.r, mtalab.SinkOptions{Hostname: "mailbox.lab.test"})
	d.sinkB = mtalab.StartSink(d.r, mtalab.SinkOptions{Hostname: bServerName, TLS: d.certs.bServer})
	d.sinkC = mtalab.StartSink(d.r, mtalab.SinkOptions{Hostname: cServerName})

	d.checkpoint()
	extra := []string{"smtpd_tls_loglevel = 1"}
	d.pf = mtalab.StartPostfix(d.r, mtalab.PostfixOptions{
		Hostname: ourHost,
		// Our users' mail enters on a second listener without the
		// milter, like a submission port.
		Services: []mtalab.Service{{Name: "submission", Overrides: []string{"smtpd_milters="}}},
		Transport: map[string]string{
			"lab.test":          d.mailbox.Nexthop(),
			"company-b.example": fmt.Sprintf("smtp:[%s]:%d", bServerName, d.sinkB.Port()),
			"company-c.example": fmt.Sprintf("smtp:[%s]:%d", cServerName, d.sinkC.Port()),
		},
		MainCF: append(append([]string(nil), mainCF...), extra...),
		Hosts: []string{
			"127.0.0.1 " + bServerName + " " + cServerName,
			bClientIP + " " + bClientName,
			cClientIP + " " + cClientName,
		},
	})
	d.pfDir, d.pfPID = d.pf.Dir(), d.pf.MasterPID()
	version, _ := d.pf.Postconf("mail_version")
	d.say(1, "\nPostfix %s (master pid %d) runs privately from %s", version, d.pfPID, d.pfDir)
	d.say(2, "%s on %s: where partners deliver to us (tlsgate's milter attached)", ourHost, d.pf.SMTPAddr("smtp"))
	d.say(2, "submission on %s: where our own users hand in mail (no milter)", d.pf.SMTPAddr("submission"))
	d.say(2, "plus, for this demo only: %s (to show TLS details in Postfix's log)", strings.Join(extra, ", "))
	d.say(1, "Simulated servers on loopback:")
	d.say(2, "company-b's server %-22s %s, offers STARTTLS with its CA-signed certificate", bServerName, d.sinkB.Addr())
	d.say(2, "company-c's server %-22s %s, does not offer STARTTLS", cServerName, d.sinkC.Addr())
	d.say(2, "our mailbox server %-22s %s, receives what Postfix accepts for @lab.test", "mailbox.lab.test", d.mailbox.Addr())
	d.say(2, "company-b sends from %s (%s), company-c from %s (%s)", bClientIP, bClientName, cClientIP, cClientName)
}

// caName is the common name of the demo's CA, which stands for the
// public CA that signed company-b's certificates.
const caName = "tlsgate Demo CA"

// certs are the demo's certificates.
type certs struct {
	ca      *testpki.Cert // caName; our CA bundle
	server  *testpki.Cert // our Postfix (mx.lab.test)
	bClient *testpki.Cert // company-b's sending server (client certificate)
	bServer *testpki.Cert // company-b's receiving server
}

// makeCerts issues the demo's certificates into dir with testpki. They
// are valid for a year, so that "tlsgate check" has no expiry to warn
// about, and use ECDSA P-256 keys, which are quick to make.
func (d *demo) makeCerts(dir string) certs {
	d.must(os.MkdirAll(dir, 0o755), "make the certificate directory")
	notAfter := time.Now().AddDate(1, 0, 0)
	issue := func(file, name, org string, signer *testpki.Cert, eku ...x509.ExtKeyUsage) *testpki.Cert {
		o := testpki.Options{
			Name:        file,
			Subject:     pkix.Name{Country: []string{"DE"}, Organization: []string{org}, CommonName: name},
			NotAfter:    notAfter,
			KeyType:     testpki.ECDSAP256,
			KeySlot:     "tlsgate-demo-" + file,
			Signer:      signer,
			ExtKeyUsage: eku,
		}
		if signer == nil {
			o.IsCA = true
		} else {
			o.DNSNames = []string{name}
		}
		c, err := testpki.Issue(dir, o)
		d.must(err, "issue the certificate "+name)
		return c
	}
	var c certs
	c.ca = issue("ca", caName, "tlsgate demo", nil)
	c.server = issue(ourHost, ourHost, "Lab", c.ca, x509.ExtKeyUsageServerAuth)
	c.bClient = issue(bClientName, bClientName, "Company B", c.ca, x509.ExtKeyUsageClientAuth)
	c.bServer = issue(bServerName, bServerName, "Company B", c.ca, x509.ExtKeyUsageServerAuth)
	return c
}

// clientTLS is company-b's TLS configuration as a client: it trusts the
// CA and presents its certificate.
func (d *demo) clientTLS() *tls.Config {
	kp, err := tls.LoadX509KeyPair(d.certs.bClient.ChainFile, d.certs.bClient.KeyFile)
	d.must(err, "load company-b's client certificate")
	return &tls.Config{
		ServerName:   ourHost,
		RootCAs:      d.certs.ca.Pool(),
		Certificates: []tls.Certificate{kp},
		MinVersion:   tls.VersionTLS12,
	}
}

// inbound plays story 1: partners send mail to us.
func (d *demo) inbound() {
	d.heading("Story 1, inbound: partners send mail to us")
	smtpAddr := d.pf.SMTPAddr("smtp")

	d.checkpoint()
	d.say(0, "\n1a. company-b's server connects from %s, starts TLS and presents its certificate (CN=%s).", bClientIP, bClientName)
	mark := d.pf.LogMark()
	res, err := sendMail(smtpSession{LocalIP: bClientIP, Server: smtpAddr, Helo: bClientName, TLS: d.clientTLS()},
		envelope{From: bSenderTLS, To: ourUser, Subject: "Order 4711 (sent over verified TLS)"})
	d.transcript(res)
	switch {
	case err != nil:
		d.problem("company-b's TLS session failed: %v", err)
	case !res.Accepted:
		d.problem("tlsgate should have accepted this message, but Postfix answered %d %s", res.Code, res.Reply)
		d.tlsgateDecision(bSenderTLS)
	default:
		d.say(1, "ACCEPTED: Postfix queued it as %s.", res.QueueID)
		if l, err := d.pf.WaitLogAfter(mark, regexp.MustCompile(`TLS connection established from `+regexp.QuoteMeta(bClientName)), 10*time.Second); err == nil {
			d.say(1, "Postfix's log:")
			d.block(2, postfixLine(l))
		}
		d.tlsgateDecision(bSenderTLS)
		d.acceptedCopy(res.QueueID)
	}

	d.checkpoint()
	d.say(0, "\n1b. company-b's server connects from %s again, but this time without TLS.", bClientIP)
	d.refusal(smtpSession{LocalIP: bClientIP, Server: smtpAddr, Helo: bClientName},
		envelope{From: bSenderPlain, To: ourUser, Subject: "Invoice 0815 (sent in plaintext)"},
		"company-b's action is \"defer\": a temporary refusal, so their server keeps the message and retries; nothing is lost while they repair TLS.")

	d.checkpoint()
	d.say(0, "\n1c. company-c's server connects from %s; it does not do TLS, so it sends in plaintext.", cClientIP)
	d.refusal(smtpSession{LocalIP: cClientIP, Server: smtpAddr, Helo: cClientName},
		envelope{From: cSender, To: ourUser, Subject: "Newsletter (sent in plaintext)"},
		"company-c's action is \"reject\": a permanent refusal, so their server returns the message to its sender.")
}

// transcript prints an SMTP session.
func (d *demo) transcript(res *smtpOutcome) {
	if res == nil {
		return
	}
	d.say(1, "The SMTP session (C: their server, S: our Postfix):")
	d.block(2, res.Transcript...)
}

// tlsgateDecision prints tlsgate's log line about the message from sender.
func (d *demo) tlsgateDecision(sender string) string {
	l, err := d.gate.waitLogLine(10*time.Second, "tlsgate: result=", "sender=<"+sender+">")
	if err != nil {
		d.problem("tlsgate logged no decision for <%s>", sender)
		return ""
	}
	d.say(1, "tlsgate's log:")
	d.block(2, l)
	return l
}

// acceptedCopy shows the headers of the copy our mailbox server got and
// counts the message as accepted and stamped when tlsgate's headers are
// in it.
func (d *demo) acceptedCopy(queueID string) {
	msgs, err := d.mailbox.WaitMessages(1, 30*time.Second)
	if err != nil {
		d.problem("the accepted message did not reach our mailbox server: %v", err)
		return
	}
	hdr := headerLines(msgs[0].Data)
	d.say(1, "The copy our mailbox server received starts with these headers:")
	d.block(2, hdr...)
	received, ar := false, false
	for _, h := range hdr {
		received = received || strings.HasPrefix(h, "Received:") && strings.Contains(h, "(tlsgate)")
		ar = ar || strings.HasPrefix(h, "Authentication-Results: "+ourHost)
	}
	if !received || !ar {
		d.problem("tlsgate's Received line (%v) or Authentication-Results header (%v) is missing from the delivered copy", received, ar)
		return
	}
	d.say(1, "tlsgate stamped it: the Received line \"by %s (tlsgate)\" records the TLS session, the", ourHost)
	d.say(1, "certificate and the verdict (endpoint=company-b policy=pass); Authentication-Results says x-tls=pass.")
	d.sum.Accepted++
}

// refusal plays one plaintext session that tlsgate must refuse.
func (d *demo) refusal(s smtpSession, env envelope, why string) {
	mark := d.pf.LogMark()
	res, err := sendMail(s, env)
	d.transcript(res)
	switch {
	case err != nil:
		d.problem("the session failed: %v", err)
		return
	case res.Accepted:
		d.problem("tlsgate should have refused this plaintext message, but Postfix accepted it (%s)", res.Reply)
		d.tlsgateDecision(env.From)
		return
	}
	d.say(1, "REFUSED at %s with \"%d %s\".", stageName(res.Stage), res.Code, res.Reply)
	d.say(1, "%s", why)
	if l, err := d.pf.WaitLogAfter(mark, regexp.MustCompile(`milter-reject: MAIL from .*from=<`+regexp.QuoteMeta(env.From)+`>`), 10*time.Second); err == nil {
		d.say(1, "Postfix's log:")
		d.block(2, postfixLine(l))
	}
	l := d.tlsgateDecision(env.From)
	if !strings.Contains(l, "reason=") {
		d.problem("tlsgate's log line gives no reason")
		return
	}
	d.say(1, "The reason= field tells the postmaster exactly which requirement was missed.")
	d.sum.Refused++
}

// outbound plays story 2: we send mail to the partners.
func (d *demo) outbound() {
	d.heading("Story 2, outbound: we send mail to the partners")
	d.checkpoint()
	sub := d.pf.SMTPAddr("submission")
	mark := d.pf.LogMark()
	d.say(0, "\nA user hands two messages to our Postfix (submission listener %s):", sub)
	ids := map[string]string{}
	for _, to := range []string{bRecipient, cRecipient} {
		res, err := sendMail(smtpSession{LocalIP: "127.0.0.1", Server: sub, Helo: workstation},
			envelope{From: ourUser, To: to, Subject: "Our order confirmation"})
		if err != nil || !res.Accepted {
			if res != nil {
				d.block(2, res.Transcript...)
			}
			d.r.Fatalf("demo: Postfix did not take the message to %s: %v", to, err)
		}
		ids[to] = res.QueueID
		d.say(1, "to <%s>: queued as %s", to, res.QueueID)
	}

	d.checkpoint()
	d.say(0, "\n2a. To company-b (%s): TLS with a verified certificate is required.", bRecipient)
	d.lookup("company-b", bServerName)
	verified, _ := d.pf.WaitLogAfter(mark, regexp.MustCompile(`Verified TLS connection established to `+regexp.QuoteMeta(bServerName)), 30*time.Second)
	status, err := d.pf.WaitLogAfter(mark, regexp.MustCompile(`to=<`+regexp.QuoteMeta(bRecipient)+`>.*status=`), 30*time.Second)
	if err != nil {
		d.problem("Postfix logged no delivery attempt to <%s>", bRecipient)
	} else {
		d.say(1, "Postfix's log:")
		if verified != "" {
			d.block(2, postfixLine(verified))
		}
		d.block(2, postfixLine(status))
	}
	msgs, _ := d.sinkB.WaitMessages(1, 10*time.Second)
	switch {
	case verified == "" || !strings.Contains(status, "status=sent"):
		d.problem("the message to company-b was not delivered over verified TLS")
	case len(msgs) != 1 || msgs[0].TLS == nil:
		d.problem("company-b's server did not receive the message over TLS")
	default:
		d.say(1, "DELIVERED over verified TLS: Postfix checked company-b's certificate against our CA and")
		d.say(1, "its name (%s); company-b's server received the message over %s (%s).", bServerName, msgs[0].TLS.VersionName, msgs[0].TLS.CipherSuite)
		d.sum.DeliveredVerified++
	}

	d.checkpoint()
	d.say(0, "\n2b. To company-c (%s): encryption is required, but company-c's server offers no STARTTLS.", cRecipient)
	d.lookup("company-c", cServerName)
	status, err = d.pf.WaitLogAfter(mark, regexp.MustCompile(`to=<`+regexp.QuoteMeta(cRecipient)+`>.*status=`), 30*time.Second)
	if err != nil {
		d.problem("Postfix logged no delivery attempt to <%s>", cRecipient)
		return
	}
	d.say(1, "Postfix's log:")
	d.block(2, postfixLine(status))
	q, qerr := d.pf.WaitQueue(func(q []mtalab.QueueEntry) bool {
		for _, e := range q {
			for _, r := range e.Recipients {
				if r.Address == cRecipient && strings.Contains(r.Reason, "TLS is required, but was not offered") {
					return true
				}
			}
		}
		return false
	}, 30*time.Second)
	if out, err := exec.Command("/usr/sbin/postqueue", "-c", d.pf.ConfigDir(), "-p").CombinedOutput(); err == nil {
		d.say(1, "$ postqueue -p")
		d.block(2, strings.TrimRight(string(out), "\n"))
	}
	envs, sessions := d.sinkC.Envelopes(), d.sinkC.Sessions()
	switch {
	case qerr != nil:
		d.problem("the message to company-c is not in the queue with the reason \"TLS is required, but was not offered\" (queue: %+v)", q)
	case len(envs) > 0:
		d.problem("company-c's server saw %d envelope(s): the message went out without TLS", len(envs))
	default:
		d.say(1, "KEPT IN THE QUEUE (%s): company-c's server saw %d connection(s) but no MAIL FROM,", ids[cRecipient], len(sessions))
		d.say(1, "so not one byte of the message crossed the wire in plaintext. Postfix retries on its own;")
		d.say(1, "once company-c offers TLS the message goes out.")
		d.sum.Queued++
	}
}

// lookup prints tlsgate's socketmap answer for a partner's server.
func (d *demo) lookup(endpoint, server string) {
	l, err := d.gate.waitLogLine(30*time.Second, "tls-policy-lookup", "key=", server, "endpoint="+endpoint)
	if err != nil {
		d.problem("tlsgate logged no TLS policy lookup for %s", server)
		return
	}
	d.say(1, "Postfix asked tlsgate for the TLS policy of the next hop; tlsgate's log:")
	d.block(2, l)
}

// summary prints the counts.
func (d *demo) summary() {
	d.heading("Summary")
	d.say(0, "%s", d.sum)
	if d.sum == Want && len(d.problems) == 0 {
		d.say(0, "Everything went as the policy says.")
	} else {
		d.say(0, "Expected: %s", Want)
	}
}

// reportCleanup checks that what the demo started is gone.
func (d *demo) reportCleanup() {
	var gone []string
	stopped := func(what string, pid int) {
		if processGone(pid) {
			gone = append(gone, fmt.Sprintf("%s (pid %d) stopped", what, pid))
		} else {
			gone = append(gone, fmt.Sprintf("%s (pid %d) STILL RUNNING", what, pid))
			d.problems = append(d.problems, fmt.Errorf("%s (pid %d) is still running after cleanup", what, pid))
		}
	}
	if d.gate != nil {
		stopped("tlsgate serve", d.gate.pid())
	}
	if d.pfPID != 0 {
		stopped("Postfix master", d.pfPID)
	}
	for _, dir := range []string{d.dir, d.pfDir} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			gone = append(gone, dir+" removed")
		} else {
			gone = append(gone, dir+" NOT removed")
			d.problems = append(d.problems, fmt.Errorf("%s was not removed", dir))
		}
	}
	if len(gone) > 0 {
		d.say(1, "%s.", strings.Join(gone, ", "))
	}
}

// processGone reports whether process pid has exited; a zombie (which an
// init that does not reap orphans may leave behind) counts as exited.
func processGone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(data[i+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// headerLines returns the header block of a message, one element per
// field (folded continuation lines kept with their field).
func headerLines(data []byte) []string {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i]
	}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(out) > 0 {
			out[len(out)-1] += "\n" + strings.ReplaceAll(l, "\t", "    ")
			continue
		}
		out = append(out, l)
	}
	return out
}

// postfixLine drops the time stamp and host name from a maillog line.
func postfixLine(l string) string {
	if m := maillogPrefix.FindStringIndex(l); m != nil {
		return l[m[1]:]
	}
	return l
}

var maillogPrefix = regexp.MustCompile(`^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d \S+ `)

func stageName(stage string) string {
	switch stage {
	case "MAIL":
		return "MAIL FROM"
	case "RCPT":
		return "RCPT TO"
	case ".":
		return "the end of the message"
	}
	return stage
}
