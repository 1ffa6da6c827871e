package listen

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// TestOpenAgreesWithCheck: Open accepts a listener setting exactly when
// `tlsgate check` does.
func TestOpenAgreesWithCheck(t *testing.T) {
	dir := shortTempDir(t)
	for _, tc := range []struct {
		spec string
		ok   bool
	}{
		{"unix:" + dir + "/a.sock", true},
		{"unix:" + dir + "//./b.sock", true},
		{"inet:127.0.0.1:0", true},
		{"unix:relative.sock", false},
		{"unix:/a\x00b", false},
		{"inet:0.0.0.0:10031", false},
		{"inet:[::]:10031", false},
		{"inet:localhost:10031", false},
		{"inet:127.0.0.1:70000", false},
		{"inet:10031@127.0.0.1", false},
		{"local:/run/x.sock", false},
		{"/run/x.sock", false},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			checkAgrees(t, tc.spec, tc.ok)
			l, err := Open(tc.spec, 0, "")
			if (err == nil) != tc.ok {
				t.Fatalf("Open(%q): %v, want ok=%v", tc.spec, err, tc.ok)
			}
			if l != nil {
				l.Close()
			}
		})
	}
}

// checkAgrees: `tlsgate check` (policy.Parse) accepts spec as every
// listener setting exactly when Open does, and reports a refusal at the
// setting's line. Port 0 is the one exception: Open accepts it (tests
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
			t.Errorf("[%s] %s = %s: check error %v, Open accepts: %v", setting.table, setting.key, quoted, err, listenOK)
			continue
		}
		if err != nil && !strings.HasPrefix(err.Error(), "t.toml:3: "+setting.key+" = ") {
			t.Errorf("[%s] %s = %s: check error %q, want it at t.toml:3", setting.table, setting.key, quoted, err)
		}
	}
}

func TestOpenUnix(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "p.sock")
	l, err := Open("unix:"+path, 0o640, "0")
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
	if _, err := Open("unix:"+path, 0, ""); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("Listen on a live socket: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file still there after Close: %v", err)
	}
}

func TestOpenUnixDefaultModeAndGroupName(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "p.sock")
	l, err := Open("unix:"+path, 0, "root")
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

func TestOpenUnixStale(t *testing.T) {
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
	l, err := Open("unix:"+path, 0o600, "")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()
}

func TestOpenUnixRefusesOtherFiles(t *testing.T) {
	dir := shortTempDir(t)
	file := filepath.Join(dir, "regular")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, link, sub} {
		if _, err := Open("unix:"+p, 0, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Open(unix:%s): %v, want 'not a socket'", p, err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("regular file damaged: %q, %v", b, err)
	}
	if _, err := Open("unix:"+filepath.Join(dir, "p.sock"), 0o4755, ""); err == nil {
		t.Fatal("Listen with a setuid mode succeeded")
	}
	if _, err := Open("unix:"+filepath.Join(dir, "p.sock"), 0, "no-such-group-tlsgate"); err == nil {
		t.Fatal("Listen with an unknown group succeeded")
	}
	if _, err := Open("unix:"+filepath.Join(dir, "missing", "p.sock"), 0, ""); err == nil {
		t.Fatal("Listen in a missing directory succeeded")
	}
}

func TestOpenInet(t *testing.T) {
	for _, spec := range []string{"inet:127.0.0.1:0", "inet:[::1]:0"} {
		l, err := Open(spec, 0, "")
		if err != nil {
			if strings.Contains(spec, "::1") && (errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)) {
				t.Logf("no IPv6 loopback here: %v", err)
				continue
			}
			t.Fatalf("Open(%q): %v", spec, err)
		}
		addr := l.Addr().(*net.TCPAddr)
		if !addr.IP.IsLoopback() || addr.Port == 0 {
			t.Errorf("Open(%q) bound %v", spec, addr)
		}
		l.Close()
	}
}

// shortTempDir returns a temporary directory with a short path, so that
// unix socket paths stay below the 108-byte sun_path limit whatever the
// test name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ls")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// probeEnv makes the test binary, run as another user by
// connectAsNobody, try to connect to the socket it names and exit 0 when
// it could, 3 when permission was denied, 4 on any other error.
const probeEnv = "TLSGATE_LISTEN_PROBE"

func TestMain(m *testing.M) {
	if path := os.Getenv(probeEnv); path != "" {
		c, err := net.Dial("unix", path)
		switch {
		case err == nil:
			c.Close()
			os.Exit(0)
		case errors.Is(err, syscall.EACCES):
			os.Exit(3)
		default:
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	}
	os.Exit(m.Run())
}

// nobody is the user the probe runs as.
const nobody = 65534

// connectAsNobody reports whether user nobody can connect to the unix
// socket at path, running a copy of the test binary (bin) as nobody.
func connectAsNobody(t *testing.T, bin, path string) (bool, error) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{probeEnv + "=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return false, nil
	}
	return false, fmt.Errorf("probe as nobody: %v: %s", err, out)
}

