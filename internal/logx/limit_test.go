package logx

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuf is a log destination safe for the report timer's goroutine.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSuffix(l.b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// handle logs one record at time t through h.
func handle(h slog.Handler, t time.Time, lvl slog.Level, msg string, args ...any) {
	r := slog.NewRecord(t, lvl, msg, 0)
	r.Add(args...)
	h.Handle(context.Background(), r)
}

func TestLimit(t *testing.T) {
	var out lockedBuf
	h := Limit(NewWriter(&out, slog.LevelDebug), LimitOptions{Name: "socketmap", Burst: 5, Every: time.Second, Repeat: time.Minute, Report: 50 * time.Millisecond})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	// Info and debug lines are never limited.
	for i := range 50 {
		handle(h, t0, slog.LevelInfo, "lookup", "key", strconv.Itoa(i))
	}
	if n := len(out.lines()); n != 50 {
		t.Fatalf("%d info lines passed, want 50", n)
	}
	// 100 different warnings at once: the burst passes.
	for i := range 100 {
		handle(h, t0, slog.LevelWarn, "bad key", "key", strconv.Itoa(i))
	}
	if n := len(out.lines()); n != 55 {
		t.Fatalf("%d lines after 100 different warnings, want 50 + a burst of 5", n)
	}
	// One second later one more passes.
	handle(h, t0.Add(time.Second), slog.LevelWarn, "bad key", "key", "new")
	handle(h, t0.Add(time.Second), slog.LevelWarn, "bad key", "key", "newer")
	if l := out.lines(); len(l) != 56 || !strings.Contains(l[55], "key=new") {
		t.Fatalf("after a second: %d lines, last %q", len(l), l[len(l)-1])
	}
	// The count of dropped warnings is reported.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(strings.Join(out.lines(), "\n"), "log-limit") {
		if time.Now().After(deadline) {
			t.Fatal("no log-limit line")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l := out.lines()
	if last := l[len(l)-1]; !strings.Contains(last, "NOQUEUE: log-limit source=socketmap dropped=96 ") {
		t.Fatalf("report line %q, want 96 dropped", last)
	}
}

func TestLimitRepeats(t *testing.T) {
	var out lockedBuf
	h := Limit(NewWriter(&out, slog.LevelDebug), LimitOptions{Name: "socketmap", Burst: 100, Repeat: time.Minute, Report: time.Hour})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := strings.Repeat("\x01", 200)
	for i := range 1000 {
		handle(h, t0.Add(time.Duration(i)*time.Millisecond), slog.LevelWarn, "tls-policy-lookup", "key", key, "answer", "TEMP")
	}
	// A different key, and the same key from another derived handler, pass.
	handle(h, t0, slog.LevelWarn, "tls-policy-lookup", "key", "other", "answer", "TEMP")
	handle(h.WithAttrs([]slog.Attr{slog.String("listener", "b")}), t0, slog.LevelWarn, "tls-policy-lookup", "key", key, "answer", "TEMP")
	if n := len(out.lines()); n != 3 {
		t.Fatalf("%d lines for 1000 identical warnings and 2 others, want 3:\n%s", n, strings.Join(out.lines(), "\n"))
	}
	// After the repeat interval it is logged again, with the count.
	handle(h, t0.Add(time.Minute+time.Second), slog.LevelWarn, "tls-policy-lookup", "key", key, "answer", "TEMP")
	l := out.lines()
	if len(l) != 4 || !strings.HasSuffix(l[3], " repeated=999") {
		t.Fatalf("the repeat after a minute: %q", l[len(l)-1])
	}
}
