// Package sendmailfile says whether Sendmail 8.17, running as root (the
// daemon and its queue runners; RunAsUser unset, as Debian ships it), will
// use a TLS file: the CA file (CACertFile), certificates (ServerCertFile,
// ClientCertFile) and private keys (ServerKeyFile, ClientKeyFile).
//
// Sendmail opens these only if its safefile() check passes
// (sendmail/tls.c, inittls() and load_certkey(); libsmutil/safefile.c);
// otherwise it logs "STARTTLS=server: file PATH unsafe: REASON" (at
// LogLevel 8 and above) and, for the server side, stops offering STARTTLS
// altogether. The flags it checks them with are SFF_REGONLY,
// SFF_SAFEDIRPATH, SFF_NOWLINK, SFF_NOGWFILES, SFF_NOWWFILES, SFF_MUSTOWN,
// SFF_ROOTOK and SFF_OPENASROOT, plus SFF_NORFILES for a key (group and
// others may not read it) or, with DontBlameSendmail=GroupReadableKeyFile,
// SFF_NOWRFILES (others may not read it). That means:
//
//   - the path is absolute;
//   - no directory on the way to it (symbolic links followed) is group
//     or world writable, unless it is sticky (such as /tmp) and
//     DontBlameSendmail has TrustStickyBit, as Debian's sendmail.cf does
//     (Sendmail also relaxes this with GroupWritableDirPathSafe, which
//     Check does not);
//   - the file is a regular file that neither its group nor others may
//     write, its owner may read, and root owns (Sendmail also accepts its
//     TrustedUser, Debian's smmta, which Check does not know; root always
//     works);
//   - a key is not readable by others, and by its group only with
//     GroupReadableKeyFile (Debian's /etc/mail/tls/starttls.m4 sets it, and
//     so does what "tlsgate mta-config" prints for a group-readable key).
//
// CACertPath is not checked by Sendmail at all: OpenSSL loads the CA
// certificates named by hash (HASH.0) from it, see [HashLinks].
package sendmailfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"syscall"
)

// Kind is what Sendmail uses a file for.
type Kind int

const (
	// Cert is a certificate or CA file: CACertFile, ServerCertFile,
	// ClientCertFile.
	Cert Kind = iota
	// Key is a private key: ServerKeyFile, ClientKeyFile.
	Key
)

func (k Kind) String() string {
	if k == Key {
		return "private key"
	}
	return "certificate file"
}

// Options are the DontBlameSendmail settings that change the rules.
type Options struct {
	// GroupReadableKeyFile lets a key be readable by its group.
	GroupReadableKeyFile bool
	// TrustStickyBit lets a sticky directory be writable by others.
	TrustStickyBit bool
}

// Debian are the options of Debian's sendmail.cf with the lines "tlsgate
// mta-config" prints for a key its group may read: TrustStickyBit
// (Debian's OSTYPE) and GroupReadableKeyFile.
var Debian = Options{GroupReadableKeyFile: true, TrustStickyBit: true}

// Error says why Sendmail refuses a file and how to fix it.
type Error struct {
	Path string
	// Reason is Sendmail's rule the file breaks, e.g. "it is owned by
	// tlsgate, not root".
	Reason string
	// Fix is a command that fixes it, or "".
	Fix string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("Sendmail refuses %s (\"file %s unsafe\" in its log, and no STARTTLS): %s", e.Path, e.Path, e.Reason)
	if e.Fix != "" {
		s += "; fix with: " + e.Fix
	}
	return s
}

// Check returns nil when Sendmail, running as root, uses path as a file
// of kind k, and otherwise an *Error (or the error of stat).
func Check(path string, k Kind, o Options) error {
	if !filepath.IsAbs(path) {
		return &Error{Path: path, Reason: "the path is not absolute (Sendmail ignores relative TLS file names)"}
	}
	if err := checkDirs(path, o); err != nil {
		return err
	}
	return checkFile(path, k, o)
}

