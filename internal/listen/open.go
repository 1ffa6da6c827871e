package listen

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// DefaultSocketMode is the mode Open gives a unix socket when called with
// mode 0: owner and group may connect, others may not.
const DefaultSocketMode os.FileMode = 0o660

// maxSunPath is the longest unix socket path the kernel accepts (sun_path
// is 108 bytes with its NUL).
const maxSunPath = 107

// Open opens the listener named by spec:
//
//   - "unix:/abs/path": a unix stream socket with the permission bits of
//     mode (DefaultSocketMode if 0) and, if group is not empty, that group
//     (a name or a numeric id). The socket is bound in a new directory of
//     mode 0700 next to path, given its mode and group there, and then
//     renamed to path: no other user can connect to it before it has its
//     final permissions, whatever the process umask. A file already at
//     path is removed only if it is a socket nobody listens on (a stale
//     socket from a previous run); a live socket or any other kind of file
//     is an error. The socket's directory must be owned by root or by the
//     user tlsgate runs as and writable by its owner only, and every
//     directory above it must be owned by root or that user and writable
//     by others only if sticky; otherwise another user could put a socket
//     of their own in place of tlsgate's (while tlsgate is stopped) and
//     answer the MTA. Closing the listener removes the socket file.
//     Errors and addresses of the listener and its connections name path,
//     not the private name the socket was bound under.
//   - "inet:127.0.0.1:PORT" or "inet:[::1]:PORT": TCP on a loopback
//     address. Only loopback IP literals are accepted: these protocols
//     carry no authentication, and a policy that decides TLS must not be
//     readable or spoofable from the network. PORT 0 picks a free port
//     (see the listener's Addr). mode and group are ignored.
//
// Anything else is refused with an error saying what is accepted.
func Open(spec string, mode os.FileMode, group string) (net.Listener, error) {
	network, addr, err := policy.ParseListen(spec)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", spec, err)
	}
	if network == "tcp" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", spec, err)
		}
		return l, nil
	}
	l, err := openUnix(addr, mode, group)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	return l, nil
}

// afterBind, if set (by tests), is called with the private name of a unix
// socket once it has its mode and group, before it is moved into place.
var afterBind func(tmp string)

