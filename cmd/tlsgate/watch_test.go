package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeHeldMailWatch runs serve in this process with a stand-in for
// postqueue and postconf (scripts printing a queue listing; the real ones
// are used by internal/lab/e2e's held-mail tests) and walks the watch
// through its states: an endpoint starts holding mail, the listing
// overruns queue_timeout (logged once, the state kept), the queue is
// readable again and empty (released), then a reload turns the watch off
// (its series go).
func TestServeHeldMailWatch(t *testing.T) {
	poll := watchPoll
	watchPoll = 50 * time.Millisecond
	dir := t.TempDir()
	script := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script("postconf", `printf '\n\n'`) // no transport_maps, no relayhost
	held := `{"queue_name": "deferred", "queue_id": "4BC3D1E2F", "arrival_time": ` + fmt.Sprint(time.Now().Add(-time.Hour).Unix()) +
		`, "message_size": 500, "sender": "a@lab.test", "recipients": [{"address": "x@b.example", "delay_reason": "Server certificate not verified"}]}`
	script("postqueue", "echo '"+held+"'")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(dir, "tlsgate.toml")
	write := func(interval string) {
		os.WriteFile(conf, []byte(fmt.Sprintf(`mta = "postfix"
[policyd]
listen = "unix:%s/policy.sock"
[log]
syslog = "no"
[metrics]
listen = "inet:%s"
[watch]
held_interval = %q
queue_timeout = "1s"
postqueue = "%s/postqueue"
[[endpoint]]
name = "b"
hosts = ["b.example"]
  [endpoint.outbound]
  encryption = true
`, dir, metricsAddr, interval, dir)), 0o644)
	}
	write("1s")
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"serve", "-c", conf, "--grace", "5s"}, strings.NewReader(""), &logs, &logs)
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
			<-done
		}
		watchPoll = poll
	})
	mark := 0
	wait := func(what string) string {
		t.Helper()
		re := regexp.MustCompile(what)
		var line string
		waitFor(t, what, func() bool {
			rest := logs.String()[mark:]
			for off := 0; off < len(rest); {
				l, _, _ := strings.Cut(rest[off:], "\n")
				if re.MatchString(l) {
					line, mark = l, mark+off+len(l)
					return true
				}
				off += len(l) + 1
			}
			return false
		})
		return line
	}
	metric := func(series string) string {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, series+" "); ok {
				return v
			}
		}
		return ""
	}

	line := wait(`held-mail endpoint=b state=holding`)
	if !regexp.MustCompile(`messages=1 recipients=1 oldest=\S+ age=1h0m\d+s cause=not-verified reason="Server certificate not verified"$`).MatchString(line) {
		t.Errorf("holding: %s", line)
	}
	if v := metric(`tlsgate_held_messages{endpoint="b"}`); v != "1" {
		t.Errorf("tlsgate_held_messages = %q", v)
	}

	script("postqueue", "exec sleep 30")
	wait(`held-mail-queue result=failed error="mailq: .*postqueue -j: no answer within 1s"`)
	time.Sleep(2500 * time.Millisecond) // two more rounds that fail alike
	if n := strings.Count(logs.String(), "held-mail-queue result=failed"); n != 1 {
		t.Errorf("%d held-mail-queue failure lines, want 1", n)
	}
	if v := metric(`tlsgate_held_messages{endpoint="b"}`); v != "1" {
		t.Errorf("after failed readings tlsgate_held_messages = %q, want the last value", v)
	}

	script("postqueue", "true")
	wait(`held-mail-queue result=ok messages=0`)
	wait(`held-mail endpoint=b state=released held_for=\d+s`)
	if v := metric(`tlsgate_held_messages{endpoint="b"}`); v != "" {
		t.Errorf("after the release tlsgate_held_messages = %q", v)
	}

	script("postqueue", "echo '"+held+"'")
	wait(`held-mail endpoint=b state=holding`)
	write("off")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	wait(`held-mail state=off`)
	if v := metric(`tlsgate_held_messages{endpoint="b"}`); v != "" {
		t.Errorf("with the watch off tlsgate_held_messages = %q", v)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	stopped = true
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}
