package mailq

import (
	"flag"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/mtalab"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

var capture = flag.Bool("capture", false, "re-capture testdata/sendmail-mailq.txt from the real Sendmail lab")

// TestCaptureMailq records the real "sendmail -bp" listing of three
// messages a smart host keeps deferring (run with -capture as root).
func TestCaptureMailq(t *testing.T) {
	if !*capture {
		t.Skip("re-capture with -capture (root, real MTA lab)")
	}
	pki := testpki.NewT(t)
	sink := mtalab.StartSink(t, mtalab.SinkOptions{TLS: pki.Sink, Reply: func(stage, arg string) string {
		if stage == "RCPT" {
			return "451 4.3.0 try again later"
		}
		return ""
	}})
	sm := mtalab.StartSendmail(t, mtalab.SendmailOptions{TLS: pki.Server, CAFile: pki.CA.CertFile, SmartHostPort: sink.Port()})
	for i, rcpt := range []string{"a@held.test", "b@held.test", "c@other.test"} {
		cmd := exec.Command("swaks", "--silent", "2", "--server", sm.Addr(), "--from", "sender@lab.test", "--to", rcpt, "--header", "Subject: mailq "+string(rune('1'+i)))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("swaks: %v %s", err, out)
		}
	}
	if _, err := sm.WaitQueue(func(q []mtalab.QueueEntry) bool {
		n := 0
		for _, e := range q {
			for _, r := range e.Recipients {
				if r.Reason != "" {
					n++
				}
			}
		}
		return n == 3
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
	if err := os.WriteFile("testdata/sendmail-mailq.txt", out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", out)

	pf := mtalab.StartPostfix(t, mtalab.PostfixOptions{SMTPCAFile: pki.CA.CertFile,
		Transport: map[string]string{"held.test": sink.Nexthop(), "other.test": sink.Nexthop()}})
	for _, rcpt := range []string{"a@held.test", "b@held.test", "c@other.test"} {
		cmd := exec.Command("swaks", "--silent", "2", "--server", pf.SMTPAddr("smtp"), "--from", "sender@lab.test", "--to", rcpt)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("swaks: %v %s", err, out)
		}
	}
	if _, err := pf.WaitQueue(func(q []mtalab.QueueEntry) bool {
		n := 0
		for _, e := range q {
			if e.Queue == "deferred" {
				n++
			}
		}
		return n == 3
	}, time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command("postqueue", "-c", pf.ConfigDir(), "-j").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("testdata/postqueue.json", out, 0o644); err != nil {
		t.Fatal(err)
	}
}
