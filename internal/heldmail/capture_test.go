package heldmail

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/policyd"
)

var capture = flag.Bool("capture", false, "re-capture testdata/postqueue-tls.json from the real Postfix lab")

// TestCapturePostfixReasons records the real "postqueue -j" listing of
// mail a private Postfix 3.7 holds for each TLS reason (run with -capture
// as root): TLS policies from a texthash table, then a socketmap nobody
// answers for the next hops the table does not list.
func TestCapturePostfixReasons(t *testing.T) {
	if !*capture {
		t.Skip("re-capture with -capture (root, real MTA lab)")
	}
	pki := testpki.NewT(t)
	plain := mtalab.StartSink(t, mtalab.SinkOptions{})
	wrong := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.WrongCN})
	other := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.OtherCASink})
	good := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.Sink})
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	hop := func(s *mtalab.Sink) string { return fmt.Sprintf("[127.0.0.1]:%d", s.Port()) }
	policies := strings.Join([]string{
		hop(plain) + " encrypt",
		hop(wrong) + " secure match=sink.partner.test",
		hop(other) + " verify match=127.0.0.1",
		fmt.Sprintf("%s encrypt protocols=<=TLSv1.1", hop(good)),
	}, "\n") + "\n"
	tp := filepath.Join(dir, "tls_policy")
	if err := os.WriteFile(tp, []byte(policies), 0o644); err != nil {
		t.Fatal(err)
	}
	lookup := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.Sink})
	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{
		SMTPCAFile: pki.CA.CertFile,
		Transport: map[string]string{
			"plain.test":     "smtp:" + hop(plain),
			"wrongname.test": "smtp:" + hop(wrong),
			"untrusted.test": "smtp:" + hop(other),
			"handshake.test": "smtp:" + hop(good),
			"lookup.test":    "smtp:" + hop(lookup),
		},
		TLSPolicyMaps: "texthash:" + tp + ", socketmap:unix:" + filepath.Join(dir, "nobody.sock") + ":tlspolicy",
	})
	for _, rcpt := range []string{"a@plain.test", "b@wrongname.test", "c@untrusted.test", "d@handshake.test", "e@lookup.test"} {
		if err := send(pf.SMTPAddr("smtp"), rcpt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pf.WaitQueue(func(q []mtalab.QueueEntry) bool {
		n := 0
		for _, e := range q {
			for _, r := range e.Recipients {
				if r.Reason != "" {
					n++
				}
			}
		}
		return n == 5
	}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/sbin/postqueue", "-c", pf.ConfigDir(), "-j").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/postqueue-tls.json", out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote testdata/postqueue-tls.json:\n%s", out)
}

// send submits one message without STARTTLS (the lab MTAs' own
// certificates are not what this test is about).
func send(addr, rcpt string) error {
	return mtalab.SendPlain(addr, "sender@lab.test", rcpt, []byte("Subject: held\r\n\r\nheld\r\n"))
}

// TestCaptureSendmailReasons records the real mailq listing of mail a
// Sendmail 8.17 holds for each TLS reason (run with -capture as root):
// one Sendmail per case, its access map a socketmap server (package
// policyd) answering TLS_Rcpt as tlsgate would, each relaying to a sink
// of its own.
func TestCaptureSendmailReasons(t *testing.T) {
	if !*capture {
		t.Skip("re-capture with -capture (root, real MTA lab)")
	}
	mtalab.RequireSendmail(t)
	pki := testpki.NewT(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	answers := map[string]policyd.Reply{
		"plain.test":     {Status: policyd.StatusOK, Data: "TEMP+ENCR:128"},
		"wrongname.test": {Status: policyd.StatusOK, Data: "TEMP+VERIFY+CN:sink.partner.test"},
		"untrusted.test": {Status: policyd.StatusOK, Data: "TEMP+VERIFY"},
		"lookup.test":    {Status: policyd.StatusTemp, Data: "cannot decide"},
	}
	srv, err := policyd.NewSocketmapServer(policyd.SocketmapOptions{Lookuper: policyd.LookupFunc(func(_ context.Context, _, key string) policyd.Reply {
		if rcpt, ok := strings.CutPrefix(key, "tls_rcpt:"); ok {
			if _, d, ok := strings.Cut(rcpt, "@"); ok {
				if r, ok := answers[d]; ok {
					return r
				}
			}
		}
		return policyd.Reply{Status: policyd.StatusNotFound}
	})})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "access.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	certs := map[string]*testpki.Cert{"plain.test": nil, "wrongname.test": pki.WrongCN, "untrusted.test": pki.OtherCASink, "lookup.test": pki.Sink}
	for domain, cert := range certs {
		sink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: cert})
		sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{SmartHostPort: sink.Port(), TLS: pki.Server, CAFile: pki.CA.CertFile, AccessMap: "unix:" + sock, LogLevel: 14})
		rcpt := "user@" + domain
		if err := send(sm.Addr(), rcpt); err != nil {
			t.Fatal(err)
		}
		if _, err := sm.WaitQueue(func(q []mtalab.QueueEntry) bool {
			return len(q) == 1 && len(q[0].Recipients) == 1 && q[0].Recipients[0].Reason != ""
		}, time.Minute); err != nil {
			t.Fatal(err)
		}
		mailq, err := sm.MailqCommand()
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(mailq).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", mailq, err, out)
		}
		name := "testdata/sendmail-mailq-" + strings.TrimSuffix(domain, ".test") + ".txt"
		if err := os.WriteFile(name, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s:\n%s", name, out)
	}
}
