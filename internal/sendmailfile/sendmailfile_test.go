package sendmailfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck: the rules of Sendmail's safefile() for TLS files, each broken
// once. Changing owners needs root; the tests that do are skipped for
// others.
func TestCheck(t *testing.T) {
	root := os.Geteuid() == 0
	for _, tc := range []struct {
		name     string
		kind     Kind
		mode     fs.FileMode
		owner    int // uid; -1 keeps the creator
		dirMode  fs.FileMode
		opts     Options
		want     string // part of the reason; "" = accepted
		needRoot bool
	}{
		{name: "root's 0644 certificate", kind: Cert, mode: 0o644, owner: 0, dirMode: 0o755, needRoot: true},
		{name: "not root's", kind: Cert, mode: 0o644, owner: 65534, dirMode: 0o755, want: "it is owned by nobody, not root", needRoot: true},
		{name: "group may write", kind: Cert, mode: 0o664, owner: 0, dirMode: 0o755, want: "its group or others may write it", needRoot: true},
		{name: "others may write", kind: Cert, mode: 0o646, owner: 0, dirMode: 0o755, want: "its group or others may write it", needRoot: true},
		{name: "owner may not read", kind: Cert, mode: 0o044, owner: 0, dirMode: 0o755, want: "its owner may not read it", needRoot: true},
		{name: "directory writable by group", kind: Cert, mode: 0o644, owner: 0, dirMode: 0o775, want: "is writable by group", needRoot: true},
		{name: "directory writable by everyone, sticky", kind: Cert, mode: 0o644, owner: 0, dirMode: 0o777 | fs.ModeSticky, want: "is writable by everyone", needRoot: true},
		{name: "sticky directory with TrustStickyBit", kind: Cert, mode: 0o644, owner: 0, dirMode: 0o777 | fs.ModeSticky, opts: Options{TrustStickyBit: true}, needRoot: true},
		{name: "Debian's 0640 key with GroupReadableKeyFile", kind: Key, mode: 0o640, owner: 0, dirMode: 0o755, opts: Options{GroupReadableKeyFile: true}, needRoot: true},
		{name: "0640 key without GroupReadableKeyFile", kind: Key, mode: 0o640, owner: 0, dirMode: 0o755, want: "DontBlameSendmail lacks GroupReadableKeyFile", needRoot: true},
		{name: "key others may read", kind: Key, mode: 0o644, owner: 0, dirMode: 0o755, opts: Options{GroupReadableKeyFile: true}, want: "others may read the private key", needRoot: true},
		{name: "0600 key", kind: Key, mode: 0o600, owner: 0, dirMode: 0o755, needRoot: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needRoot && !root {
				t.Skip("needs root to set the owner")
			}
			base := t.TempDir()
			// t.TempDir's parents may be /tmp (sticky, world-writable):
			// give the file a directory of its own below one that is not.
			if err := os.Chmod(base, 0o755); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(base, "d")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.dirMode); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "f.pem")
			if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.owner >= 0 {
				if err := os.Chown(path, tc.owner, -1); err != nil {
					t.Fatal(err)
				}
			}
			err := checkBelow(path, base, tc.kind, tc.opts)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want a refusal with %q", err, tc.want)
			}
			var se *Error
			if err != nil && errors.As(err, &se) && !strings.Contains(err.Error(), "Sendmail refuses "+path) {
				t.Errorf("the error does not name the file: %v", err)
			}
		})
	}
}

// checkBelow is Check for a file below base, whose own parents (the
// test's temporary directory, maybe below /tmp) are not the file's
// business.
func checkBelow(path, base string, k Kind, o Options) error {
	err := Check(path, k, o)
	var se *Error
	if errors.As(err, &se) && strings.HasPrefix(se.Reason, "directory ") && !strings.HasPrefix(se.Reason, "directory "+base) {
		// A writable directory above base: judge the rest by hand.
		if err := checkDirs(path, o); err != nil && strings.Contains(err.Error(), "directory "+base) {
			return err
		}
		return checkFile(path, k, o)
	}
	return err
}

// TestCheckSymlinkedDir: a directory reached through a symbolic link is
// judged where the link points, as safedirpath() does.
func TestCheckSymlinkedDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set the owner")
	}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(real, 0o777)
	if err := os.Symlink("real", filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "ca.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := checkDirs(filepath.Join(base, "link", "ca.pem"), Options{})
	if err == nil || !strings.Contains(err.Error(), "directory "+real+" is writable by everyone") {
		t.Errorf("got %v, want the link's target named", err)
	}
	if err := Check("relative.pem", Cert, Options{}); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("relative path: %v", err)
	}
	if err := Check("/nonexistent-tlsgate-test.pem", Cert, Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestHashLinks(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"5fc3a378.0", "5fc3a378.1", "0a1b2c3d.r0", "ca.pem", "5fc3a378.pem", "xyz.0"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := HashLinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "0a1b2c3d.r0 5fc3a378.0 5fc3a378.1" {
		t.Errorf("HashLinks = %q", got)
	}
	if got, err := HashLinks(filepath.Join(dir, "none")); err != nil || got != nil {
		t.Errorf("missing directory: %q, %v", got, err)
	}
}
