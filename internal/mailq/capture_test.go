package mailq

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	root, _ := mtalab.SendmailRoot()
	libs, _ := filepath.Glob(filepath.Join(root, "usr/lib/*-linux-gnu*"))
	// -bp only reads the queue; the private namespace keeps the host name
	// lookups it does at start on files.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost sm.lab.test\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "nsswitch.conf"), []byte("hosts: files\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644)
	script := "set -e; mount --make-rprivate /; for f in hosts nsswitch.conf resolv.conf; do mount --bind " + dir + "/$f /etc/$f; done; exec \"$@\""
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
		filepath.Join(root, "usr/libexec/sendmail/sendmail"), "-C", sm.CFPath(), "-bp")
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+strings.Join(libs, ":"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sendmail -bp: %v\n%s", err, out)
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
