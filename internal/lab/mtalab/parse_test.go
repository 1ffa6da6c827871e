package mtalab

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParsePostqueueJSON(t *testing.T) {
	out := `{"queue_name": "deferred", "queue_id": "A1B2C3", "arrival_time": 1795884555, "message_size": 366, "forced_expire": false, "sender": "sender@lab.test", "recipients": [{"address": "user@partner.test", "delay_reason": "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"}, {"address": "two@partner.test", "delay_reason": "client TLS configuration problem"}]}
{"queue_name": "active", "queue_id": "D4E5", "arrival_time": 1795884556, "message_size": 300, "forced_expire": false, "sender": "", "recipients": [{"address": "x@partner.test"}]}
`
	got, err := parsePostqueueJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []QueueEntry{
		{Queue: "deferred", ID: "A1B2C3", Sender: "sender@lab.test", Recipients: []QueueRecipient{
			{"user@partner.test", "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"},
			{"two@partner.test", "client TLS configuration problem"},
		}},
		{Queue: "active", ID: "D4E5", Recipients: []QueueRecipient{{Address: "x@partner.test"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if q, err := parsePostqueueJSON(""); err != nil || len(q) != 0 {
		t.Errorf("empty: %v %v", q, err)
	}
	if _, err := parsePostqueueJSON("Mail queue is empty\n"); err == nil || !strings.Contains(err.Error(), "postqueue -j") {
		t.Errorf("garbage: err = %v", err)
	}
}

// qfSample is a real qf file written by Sendmail 8.17.1.9 (null sender,
// two recipients, smart host down).
const qfSample = "V8\nT1795884844\nK1795884844\nN1\nP60254\nMDeferred: Connection refused by [127.0.0.1]\nFbs\n" +
	"$_localhost [127.0.0.1]\n$rESMTP\n$sclient.lab.test\n${daemon_flags}\nS<>\n" +
	"rRFC822; user@partner.test\nRPFD:<user@partner.test>\nrRFC822; other@partner.test\nRPFD:<other@partner.test>\n" +
	"H?P?Return-Path: <\x83g>\nH??Received: from client.lab.test (localhost [127.0.0.1])\n" +
	"\tby sm.lab.test (8.17.1.9/8.17.1.9) with ESMTP id 6ASGs4Ec001688;\n\tSat, 28 Nov 2026 16:54:04 GMT\n" +
	"H??Subject: RPFD:<fake@header> Mfake\n.\n"

func TestParseQF(t *testing.T) {
	got := parseQF([]byte(qfSample))
	want := QueueEntry{Sender: "", Recipients: []QueueRecipient{
		{"user@partner.test", "Deferred: Connection refused by [127.0.0.1]"},
		{"other@partner.test", "Deferred: Connection refused by [127.0.0.1]"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	got = parseQF([]byte("V8\nS<a@lab.test>\nRPF:b@partner.test\n.\n"))
	if got.Sender != "a@lab.test" || len(got.Recipients) != 1 || got.Recipients[0] != (QueueRecipient{Address: "b@partner.test"}) {
		t.Errorf("fresh qf: %+v", got)
	}
}

func TestSendmailQueueDir(t *testing.T) {
	dir := t.TempDir()
	s := &Sendmail{queueDir: dir}
	s.observer.what, s.observer.queue = "Sendmail "+dir, s.Queue
	for name, data := range map[string]string{
		"qf6ASGs4Ec001688": qfSample,
		"df6ASGs4Ec001688": "body",
		"tf6ASGs4Ec009999": "V8\nS<temp@lab.test>\n",
		"Qf6ASGs4Ec000001": "V8\nS<q@lab.test>\nRPF:<r@partner.test>\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	q, err := s.Queue()
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].ID != "6ASGs4Ec000001" || q[0].Queue != "quarantine" || q[1].ID != "6ASGs4Ec001688" || q[1].Queue != "mqueue" || len(q[1].Recipients) != 2 {
		t.Errorf("queue %+v", q)
	}
	if err := s.WaitQueueEmpty(150 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "condition not met") {
		t.Errorf("WaitQueueEmpty err = %v", err)
	}
	s.queueDir = filepath.Join(dir, "missing")
	if _, err := s.Queue(); err == nil || !strings.Contains(err.Error(), "Sendmail queue") {
		t.Errorf("missing dir err = %v", err)
	}
}

func TestNSScript(t *testing.T) {
	got := nsScript([][2]string{{"/x/etc/resolv.conf", "/etc/resolv.conf"}, {"/x/it's", "/etc/hosts"}},
		"/x/log.sock", "/x/hostdev", []string{"LD_LIBRARY_PATH=/r/lib"}, []string{"/r/sendmail", "-C", "/x/lab.cf", "-bd"})
	for _, want := range []string{
		"set -e\nmount --make-rprivate /\n",
		"mount --bind '/x/etc/resolv.conf' '/etc/resolv.conf'\n",
		`mount --bind '/x/it'\''s' '/etc/hosts'` + "\n",
		"mount -t tmpfs -o mode=755,size=1m mtalab-dev /dev\n",
		": > /dev/null\nmount --bind '/x/hostdev/null' /dev/null\n",
		"umount '/x/hostdev'\n",
		": > /dev/log\nmount --bind '/x/log.sock' /dev/log\n",
		"export 'LD_LIBRARY_PATH=/r/lib'\n",
		"exec '/r/sendmail' '-C' '/x/lab.cf' '-bd'\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("script lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(nsScript(nil, "", "", nil, []string{"true"}), "/dev") {
		t.Error("script without devLog touches /dev")
	}
}

func TestNSFiles(t *testing.T) {
	dir := t.TempDir()
	binds, err := nsFiles(dir, "mx.lab.test", "127.0.0.1", []string{"127.0.0.1 a.partner.test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(binds) != 3 || binds[0][1] != "/etc/resolv.conf" || binds[1][1] != "/etc/hosts" || binds[2][1] != "/etc/nsswitch.conf" {
		t.Fatalf("binds %v", binds)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if r := read("resolv.conf"); !strings.Contains(r, "nameserver 127.0.0.1\n") || strings.Count(r, "nameserver") != 1 {
		t.Errorf("resolv.conf:\n%s", r)
	}
	if n := read("nsswitch.conf"); !strings.Contains(n, "\nhosts: files\n") {
		t.Errorf("nsswitch.conf:\n%s", n)
	}
	h := read("hosts")
	if !strings.Contains(h, "127.0.0.1\tlocalhost\n127.0.0.1\tmx.lab.test") || !strings.Contains(h, "127.0.0.1 a.partner.test\n") {
		t.Errorf("hosts:\n%s", h)
	}
}

func TestSyslogLine(t *testing.T) {
	m := syslogLine.FindStringSubmatch("<22>Nov  8 16:39:05 sendmail[4650]: starting daemon (8.17.1.9)")
	if m == nil || m[1] != "Nov  8 16:39:05" || m[2] != "sendmail[4650]: starting daemon (8.17.1.9)" {
		t.Errorf("match %q", m)
	}
	if syslogLine.MatchString("sendmail: no priority") {
		t.Error("matched a line without <PRI>")
	}
}

func TestProcHelpers(t *testing.T) {
	self, err := newProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !self.alive() {
		t.Error("this process is not alive")
	}
	if (proc{pid: os.Getpid(), start: "1"}).alive() {
		t.Error("a different start time counts as alive (PID reuse)")
	}
	if (proc{}).alive() {
		t.Error("pid 0 alive")
	}
	ns, err := mountNS(os.Getpid())
	if err != nil || !strings.HasPrefix(ns, "mnt:[") {
		t.Errorf("mountNS = %q, %v", ns, err)
	}
	if killed := reapNS(ns, 0); killed != nil {
		t.Errorf("reapNS swept the test's own namespace: %v", killed)
	}
	pinned, err := pinNS(os.Getpid())
	if err != nil || pinned.id != ns {
		t.Errorf("pinNS = %q, %v; want %q", pinned.id, err, ns)
	}
	pinned.release()
	pinned.release() // twice is harmless
	if _, err := pinNS(-1); err == nil {
		t.Error("pinNS(-1) succeeded")
	}
	dir := t.TempDir()
	pf := filepath.Join(dir, "pid")
	os.WriteFile(pf, []byte("   4242\n/usr/sbin/x -bd\n"), 0o644)
	if pid, err := readPIDFile(pf); err != nil || pid != 4242 {
		t.Errorf("readPIDFile = %d, %v", pid, err)
	}
	os.WriteFile(pf, []byte("x\n"), 0o644)
	if _, err := readPIDFile(pf); err == nil {
		t.Error("bad pid file accepted")
	}
}

func TestListening(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	if ok, err := listening(p); err != nil || !ok {
		t.Errorf("listening(%d) = %v, %v with a listener", p, ok, err)
	}
	ln.Close()
	if ok, _ := listening(p); ok {
		t.Errorf("listening(%d) after Close", p)
	}
	if err := waitListening([]int{p}, 100*time.Millisecond); err == nil {
		t.Error("waitListening on a closed port succeeded")
	}
	a, b := FreePort(t), FreePort(t)
	if a == b || a == 0 {
		t.Errorf("FreePort gave %d and %d", a, b)
	}
}

func TestMaillog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "maillog")
	l := maillog{path}
	os.WriteFile(path, []byte("one status=sent\ntwo\n"), 0o644)
	mark := len(l.String())
	if line, err := l.wait(0, mustRe(`status=sent`), time.Second); err != nil || line != "one status=sent" {
		t.Errorf("wait = %q, %v", line, err)
	}
	if _, err := l.wait(mark, mustRe(`status=sent`), 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "two") {
		t.Errorf("wait after mark: err = %v (should carry the tail)", err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString("three status=sent\n")
		f.Close()
	}()
	if line, err := l.wait(mark, mustRe(`status=sent`), 5*time.Second); err != nil || line != "three status=sent" {
		t.Errorf("wait for a new line = %q, %v", line, err)
	}
	if tail := l.tail(2); tail != "two\nthree status=sent" {
		t.Errorf("tail %q", tail)
	}
}

func mustRe(s string) *regexp.Regexp { return regexp.MustCompile(s) }

func TestDecodeProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:2745":                         "127.0.0.1:10053",
		"00000000:0019":                         "0.0.0.0:25",
		"00000000000000000000000001000000:024B": "[00000000000000000000000001000000]:587",
	} {
		if got := decodeProcAddr(in); got != want {
			t.Errorf("decodeProcAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
