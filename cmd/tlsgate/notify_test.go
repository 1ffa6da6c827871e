package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeNotifiesSystemd runs serve under a fake systemd (NOTIFY_SOCKET
// on a unixgram socket) through a SIGHUP reload and a SIGTERM, and checks
// the sd_notify messages and their order.
func TestServeNotifiesSystemd(t *testing.T) {
	dir := t.TempDir()
	nsock := filepath.Join(dir, "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	t.Setenv("NOTIFY_SOCKET", nsock)

	conf := filepath.Join(dir, "tlsgate.toml")
	body := "mta = \"postfix\"\n[policyd]\nlisten = \"unix:" + filepath.Join(dir, "policy.sock") + "\"\n[log]\nsyslog = \"no\"\n"
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "-c", conf, "--grace", "5s"}, strings.NewReader(""), &logs, &logs)
	}()

	next := func(what string) string {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4096)
		n, err := nc.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v\nlog:\n%s", what, err, logs.String())
		}
		return string(buf[:n])
	}
	if got := next("READY=1 at start"); got != "READY=1" {
		t.Fatalf("first message %q, want READY=1", got)
	}

	before := monotonicUsec()
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	got := next("RELOADING=1")
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("on SIGHUP: %q, want RELOADING=1 and MONOTONIC_USEC=", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before || usec > monotonicUsec() {
		t.Errorf("MONOTONIC_USEC=%s is not CLOCK_MONOTONIC of the reload (between %d and now)", strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), before)
	}
	if got := next("READY=1 after reload"); got != "READY=1" {
		t.Fatalf("after reload: %q, want READY=1", got)
	}
	if !strings.Contains(logs.String(), "reload result=ok") {
		t.Errorf("READY=1 was sent before the reload was done:\n%s", logs.String())
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if got := next("STOPPING=1"); got != "STOPPING=1" {
		t.Fatalf("on SIGTERM: %q, want STOPPING=1", got)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := nc.Read(make([]byte, 4096)); err == nil {
		t.Errorf("a message after STOPPING=1 (%d bytes)", n)
	}
}