// checkFile applies the rules for the file itself.
func checkFile(path string, k Kind, o Options) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &Error{Path: path, Reason: "it is not a regular file"}
	}
	perm := fi.Mode().Perm()
	uid, gid := owner(fi)
	switch {
	case perm&0o022 != 0:
		return &Error{Path: path, Reason: fmt.Sprintf("its group or others may write it (mode %04o)", perm), Fix: "chmod go-w " + path}
	case uid != 0:
		return &Error{Path: path, Reason: fmt.Sprintf("it is owned by %s, not root (Sendmail, which runs as root, uses TLS files only when root or its TrustedUser owns them)", userName(uid)), Fix: "chown root " + path}
	case perm&0o400 == 0:
		return &Error{Path: path, Reason: fmt.Sprintf("its owner may not read it (mode %04o)", perm), Fix: "chmod u+r " + path}
	}
	if k != Key {
		return nil
	}
	switch {
	case perm&0o004 != 0:
		fix := "chmod 600 " + path
		if o.GroupReadableKeyFile {
			fix = "chmod o-r " + path
		}
		return &Error{Path: path, Reason: fmt.Sprintf("others may read the private key (mode %04o)", perm), Fix: fix}
	case perm&0o040 != 0 && !o.GroupReadableKeyFile:
		return &Error{Path: path, Reason: fmt.Sprintf("its group %s may read the private key (mode %04o) and DontBlameSendmail lacks GroupReadableKeyFile", groupName(gid), perm), Fix: "chmod 600 " + path}
	}
	return nil
}

// checkDirs refuses a path below a group- or world-writable directory,
// following symbolic links as Sendmail's safedirpath() does.
func checkDirs(path string, o Options) error {
	seen := map[string]bool{}
	var walk func(dir string, depth int) error
	walk = func(dir string, depth int) error {
		if depth > 40 {
			return &Error{Path: path, Reason: "too many symbolic links"}
		}
		for d := dir; ; d = filepath.Dir(d) {
			if !seen[d] {
				seen[d] = true
				fi, err := os.Lstat(d)
				if err != nil {
					return err
				}
				if fi.Mode()&fs.ModeSymlink != 0 {
					target, err := os.Readlink(d)
					if err != nil {
						return err
					}
					if !filepath.IsAbs(target) {
						target = filepath.Join(filepath.Dir(d), target)
					}
					if err := walk(filepath.Clean(target), depth+1); err != nil {
						return err
					}
				} else if perm := fi.Mode().Perm(); perm&0o022 != 0 && !(o.TrustStickyBit && fi.Mode()&fs.ModeSticky != 0) {
					who := "group"
					if perm&0o002 != 0 {
						who = "everyone"
					}
					if fi.Mode()&fs.ModeSticky != 0 {
						perm |= 0o1000
					}
					return &Error{Path: path, Reason: fmt.Sprintf("directory %s is writable by %s (mode %04o)", d, who, perm), Fix: "chmod go-w " + d + ", or keep the file in a directory only root may write to"}
				}
			}
			if d == "/" || d == "." {
				return nil
			}
		}
	}
	return walk(filepath.Dir(filepath.Clean(path)), 0)
}

func owner(fi fs.FileInfo) (uid, gid uint32) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid, st.Gid
	}
	return 0, 0
}

func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return "uid " + strconv.FormatUint(uint64(uid), 10)
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		return g.Name
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// hashLink is how OpenSSL's hashed CA directories name certificates and
// CRLs: 8 hex digits of the subject hash, a dot, a number (r for a CRL).
var hashLink = regexp.MustCompile(`^[0-9a-f]{8}\.r?[0-9]+$`)

// HashLinks lists the files in dir that OpenSSL would load as trusted CA
// certificates (or CRLs) when dir is Sendmail's CACertPath: those named
// like c_rehash names them (HASH.0). Sendmail trusts them in addition to
// CACertFile. A directory that does not exist holds none (Sendmail needs
// CACertPath set to an absolute path, not to an existing one).
func HashLinks(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if hashLink.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}
