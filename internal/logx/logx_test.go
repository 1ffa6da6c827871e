package logx

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		as   []slog.Attr
		want string
	}{
		{"noqueue", "tls-policy-lookup", []slog.Attr{slog.String("map", "tlspolicy"), slog.String("key", "[mx.b.example]:25"), slog.String("answer", "OK secure match=mx.b.example")},
			`NOQUEUE: tls-policy-lookup map=tlspolicy key=[mx.b.example]:25 answer="OK secure match=mx.b.example"`},
		{"queue id first", "tls-policy", []slog.Attr{slog.String("client", "x[192.0.2.1]"), slog.String(QueueIDKey, "4BC3D1E2F"), slog.Int("bits", 256)},
			`4BC3D1E2F: tls-policy client=x[192.0.2.1] bits=256`},
		{"hostile value", "m", []slog.Attr{slog.String("cn", "evil\r\nX-Injected: 1"), slog.String("e", "a=b"), slog.String("empty", "")},
			`NOQUEUE: m cn="evil\r\nX-Injected: 1" e="a=b" empty=""`},
		{"utf8 and invalid", "m", []slog.Attr{slog.String("cn", "münchen"), slog.String("bad", "\xff")},
			`NOQUEUE: m cn="m\u00fcnchen" bad="\xff"`},
		{"group", "m", []slog.Attr{slog.Group("tls", slog.String("version", "TLSv1.3"))}, `NOQUEUE: m tls.version=TLSv1.3`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Format(tc.msg, tc.as); got != tc.want {
				t.Errorf("Format =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestHandlerStderr(t *testing.T) {
	var b bytes.Buffer
	h, err := New(Options{Syslog: "no", Stderr: &b, Level: slog.LevelInfo})
	if err != nil {
		t.Fatal(err)
	}
	l := slog.New(h).With(QueueIDKey, "ABC")
	l.Debug("hidden")
	l.Warn("reload", "result", "failed")
	l.WithGroup("g").Info("x", "k", "v")
	want := "ABC: reload result=failed\nABC: x g.k=v\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	if _, err := New(Options{Syslog: "no"}); err == nil || !strings.Contains(err.Error(), "no syslog") {
		t.Errorf("missing stderr: %v", err)
	}
}

// journalStream is JOURNAL_STREAM as systemd would set it for f.
func journalStream(t *testing.T, f *os.File) string {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// TestSeverityPrefixOnlyForTheJournal: "<N>" prefixes are written only
// when the stderr file is the stream JOURNAL_STREAM names, never to a
// file, pipe or buffer that merely inherited the variable.
func TestSeverityPrefixOnlyForTheJournal(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	journal, other := open("journal"), open("other")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); pw.Close() })
	const plain = "NOQUEUE: reload result=failed\nNOQUEUE: x k=v\n"
	const prefixed = "<4>NOQUEUE: reload result=failed\n<6>NOQUEUE: x k=v\n"
	tests := []struct {
		name string
		out  *os.File
		env  string // JOURNAL_STREAM; "=journal" means journal's dev:ino
		want string
	}{
		{"journal", journal, "=journal", prefixed},
		{"unset", journal, "", plain},
		{"another stream", other, "=journal", plain},
		{"pipe under a journal service", pw, "=journal", plain},
		{"inode mismatch", journal, "=journal+1", plain},
		{"garbage", journal, "x:y", plain},
		{"no colon", journal, "12345", plain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			switch env {
			case "=journal":
				env = journalStream(t, journal)
			case "=journal+1":
				dev, ino, _ := strings.Cut(journalStream(t, journal), ":")
				n, _ := strconv.ParseUint(ino, 10, 64)
				env = fmt.Sprintf("%s:%d", dev, n+1)
			}
			t.Setenv("JOURNAL_STREAM", env)
			start, err := tc.out.Seek(0, io.SeekEnd)
			if err != nil && tc.out != pw {
				t.Fatal(err)
			}
			h, err := New(Options{Syslog: "no", Stderr: tc.out})
			if err != nil {
				t.Fatal(err)
			}
			l := slog.New(h)
			l.Warn("reload", "result", "failed")
			l.Info("x", "k", "v")
			var got string
			if tc.out == pw {
				buf := make([]byte, 4096)
				n, err := pr.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got = string(buf[:n])
				if len(got) < len(tc.want) {
					m, _ := pr.Read(buf)
					got += string(buf[:m])
				}
			} else {
				b, err := os.ReadFile(tc.out.Name())
				if err != nil {
					t.Fatal(err)
				}
				got = string(b[start:])
			}
			if got != tc.want {
				t.Errorf("JOURNAL_STREAM=%q: got %q, want %q", env, got, tc.want)
			}
		})
	}
	// A writer that is not a file is never the journal.
	t.Setenv("JOURNAL_STREAM", journalStream(t, journal))
	var b bytes.Buffer
	h, err := New(Options{Syslog: "no", Stderr: &b})
	if err != nil {
		t.Fatal(err)
	}
	slog.New(h).Info("x")
	if b.String() != "NOQUEUE: x\n" {
		t.Errorf("buffer: got %q", b.String())
	}
}

