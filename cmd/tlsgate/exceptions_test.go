package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/internal/policy"
)

func exceptionPolicy(t *testing.T, expires string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("/etc/tlsgate/tlsgate.toml", []byte(labsException("postfix", expires)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExceptionWatch: the end of an exception is logged once, at the
// instant it ends (the timer is set to it), also across reloads of the
// same file; an exception given a new date is a new one. The metric
// follows the policy in force.
func TestExceptionWatch(t *testing.T) {
	var buf bytes.Buffer
	m := metrics.New()
	w := newExceptionWatch(slog.New(logx.NewWriter(&buf, slog.LevelInfo)), m)
	defer w.stop()
	end := time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC)
	p := exceptionPolicy(t, "2027-01-31T12:00:00Z")

	if wait := w.tick(p, end.Add(-10*time.Second)); wait != 10*time.Second || buf.Len() != 0 {
		t.Fatalf("10 s before the end: wait %v, logged %q", wait, buf.String())
	}
	if got := testutil.ToFloat64(m.ExceptionExpiry.WithLabelValues("labs", "company-b")); got != float64(end.Unix()) {
		t.Errorf("metric %v, want %v", got, end.Unix())
	}
	if wait := w.tick(p, end.Add(-2*time.Hour)); wait != exceptionCheckMax {
		t.Errorf("2 h before the end: wait %v, want %v", wait, exceptionCheckMax)
	}
	w.tick(p, end)
	const want = `NOQUEUE: exception-ended endpoint=labs exception_to=company-b expires=2027-01-31T12:00:00Z directions=inbound effect="company-b's rules apply to labs's hosts; remove exception_to, reason and expires, or the endpoint" file=/etc/tlsgate/tlsgate.toml line=11 reason=CHG-4711` + "\n"
	if buf.String() != want {
		t.Fatalf("at the end logged\n%q, want\n%q", buf.String(), want)
	}
	w.tick(p, end.Add(time.Second))
	w.tick(exceptionPolicy(t, "2027-01-31T12:00:00Z"), end.Add(time.Minute)) // a reload of the same file
	if n := strings.Count(buf.String(), "exception-ended"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, buf.String())
	}
	later := exceptionPolicy(t, "2027-02-28T12:00:00Z")
	if wait := w.tick(later, end.Add(2*time.Minute)); wait != exceptionCheckMax || strings.Count(buf.String(), "exception-ended") != 1 {
		t.Errorf("extended exception: wait %v, log\n%s", wait, buf.String())
	}
	if got := testutil.ToFloat64(m.ExceptionExpiry.WithLabelValues("labs", "company-b")); got != float64(time.Date(2027, 2, 28, 12, 0, 0, 0, time.UTC).Unix()) {
		t.Errorf("metric after the reload %v", got)
	}
	w.tick(later, time.Date(2027, 2, 28, 12, 0, 0, 0, time.UTC))
	if n := strings.Count(buf.String(), "exception-ended"); n != 2 {
		t.Errorf("the extended exception's end: %d lines:\n%s", n, buf.String())
	}

	// A date ends at midnight where the daemon is: already ended at
	// start, it is logged at once.
	var buf2 bytes.Buffer
	w2 := newExceptionWatch(slog.New(logx.NewWriter(&buf2, slog.LevelInfo)), nil)
	defer w2.stop()
	w2.tick(exceptionPolicy(t, "2027-01-31"), time.Date(2027, 1, 31, 0, 0, 1, 0, time.FixedZone("CET", 3600)))
	if !strings.Contains(buf2.String(), "exception-ended endpoint=labs exception_to=company-b expires=2027-01-31 ") {
		t.Errorf("ended at start: %q", buf2.String())
	}
}