// copyTestBinary copies the running test binary into dir, executable by
// everyone (the build directory is not).
func copyTestBinary(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probe")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestOpenUnixUnderUmask000: with the process umask at 000, another user
// (nobody) cannot connect to the socket at any moment: neither between
// bind and the final chmod (the socket is then inside a directory of
// mode 0700), nor after it (mode 0660, group root). With mode 0666 the
// same probe connects, so the probe itself works.
func TestOpenUnixUnderUmask000(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a probe as another user")
	}
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := copyTestBinary(t, dir)
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	var inWindow []string
	afterBind = func(tmp string) {
		fi, err := os.Stat(filepath.Dir(tmp))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("private directory %s: %v, %v; want mode 0700", filepath.Dir(tmp), fi.Mode(), err)
		}
		ok, err := connectAsNobody(t, bin, tmp)
		if err != nil {
			t.Error(err)
		}
		if ok {
			t.Errorf("nobody connected to %s before it was moved into place", tmp)
		}
		inWindow = append(inWindow, tmp)
	}
	defer func() { afterBind = nil }()

	for _, tc := range []struct {
		mode   os.FileMode
		nobody bool
	}{{0o660, false}, {0o600, false}, {0o666, true}} {
		path := filepath.Join(dir, fmt.Sprintf("m%o.sock", tc.mode))
		l, err := Open("unix:"+path, tc.mode, "0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().Perm() != tc.mode {
			t.Fatalf("%s: %v, %v; want mode %v", path, fi.Mode(), err, tc.mode)
		}
		ok, err := connectAsNobody(t, bin, path)
		if err != nil {
			t.Fatal(err)
		}
		if ok != tc.nobody {
			t.Errorf("mode %o: nobody could connect: %v, want %v", tc.mode, ok, tc.nobody)
		}
		l.Close()
	}
	if len(inWindow) != 3 {
		t.Fatalf("the window between bind and rename was probed %d times, want 3", len(inWindow))
	}
	// Nothing is left of the private directories.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".t") {
			t.Errorf("private directory %s left behind", e.Name())
		}
	}
}

// TestCheckSocketDir: the socket's directory must be writable by its
// owner only (sticky or not); directories above it may be writable by
// others only if sticky; every one must belong to root or to us.
func TestCheckSocketDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a directory to another user")
	}
	base := shortTempDir(t)
	mk := func(rel string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, 0); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, dir string
		errSub    string
	}{
		{name: "0755 root", dir: mk("ok", 0o755, 0)},
		{name: "0750 root", dir: mk("ok2", 0o750, 0)},
		{name: "group-writable", dir: mk("g", 0o775, 0), errSub: "writable by its group"},
		{name: "world-writable", dir: mk("w", 0o777, 0), errSub: "writable by all users"},
		{name: "world-writable and sticky", dir: mk("s", 0o777|os.ModeSticky, 0), errSub: "writable by all users"},
		{name: "under a sticky world-writable directory", dir: mk("t/ok", 0o755, 0)},
		{name: "under a world-writable directory", dir: mk("u/ok", 0o755, 0), errSub: "above the socket directory"},
		{name: "owned by another user", dir: mk("o", 0o755, nobody), errSub: "owned by"},
		{name: "under a directory of another user", dir: mk("p/ok", 0o755, 0), errSub: "owned by"},
		{name: "missing", dir: filepath.Join(base, "missing"), errSub: "no such file"},
	}
	if err := os.Chmod(filepath.Join(base, "t"), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(base, "u"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(base, "p"), nobody, 0); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(filepath.Join(base, "w"), link); err != nil {
		t.Fatal(err)
	}
	tests = append(tests, struct{ name, dir, errSub string }{"symlink to a world-writable directory", link, "writable by all users"})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckSocketDir(tc.dir)
			if tc.errSub == "" {
				if err != nil {
					t.Fatalf("CheckSocketDir(%s): %v", tc.dir, err)
				}
				l, err := Open("unix:"+filepath.Join(tc.dir, "s.sock"), 0, "")
				if err != nil {
					t.Fatalf("Open in %s: %v", tc.dir, err)
				}
				l.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Fatalf("CheckSocketDir(%s): %v, want %q", tc.dir, err, tc.errSub)
			}
			if _, err := Open("unix:"+filepath.Join(tc.dir, "s.sock"), 0, ""); err == nil {
				t.Fatalf("Open in %s succeeded", tc.dir)
			}
			if _, err := os.Lstat(filepath.Join(tc.dir, "s.sock")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a refused Open left %s/s.sock: %v", tc.dir, err)
			}
		})
	}
}

// TestUnixErrorsNameThePath: the listener, its connections and their
// errors name the socket's path, not the private name it was bound under.
func TestUnixErrorsNameThePath(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "e.sock")
	l, err := Open("unix:"+path, 0o600, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().String(); got != path {
		t.Errorf("listener address %q, want %q", got, path)
	}
	peer, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.LocalAddr().String(); got != path {
		t.Errorf("connection's local address %q, want %q", got, path)
	}
	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "/.t") || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read error %q: want it to name %s only, and to be a deadline error", err, path)
	}
	l.Close()
	if _, err := l.Accept(); err == nil || strings.Contains(err.Error(), "/.t") || !errors.Is(err, net.ErrClosed) {
		t.Errorf("accept error on a closed listener %q: want net.ErrClosed, without the private name", err)
	}
}