// listenSyslog points New at a unixgram socket in a temporary directory
// and returns it, for the duration of the test.
func listenSyslog(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "log")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	oldNet, oldAddr := syslogNetwork, syslogAddr
	syslogNetwork, syslogAddr = "unixgram", path
	t.Cleanup(func() { syslogNetwork, syslogAddr = oldNet, oldAddr })
	return c
}

func TestHandlerSyslog(t *testing.T) {
	sock := listenSyslog(t)
	var stderr bytes.Buffer
	h, err := New(Options{Syslog: "yes", Stderr: &stderr, Level: slog.LevelDebug})
	if err != nil {
		t.Fatal(err)
	}
	l := slog.New(h)
	const mail = 2 << 3 // LOG_MAIL: facility 2
	for _, tc := range []struct {
		log  func(string, ...any)
		name string
		pri  int
	}{
		{l.Debug, "debug", mail + 7},
		{l.Info, "info", mail + 6},
		{l.Warn, "warn", mail + 4},
		{l.Error, "error", mail + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.log("reload", QueueIDKey, "4BC3D1E2F", "result", tc.name)
			sock.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			n, err := sock.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got := string(buf[:n])
			// <PRI>TIMESTAMP [HOSTNAME ]tlsgate[PID]: LINE
			re := regexp.MustCompile(`^<(\d+)>\S.* tlsgate\[(\d+)\]: (.*?)\n?$`)
			m := re.FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("not a syslog line with tag tlsgate[PID]: %q", got)
			}
			if m[1] != strconv.Itoa(tc.pri) {
				t.Errorf("<PRI> = %s, want %d (mail.%s)", m[1], tc.pri, tc.name)
			}
			if m[2] != strconv.Itoa(os.Getpid()) {
				t.Errorf("tag PID %s, want %d", m[2], os.Getpid())
			}
			if want := "4BC3D1E2F: reload result=" + tc.name; m[3] != want {
				t.Errorf("message %q, want %q", m[3], want)
			}
		})
	}
	if stderr.Len() != 0 {
		t.Errorf("syslog lines also went to stderr: %q", stderr.String())
	}
}

func TestHandlerSyslogUnreachable(t *testing.T) {
	oldNet, oldAddr := syslogNetwork, syslogAddr
	syslogNetwork, syslogAddr = "unixgram", filepath.Join(t.TempDir(), "no-such-log")
	defer func() { syslogNetwork, syslogAddr = oldNet, oldAddr }()

	if _, err := New(Options{Syslog: "yes"}); err == nil || !strings.Contains(err.Error(), "logx: syslog:") {
		t.Errorf(`Syslog "yes" without a syslog socket: err = %v, want a logx: syslog: error`, err)
	}
	var stderr bytes.Buffer
	h, err := New(Options{Syslog: "auto", Stderr: &stderr})
	if err != nil {
		t.Fatalf(`Syslog "auto" must fall back to stderr: %v`, err)
	}
	slog.New(h).Error("stop", "error", "x")
	if want := "NOQUEUE: stop error=x\n"; stderr.String() != want { // a buffer is not the journal: no "<3>"
		t.Errorf("fallback wrote %q, want %q", stderr.String(), want)
	}
}
