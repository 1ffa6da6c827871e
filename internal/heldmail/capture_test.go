package heldmail

import (
	"flag"
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
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

func send(addr, rcpt string) error {
	return smtp.SendMail(addr, nil, "sender@lab.test", []string{rcpt}, []byte("Subject: held\r\n\r\nheld\r\n"))
}
