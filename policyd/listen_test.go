package policyd

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		spec, network, addr string
		errSub              string
	}{
		{spec: "unix:/run/tlsgate/policy.sock", network: "unix", addr: "/run/tlsgate/policy.sock"},
		{spec: "unix:/run//tlsgate/./policy.sock", network: "unix", addr: "/run/tlsgate/policy.sock"},
		{spec: "inet:127.0.0.1:10031", network: "tcp", addr: "127.0.0.1:10031"},
		{spec: "inet:127.0.0.2:0", network: "tcp", addr: "127.0.0.2:0"},
		{spec: "inet:[::1]:10031", network: "tcp", addr: "[::1]:10031"},
		{spec: "unix:relative.sock", errSub: "absolute"},
		{spec: "unix:", errSub: "absolute"},
		{spec: "unix:/a\x00b", errSub: "NUL"},
		{spec: "inet:0.0.0.0:10031", errSub: "not a loopback"},
		{spec: "inet:192.0.2.1:10031", errSub: "not a loopback"},
		{spec: "inet:[::]:10031", errSub: "not a loopback"},
		{spec: "inet:localhost:10031", errSub: "not an IP address"},
		{spec: "inet:[fe80::1%lo]:10031", errSub: "not an IP address"},
		{spec: "inet:127.0.0.1", errSub: "want inet:"},
		{spec: "inet:::1:10031", errSub: "want inet:"},
		{spec: "inet:127.0.0.1:70000", errSub: "bad port"},
		{spec: "inet:127.0.0.1:-1", errSub: "bad port"},
		{spec: "inet:127.0.0.1:010", errSub: "bad port"},
		{spec: "inet:127.0.0.1:", errSub: "bad port"},
		{spec: "inet:10031@127.0.0.1", errSub: "want inet:"},
		{spec: "local:/run/x.sock", errSub: "want unix:/path"},
		{spec: "tcp:127.0.0.1:1", errSub: "want unix:/path"},
		{spec: "/run/x.sock", errSub: "want unix:/path"},
		{spec: "", errSub: "want unix:/path"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			checkAgrees(t, tc.spec, tc.errSub == "")
			network, addr, err := parseSpec(tc.spec)
			if tc.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSub) || !strings.HasPrefix(err.Error(), "policyd: ") {
					t.Fatalf("parseSpec(%q) = %q, %q, %v; want error containing %q", tc.spec, network, addr, err, tc.errSub)
				}
				if _, err := Listen(tc.spec, 0, ""); err == nil {
					t.Fatalf("Listen(%q) succeeded", tc.spec)
				}
				return
			}
			if err != nil || network != tc.network || addr != tc.addr {
				t.Fatalf("parseSpec(%q) = %q, %q, %v; want %q, %q", tc.spec, network, addr, err, tc.network, tc.addr)
			}
		})
	}
}

// checkAgrees: `tlsgate check` (policy.Parse) accepts spec as every
// listener setting exactly when Listen does, and reports a refusal at the
// setting's line. Port 0 is the one exception: Listen accepts it (tests
// bind free ports), a configuration may not; and "" disables a listener
// in a configuration.
func checkAgrees(t *testing.T, spec string, listenOK bool) {
	t.Helper()
	if spec == "" {
		return
	}
	quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\x00", `\u0000`).Replace(spec) + `"`
	for _, setting := range []struct{ table, key string }{{"milter", "listen"}, {"policyd", "listen"}, {"policyd", "delegation_listen"}, {"metrics", "listen"}} {
		conf := "mta = \"postfix\"\n[" + setting.table + "]\n" + setting.key + " = " + quoted + "\n"
		_, err := policy.Parse("t.toml", []byte(conf))
		port0 := strings.HasSuffix(spec, ":0")
		if ok := err == nil; ok != (listenOK && !port0) {
			t.Errorf("[%s] %s = %s: check error %v, Listen accepts: %v", setting.table, setting.key, quoted, err, listenOK)
			continue
		}
		if err != nil && !strings.HasPrefix(err.Error(), "t.toml:3: "+setting.key+" = ") {
			t.Errorf("[%s] %s = %s: check error %q, want it at t.toml:3", setting.table, setting.key, quoted, err)
		}
	}
}

func TestListenUnix(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "p.sock")
	l, err := Listen("unix:"+path, 0o640, "0")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o640 {
		t.Fatalf("socket mode %v, want socket 0640", fi.Mode())
	}
	if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 0 {
		t.Fatalf("socket group %d, want 0", gid)
	}
	// No temporary file is left next to it.
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the socket", len(entries))
	}
	// It accepts connections.
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// A second Listen on a live socket is refused and leaves it alone.
	if _, err := Listen("unix:"+path, 0, ""); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("Listen on a live socket: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file still there after Close: %v", err)
	}
}

func TestListenUnixDefaultModeAndGroupName(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "p.sock")
	l, err := Listen("unix:"+path, 0, "root")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != DefaultSocketMode {
		t.Fatalf("mode %v, want %v", fi.Mode().Perm(), DefaultSocketMode)
	}
}

func TestListenUnixStale(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "p.sock")
	// A socket left behind by a process that died: bound, then closed without unlink.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not there: %v", err)
	}
	l, err := Listen("unix:"+path, 0o600, "")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()
}

func TestListenUnixRefusesOtherFiles(t *testing.T) {
	dir := shortTempDir(t)
	file := filepath.Join(dir, "regular")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, link, dir} {
		if _, err := Listen("unix:"+p, 0, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Listen(unix:%s): %v, want 'not a socket'", p, err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("regular file damaged: %q, %v", b, err)
	}
	if _, err := Listen("unix:"+filepath.Join(dir, "p.sock"), 0o4755, ""); err == nil {
		t.Fatal("Listen with a setuid mode succeeded")
	}
	if _, err := Listen("unix:"+filepath.Join(dir, "p.sock"), 0, "no-such-group-tlsgate"); err == nil {
		t.Fatal("Listen with an unknown group succeeded")
	}
	if _, err := Listen("unix:"+filepath.Join(dir, "missing", "p.sock"), 0, ""); err == nil {
		t.Fatal("Listen in a missing directory succeeded")
	}
}

func TestListenInet(t *testing.T) {
	for _, spec := range []string{"inet:127.0.0.1:0", "inet:[::1]:0"} {
		l, err := Listen(spec, 0, "")
		if err != nil {
			if strings.Contains(spec, "::1") && (errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)) {
				t.Logf("no IPv6 loopback here: %v", err)
				continue
			}
			t.Fatalf("Listen(%q): %v", spec, err)
		}
		addr := l.Addr().(*net.TCPAddr)
		if !addr.IP.IsLoopback() || addr.Port == 0 {
			t.Errorf("Listen(%q) bound %v", spec, addr)
		}
		l.Close()
	}
}

// shortTempDir returns a temporary directory with a short path, so that unix socket paths
// stay below the 108-byte sun_path limit whatever the test name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
