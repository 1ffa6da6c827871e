package main

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/internal/policy"
)

// issueServerCert writes a self-signed certificate valid until notAfter
// to dir/server.crt and returns it.
func issueServerCert(t *testing.T, dir string, notBefore, notAfter time.Time) *testpki.Cert {
	t.Helper()
	c, err := testpki.Issue(dir, testpki.Options{Name: "server", NotBefore: notBefore, NotAfter: notAfter, KeyType: testpki.ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCheckExpiryRefreshesGauge calls what the daily timer calls: the
// gauge follows the clock and a certificate replaced on disk.
func TestCheckExpiryRefreshesGauge(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c := issueServerCert(t, dir, now.Add(-time.Hour), now.Add(40*24*time.Hour))
	p, err := policy.Parse("test.toml", []byte("mta = \"postfix\"\n[certs]\nserver_cert = \""+c.CertFile+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	m := metrics.New()
	tr := &trustState{log: log, m: m, level: new(slog.LevelVar)}
	// Reset detaches children: look the series up afresh each time.
	gauge := func() float64 { return testutil.ToFloat64(m.CertExpiry.WithLabelValues("server cert " + c.CertFile)) }

	for _, tc := range []struct {
		name string
		at   time.Time
	}{
		{"start", now},
		{"a day later", now.Add(24 * time.Hour)},
		{"two days later", now.Add(48 * time.Hour)},
	} {
		tr.checkExpiry(p, tc.at)
		want := c.Cert.NotAfter.Sub(tc.at).Seconds()
		if got := gauge(); math.Abs(got-want) > 1e-6 {
			t.Errorf("%s: gauge = %v, want %v", tc.name, got, want)
		}
	}
	if strings.Contains(logs.String(), "cert-expiry") {
		t.Errorf("a certificate 38 days from expiry was logged:\n%s", logs.String())
	}

	// Renewed on disk with a shorter life: picked up without a reload.
	c = issueServerCert(t, dir, now.Add(-time.Hour), now.Add(10*24*time.Hour))
	tr.checkExpiry(p, now)
	if got, want := gauge(), c.Cert.NotAfter.Sub(now).Seconds(); math.Abs(got-want) > 1e-6 {
		t.Errorf("after renewal: gauge = %v, want %v", got, want)
	}
	if n := testutil.CollectAndCount(m.CertExpiry); n != 1 {
		t.Errorf("gauge has %d series, want 1", n)
	}
	if !strings.Contains(logs.String(), "cert-expiry") || !strings.Contains(logs.String(), c.CertFile) {
		t.Errorf("a certificate 10 days from expiry was not logged:\n%s", logs.String())
	}

	// Unreadable: logged, last values kept.
	os.Remove(c.CertFile)
	tr.checkExpiry(p, now)
	if got := gauge(); got <= 0 {
		t.Errorf("gauge after a failed re-read = %v, want the last value", got)
	}
	if !strings.Contains(logs.String(), "server_cert") {
		t.Errorf("the failed re-read is not logged:\n%s", logs.String())
	}
}

// TestServeDailyExpiryRefresh runs serve with a short expiry interval and
// watches the gauge on the metrics listener follow a renewed certificate.
func TestServeDailyExpiryRefresh(t *testing.T) {
	old := expiryEvery
	expiryEvery = 50 * time.Millisecond
	defer func() { expiryEvery = old }()

	dir := t.TempDir()
	now := time.Now()
	c := issueServerCert(t, dir, now.Add(-time.Hour), now.Add(40*24*time.Hour))
	msock := filepath.Join(dir, "metrics.sock")
	conf := filepath.Join(dir, "tlsgate.toml")
	body := `mta = "postfix"
[policyd]
listen = "unix:` + filepath.Join(dir, "policy.sock") + `"
[certs]
server_cert = "` + c.CertFile + `"
[metrics]
listen = "unix:` + msock + `"
[log]
syslog = "no"
`
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "-c", conf, "--grace", "5s"}, strings.NewReader(""), &logs, &logs)
	}()
	defer func() {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d\n%s", code, logs.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("serve did not stop on SIGTERM")
		}
	}()
	waitFor(t, "start", func() bool { return strings.Contains(logs.String(), "NOQUEUE: start ") })

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", msock)
	}}}
	re := regexp.MustCompile(`(?m)^tlsgate_cert_expiry_seconds\{cert="server cert [^"]*"\} (\S+)$`)
	days := func() float64 {
		resp, err := hc.Get("http://metrics/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		page, _ := io.ReadAll(resp.Body)
		m := re.FindSubmatch(page)
		if m == nil {
			t.Fatalf("no server cert expiry gauge:\n%s", page)
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v / 86400
	}
	if d := days(); d < 39 || d > 40 {
		t.Fatalf("at start: %v days, want about 40", d)
	}
	issueServerCert(t, dir, now.Add(-time.Hour), now.Add(10*24*time.Hour))
	waitFor(t, "the timer to refresh the gauge", func() bool { d := days(); return d > 9 && d < 10 })
	if !strings.Contains(logs.String(), "cert-expiry") {
		t.Errorf("the timer did not log the soon-expiring certificate:\n%s", logs.String())
	}
}