func openUnix(path string, mode os.FileMode, group string) (net.Listener, error) {
	if mode == 0 {
		mode = DefaultSocketMode
	}
	if mode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("mode %v has bits other than permissions", mode)
	}
	gid := -1
	if group != "" {
		var err error
		if gid, err = lookupGroup(group); err != nil {
			return nil, err
		}
	}
	dir := filepath.Dir(path)
	if err := CheckSocketDir(dir); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	private, err := mkdirPrivate(dir)
	if err != nil {
		return nil, err
	}
	defer os.Remove(private)
	tmp := filepath.Join(private, "s")
	if len(tmp) > maxSunPath {
		return nil, fmt.Errorf("socket path too long: binding it needs %d bytes (%s), at most %d fit a unix socket address; shorten the path by %d bytes",
			len(tmp), tmp, maxSunPath, len(tmp)-maxSunPath)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	if gid >= 0 {
		if err := os.Lchown(tmp, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if afterBind != nil {
		afterBind(tmp)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: l, path: path, fi: fi, addr: &net.UnixAddr{Name: path, Net: "unix"}}, nil
}

// mkdirPrivate creates a new directory of mode 0700 in dir, with a short
// random name (the socket path inside it must fit sun_path).
func mkdirPrivate(dir string) (string, error) {
	var b [3]byte
	for range 100 {
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		p := filepath.Join(dir, ".t"+hex.EncodeToString(b[:]))
		err := os.Mkdir(p, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("creating a private directory to bind the socket in: %w", err)
		}
		// The umask may have taken bits from the owner too.
		if err := os.Chmod(p, 0o700); err != nil {
			os.Remove(p)
			return "", err
		}
		return p, nil
	}
	return "", fmt.Errorf("creating a private directory to bind the socket in: no free name in %s", dir)
}

// CheckSocketDir reports whether dir may hold tlsgate's sockets: it must be
// a directory owned by root or by the effective user, writable by its owner
// only, and every directory above it (after resolving symbolic links) must
// be owned by root or by the effective user and writable by others only if
// sticky. Another user who can create names in the socket's directory could
// bind a socket of their own there while tlsgate is stopped, and the MTA
// would ask them; one who can rename entries above it could swap the whole
// directory. A sticky directory does not help at the socket's own level:
// it stops others from removing tlsgate's socket, not from creating one
// first.
func CheckSocketDir(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	euid := os.Geteuid()
	for d := real; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("socket directory %s is not a directory", d)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("socket directory %s: cannot read its owner", d)
		}
		what := "socket directory " + d
		if d != real {
			what = "directory " + d + " above the socket directory " + real
		}
		if st.Uid != 0 && int(st.Uid) != euid {
			return fmt.Errorf("%s is owned by %s, neither root nor the user tlsgate runs as (%s): that user could replace tlsgate's socket; chown it to root or %s",
				what, userName(int(st.Uid)), userName(euid), userName(euid))
		}
		mode := st.Mode & 0o7777
		if mode&0o022 != 0 && (d == real || mode&syscall.S_ISVTX == 0) {
			who := "its group"
			if mode&0o002 != 0 {
				who = "all users"
			}
			if d == real {
				return fmt.Errorf("%s (mode %04o) is writable by %s: another user could put a socket of their own in place of tlsgate's while tlsgate is stopped; make it writable by its owner only (chmod go-w %s)",
					what, mode, who, d)
			}
			return fmt.Errorf("%s (mode %04o) is writable by %s and not sticky: another user could rename the socket directory and put their own in its place; chmod go-w %s",
				what, mode, who, d)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// userName is "name (uid N)", or "uid N" when the name is unknown.
func userName(uid int) string {
	s := "uid " + strconv.Itoa(uid)
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username + " (" + s + ")"
	}
	return s
}

// unixListener names its socket by its final path and removes the socket
// file on Close, if the file is still the one it created.
type unixListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
	addr *net.UnixAddr
	once sync.Once
}

// Accept returns the next connection, whose local address is the socket's
// path.
func (l *unixListener) Accept() (net.Conn, error) {
	c, err := l.UnixListener.AcceptUnix()
	if err != nil {
		return nil, renameOpError(err, l.addr)
	}
	return &unixConn{UnixConn: c, laddr: l.addr}, nil
}

// Addr returns the socket's path.
func (l *unixListener) Addr() net.Addr { return l.addr }

// Close closes the listener and removes its socket file.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, e := os.Lstat(l.path); e == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return renameOpError(err, l.addr)
}

// unixConn is an accepted connection reporting the socket's path as its
// local address, also in its errors (the kernel still knows the socket by
// the name it was bound under, which no longer exists).
type unixConn struct {
	*net.UnixConn
	laddr *net.UnixAddr
}

func (c *unixConn) LocalAddr() net.Addr { return c.laddr }

func (c *unixConn) Read(p []byte) (int, error) {
	n, err := c.UnixConn.Read(p)
	return n, renameOpError(err, c.laddr)
}

func (c *unixConn) Write(p []byte) (int, error) {
	n, err := c.UnixConn.Write(p)
	return n, renameOpError(err, c.laddr)
}

func (c *unixConn) Close() error { return renameOpError(c.UnixConn.Close(), c.laddr) }

// renameOpError returns err with the unix address of a *net.OpError
// (its Source for a connection, its Addr for a listener) replaced by a.
func renameOpError(err error, a *net.UnixAddr) error {
	oe, ok := err.(*net.OpError)
	if !ok {
		return err
	}
	c := *oe
	if _, ok := c.Source.(*net.UnixAddr); ok {
		c.Source = a
	} else if _, ok := c.Addr.(*net.UnixAddr); ok && c.Source == nil {
		c.Addr = a
	}
	return &c
}

// removeStaleSocket removes path if it is a socket nobody listens on. It
// fails if path is something else or a live socket.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%v); not removing it", path, fi.Mode().Type())
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is listening on this socket", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	return nil
}

// lookupGroup resolves a group name or numeric id.
func lookupGroup(group string) (int, error) {
	if id, err := strconv.Atoi(group); err == nil {
		if id < 0 {
			return 0, fmt.Errorf("bad group id %d", id)
		}
		return id, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", group, err)
	}
	id, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q: non-numeric gid %q", group, g.Gid)
	}
	return id, nil
}
