package milter

import (
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "milter.sock")
	group := ""
	if g, err := user.LookupGroupId(strconv.Itoa(os.Getgid())); err == nil {
		group = g.Name
	}
	l := policy.Listener{Addr: "unix:" + path, Mode: 0o640, Group: group}
	ln, err := Listen(l)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && group != "" && int(st.Gid) != os.Getgid() {
		t.Errorf("gid %d", st.Gid)
	}
	// A live socket is not taken over.
	if _, err := Listen(l); err == nil {
		t.Error("second listener on a live socket")
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	// A stale socket is replaced.
	ln, err = Listen(l)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); err == nil {
		t.Error("socket left behind after Close")
	}
	// Never remove a regular file.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(l); err == nil {
		t.Error("listened over a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "x" {
		t.Errorf("regular file damaged: %q %v", b, err)
	}
	if _, err := Listen(policy.Listener{Addr: "unix:" + filepath.Join(dir, "x.sock"), Group: "no-such-group-tlsgate"}); err == nil {
		t.Error("unknown group accepted")
	}
	if _, err := os.Lstat(filepath.Join(dir, "x.sock")); err == nil {
		t.Error("socket left behind after a failed Listen")
	}
}

func TestListenInetAndBad(t *testing.T) {
	ln, err := Listen(policy.Listener{Addr: "inet:127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := Listen(policy.Listener{Addr: "tcp:127.0.0.1:1"}); err == nil {
		t.Error("bad address accepted")
	}
}
