package demo

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// play runs f the way Run does: a Fatal ends it, cleanups run after.
func play(r *runner, f func()) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = r.catch(v)
		}
		if cerr := r.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	f()
	return nil
}

func TestRunnerCleanupOrderAndFatal(t *testing.T) {
	r := newRunner(nil)
	var order []int
	var dir string
	err := play(r, func() {
		dir = r.TempDir()
		for i := 1; i <= 3; i++ {
			r.Cleanup(func() { order = append(order, i) })
		}
		r.Cleanup(func() { panic("boom") })
		r.Fatalf("stop at %d", 42)
		t.Error("Fatalf returned")
	})
	if err == nil || !strings.Contains(err.Error(), "stop at 42") || !strings.Contains(err.Error(), "boom") {
		t.Errorf("error = %v; want the Fatalf message and the cleanup panic", err)
	}
	if got := order; len(got) != 3 || got[0] != 3 || got[1] != 2 || got[2] != 1 {
		t.Errorf("cleanup order = %v; want [3 2 1]", got)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("TempDir %s not removed: %v", dir, err)
	}
	if !r.Failed() {
		t.Error("Failed() = false after Fatalf")
	}
	if err := r.cleanup(); err == nil {
		t.Error("second cleanup forgot the errors") // errors are kept
	}
	if len(order) != 3 {
		t.Errorf("a cleanup ran twice: %v", order)
	}
}

func TestRunnerSkipIsFatal(t *testing.T) {
	r := newRunner(nil)
	err := play(r, func() { r.Skip("Postfix is not installed") })
	if err == nil || !strings.Contains(err.Error(), "Postfix is not installed") {
		t.Errorf("error = %v; want the Skip message", err)
	}
}

func TestRunnerUnimplementedMethodIsAnError(t *testing.T) {
	r := newRunner(nil)
	err := play(r, func() { r.Setenv("X", "y") }) // not implemented: nil interface
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("error = %v; want an internal error", err)
	}
}

func TestRunnerErrorfGoesOn(t *testing.T) {
	r := newRunner(nil)
	reached := false
	err := play(r, func() {
		r.Errorf("first %s", "problem")
		reached = true
	})
	if !reached || err == nil || !strings.Contains(err.Error(), "first problem") {
		t.Errorf("reached=%v error=%v", reached, err)
	}
}

func TestHeaderLines(t *testing.T) {
	msg := "Received: from a\r\n\tby b;\r\n\tdate\r\nSubject: x\r\n\r\nbody\r\nNot: a header\r\n"
	got := headerLines([]byte(msg))
	want := []string{"Received: from a\n    by b;\n    date", "Subject: x"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("headerLines = %q; want %q", got, want)
	}
}

func TestPostfixLine(t *testing.T) {
	for in, want := range map[string]string{
		"Nov 28 16:59:54 mx.lab.test postfix/smtp[13187]: 961D29862F5: to=<a@b>": "postfix/smtp[13187]: 961D29862F5: to=<a@b>",
		"Dec  1 01:02:03 mx postfix/smtpd[1]: x":                                 "postfix/smtpd[1]: x",
		"no prefix":                                                              "no prefix",
	} {
		if got := postfixLine(in); got != want {
			t.Errorf("postfixLine(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestSummaryString(t *testing.T) {
	want := "accepted and stamped: 1, refused: 2, delivered over verified TLS: 1, kept in queue: 1"
	if got := Want.String(); got != want {
		t.Errorf("Want.String() = %q; want %q", got, want)
	}
}

func TestConfigTemplateLoads(t *testing.T) {
	path := t.TempDir() + "/tlsgate.toml"
	if err := writeConfig(path, configValues{MilterPort: 1, SocketmapPort: 2, CABundle: "/ca.pem",
		ServerCert: "/s.crt", ServerKey: "/s.key", IssuerCN: caName}); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		t.Fatalf("the demo's policy file does not load: %v", err)
	}
	if len(p.Endpoints) != 2 || p.Endpoints[0].Inbound.IssuerCN != caName {
		t.Errorf("endpoints = %+v", p.Endpoints)
	}
	for key, want := range map[string]string{
		"[" + bServerName + "]:2525": "OK secure match=" + bServerName,
		"[" + cServerName + "]:2526": "OK encrypt",
		"[127.0.0.1]:2527":           "NOTFOUND", // our mailbox server
	} {
		a, err := p.At(time.Now()).Outbound(key)
		got := "NOTFOUND"
		if a.Found {
			got = "OK " + a.Text
		}
		if err != nil || !strings.HasPrefix(got, want) {
			t.Errorf("Outbound(%q) = %q, %v; want %q...", key, got, err, want)
		}
	}
}
