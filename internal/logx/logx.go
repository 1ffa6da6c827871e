// Package logx formats tlsgate's log lines the way Postfix administrators
// grep them: one line per event, starting with the queue ID (or NOQUEUE),
// then the event name and key=value pairs, quoted only when needed:
//
//	4BC3D1E2F: tls-policy: client=mx1.b.example[192.0.2.10] endpoint=b result=fail action=defer reason="..."
//
// Lines go to syslog (facility mail, tag tlsgate) or, without a syslog
// socket, to stderr. When stderr is connected to the journal (systemd sets
// JOURNAL_STREAM to the device and inode of that stream), each line starts
// with a "<N>" severity prefix that journald and systemd's
// SyslogLevelPrefix understand; anywhere else (a terminal, a file, a pipe)
// the prefix would only be noise, so it is left out. No timestamp is
// written: syslog and journald add their own.
package logx

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// QueueIDKey is the attribute that, when present, opens the line instead
// of NOQUEUE.
const QueueIDKey = "queue_id"

// syslogNetwork and syslogAddr are where New sends syslog lines. Empty
// (the default) means the local syslog daemon, as syslog.New finds it
// (/dev/log); tests point them at a socket of their own.
var syslogNetwork, syslogAddr string

// Handler is a slog.Handler writing Postfix-style lines.
type Handler struct {
	mu     *sync.Mutex
	out    io.Writer      // stderr-style output, or nil
	sevPfx bool           // out is the journal: start lines with "<N>"
	sys    *syslog.Writer // syslog output, or nil
	level  slog.Leveler
	prefix []slog.Attr // from WithAttrs
	group  string
}

// Options configure New.
type Options struct {
	// Level is the minimum level (default info).
	Level slog.Leveler
	// Syslog is "yes", "no" or "auto" (default: syslog when /dev/log
	// accepts a connection, else Stderr).
	Syslog string
	// Tag is the syslog tag (default "tlsgate").
	Tag string
	// Stderr is the fallback writer (required unless Syslog is "yes").
	// Lines written to it carry a "<N>" severity prefix only when it is
	// an *os.File that is the journal stream systemd names in
	// JOURNAL_STREAM (see [IsJournal]).
	Stderr io.Writer
}

// New returns a handler per opts. With Syslog "yes" an unreachable syslog
// is an error; with "auto" it falls back to Stderr.
func New(opts Options) (*Handler, error) {
	h := &Handler{mu: &sync.Mutex{}, level: opts.Level}
	if h.level == nil {
		h.level = slog.LevelInfo
	}
	tag := opts.Tag
	if tag == "" {
		tag = "tlsgate"
	}
	if opts.Syslog != "no" {
		// The severity is replaced per line; the facility stays mail.
		w, err := syslog.Dial(syslogNetwork, syslogAddr, syslog.LOG_MAIL|syslog.LOG_INFO, tag)
		switch {
		case err == nil:
			h.sys = w
			return h, nil
		case opts.Syslog == "yes":
			return nil, fmt.Errorf("logx: syslog: %w", err)
		}
	}
	if opts.Stderr == nil {
		return nil, fmt.Errorf("logx: no syslog and no stderr writer")
	}
	h.out = opts.Stderr
	if f, ok := opts.Stderr.(*os.File); ok {
		h.sevPfx = IsJournal(f, os.Getenv("JOURNAL_STREAM"))
	}
	return h, nil
}

// IsJournal reports whether f is the stream journalStream names.
// systemd sets JOURNAL_STREAM to "DEVICE:INODE" (decimal) of the stream it
// connected a service's stdout or stderr to; the variable is inherited by
// children whose output goes elsewhere, so only a matching fstat of f
// itself counts.
func IsJournal(f *os.File, journalStream string) bool {
	devS, inoS, ok := strings.Cut(journalStream, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devS, 10, 64)
	ino, err2 := strconv.ParseUint(inoS, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// NewWriter returns a handler writing lines to w without severity prefixes
// (for tests and tools).
func NewWriter(w io.Writer, level slog.Leveler) *Handler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &Handler{mu: &sync.Mutex{}, out: w, level: level}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.prefix = append(append([]slog.Attr(nil), h.prefix...), qualify(h.group, as)...)
	return &c
}

// WithGroup implements slog.Handler; groups prefix keys with "group.".
func (h *Handler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}

func qualify(group string, as []slog.Attr) []slog.Attr {
	if group == "" {
		return as
	}
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = slog.Attr{Key: group + "." + a.Key, Value: a.Value}
	}
	return out
}

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	line := Format(r.Message, h.attrs(r))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sys != nil {
		switch {
		case r.Level >= slog.LevelError:
			return h.sys.Err(line)
		case r.Level >= slog.LevelWarn:
			return h.sys.Warning(line)
		case r.Level >= slog.LevelInfo:
			return h.sys.Info(line)
		default:
			return h.sys.Debug(line)
		}
	}
	if h.sevPfx {
		line = severityPrefix(r.Level) + line
	}
	_, err := io.WriteString(h.out, line+"\n")
	return err
}

func (h *Handler) attrs(r slog.Record) []slog.Attr {
	as := make([]slog.Attr, 0, len(h.prefix)+r.NumAttrs())
	as = append(as, h.prefix...)
	var rec []slog.Attr
	r.Attrs(func(a slog.Attr) bool {
		rec = append(rec, a)
		return true
	})
	return append(as, qualify(h.group, rec)...)
}

// severityPrefix is the sd-daemon(3) "<N>" prefix for l.
func severityPrefix(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

// Format renders one line: "QUEUEID: msg k=v k2=v2". The queue_id
// attribute (or NOQUEUE) opens the line; other attributes follow in order.
func Format(msg string, as []slog.Attr) string {
	var b strings.Builder
	qid := "NOQUEUE"
	for _, a := range as {
		if a.Key == QueueIDKey {
			if s := a.Value.String(); s != "" {
				qid = s
			}
		}
	}
	b.WriteString(Quote(qid))
	b.WriteString(": ")
	b.WriteString(msg)
	for _, a := range as {
		if a.Key == QueueIDKey {
			continue
		}
		appendAttr(&b, "", a)
	}
	return b.String()
}

func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if prefix != "" {
		key = prefix + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			appendAttr(b, key, g)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(key)
	b.WriteByte('=')
	b.WriteString(Quote(a.Value.String()))
}

// Quote returns s unchanged when it is a plain printable-ASCII token, else
// a Go-quoted ASCII string: values with spaces, quotes, '=', control
// characters or any non-ASCII byte can never break a line, forge a key or
// smuggle bytes a log parser would choke on.
func Quote(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}
