package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/listen"
)

func startServer(t *testing.T, h Handler) (string, context.CancelFunc, chan error) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "control.sock")
	ln, err := listen.Open("unix:"+path, 0o600, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return path, cancel, done
}

// TestControl: commands and their answers, errors, a socket only its
// owner may use, hostile requests, and a clean stop.
func TestControl(t *testing.T) {
	defer func(d time.Duration) { requestTimeout = d }(requestTimeout)
	requestTimeout = 200 * time.Millisecond
	inSlow := make(chan struct{}, 1)
	path, cancel, done := startServer(t, func(ctx context.Context, cmd string, args []string) ([]string, error) {
		switch cmd {
		case "show":
			return []string{"domain: " + strings.Join(args, ","), "evil: a\x1b[2Jb\nc"}, nil
		case "slow":
			inSlow <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, errors.New("unknown command " + cmd)
	})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v %v, want a socket of mode 0600", path, fi.Mode(), err)
	}
	ctx := context.Background()
	lines, err := Ask(ctx, path, "show", "example.com")
	if err != nil || len(lines) != 2 || lines[0] != "domain: example.com" || lines[1] != "evil: a?[2Jb?c" {
		t.Errorf("show: %q %v", lines, err)
	}
	if _, err := Ask(ctx, path, "frob"); err == nil || err.Error() != "unknown command frob" {
		t.Errorf("frob: %v", err)
	}
	if _, err := Ask(ctx, path, "show", "a b"); err == nil {
		t.Error("an argument with a blank was sent")
	}
	// A request over the limit gets an error, not a hang.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	go c.Write([]byte(strings.Repeat("x", 3*MaxRequest)))
	buf := make([]byte, 200)
	n, _ := c.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "ERR request longer than") {
		t.Errorf("long request: %q", buf[:n])
	}
	c.Close()
	// A silent client is dropped after the request timeout.
	c, err = net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * requestTimeout))
	n, err = c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "ERR") {
		t.Errorf("silent client: %q %v", buf[:n], err)
	}
	c.Close()
	// Stopping ends a command in flight and closes the socket.
	slow := make(chan error, 1)
	go func() { _, err := Ask(ctx, path, "slow"); slow <- err }()
	<-inSlow
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := <-slow; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("slow command after stop: %v", err)
	}
	if _, err := Ask(ctx, path, "show", "x"); err == nil {
		t.Error("the socket still answers after stop")
	}
}
