package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/policyd"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestServeReload runs serve in this process, reloads it with SIGHUP
// (a bad file keeps the old policy, a good one replaces it) and stops it
// with SIGTERM.
func TestServeReload(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "policy.sock")
	conf := filepath.Join(dir, "tlsgate.toml")
	write := func(body string) {
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := func(host, level string) string {
		return `mta = "postfix"
[policyd]
listen = "unix:` + sock + `"
[log]
syslog = "no"
[[endpoint]]
name = "p"
hosts = ["` + host + `"]
  [endpoint.outbound]
` + level + "\n"
	}
	write(good("a.example", "encryption = true"))
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "-c", conf, "--grace", "5s"}, strings.NewReader(""), &logs, &logs)
	}()
	waitFor(t, "start", func() bool { return strings.Contains(logs.String(), "NOQUEUE: start ") })

	ask := func(key string) string { return askSocketmap(t, sock, key) }
	if got := ask("a.example"); got != "OK encrypt" {
		t.Fatalf("before reload: %q", got)
	}
	write("mta = \"postfix\"\n[[endpoint]]\nname = \"p\"\nhosts = [\"a.example\"]\n  [endpoint.outbound]\n  min_bits = 512\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "failed reload", func() bool { return strings.Contains(logs.String(), "reload result=failed") })
	if !strings.Contains(logs.String(), "min_bits = 512 is out of range") {
		t.Errorf("the failed reload does not say why:\n%s", logs.String())
	}
	if got := ask("a.example"); got != "OK encrypt" {
		t.Fatalf("after a bad reload the old policy must stay: %q", got)
	}
	write(good("b.example", "validate_cert = true"))
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "good reload", func() bool { return strings.Contains(logs.String(), "reload result=ok") })
	if got := ask("b.example"); got != "OK verify match=hostname" {
		t.Errorf("new policy: %q", got)
	}
	if got := ask("a.example"); got != "NOTFOUND " {
		t.Errorf("old entry after reload: %q", got)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("socket left behind after stop")
	}
}

// askSocketmap asks the daemon's socketmap at the unix socket sock for key
// on the map tlspolicy and returns the reply as sent.
func askSocketmap(t *testing.T, sock, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := policyd.DialSocketmap(ctx, "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Lookup(ctx, "tlspolicy", key)
	if err != nil {
		t.Fatal(err)
	}
	return r.String()
}

func TestServeBadConfigExits2(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "bad.toml")
	os.WriteFile(conf, []byte("mta = \"postfix\"\n[milter]\nlisten = \"tcp:1\"\n"), 0o644)
	_, errs, code := runCLI(t, "serve", "-c", conf)
	if code != exitUsage || !strings.Contains(errs, conf+":3:") {
		t.Errorf("code %d stderr %q", code, errs)
	}
	os.WriteFile(conf, []byte("mta = \"postfix\"\n"), 0o644)
	if _, errs, code := runCLI(t, "serve", "-c", conf); code != exitUsage || !strings.Contains(errs, "nothing to serve") {
		t.Errorf("nothing to serve: code %d %q", code, errs)
	}
}

// TestServeRefusesUnsafeSocketDir: a socket directory other users may
// write to stops serve at start (exit 3) with the reason, and nothing is
// left listening: not the unsafe socket, nor one opened before it.
func TestServeRefusesUnsafeSocketDir(t *testing.T) {
	dir := t.TempDir()
	unsafe := filepath.Join(dir, "open")
	if err := os.Mkdir(unsafe, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(unsafe, 0o777); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "tlsgate.toml")
	os.WriteFile(conf, []byte(`mta = "postfix"
[milter]
listen = "unix:`+dir+`/milter.sock"
[policyd]
listen = "unix:`+unsafe+`/policy.sock"
[log]
syslog = "no"
`), 0o644)
	_, errs, code := runCLI(t, "serve", "-c", conf)
	if code != exitRuntime || !strings.Contains(errs, "socketmap: listen unix:"+unsafe+"/policy.sock: socket directory "+unsafe+" (mode 0777) is writable by all users") {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	for _, p := range []string{dir + "/milter.sock", unsafe + "/policy.sock"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
}
