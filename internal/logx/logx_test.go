package logx

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
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
	want := "<4>ABC: reload result=failed\n<6>ABC: x g.k=v\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
	if _, err := New(Options{Syslog: "no"}); err == nil || !strings.Contains(err.Error(), "no syslog") {
		t.Errorf("missing stderr: %v", err)
	}
}
