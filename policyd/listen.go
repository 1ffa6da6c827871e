package policyd

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// DefaultSocketMode is the mode Listen gives a unix socket when called with mode 0: owner
// and group may connect, others may not.
const DefaultSocketMode os.FileMode = 0o660

// Listen opens the listener named by spec:
//
//   - "unix:/abs/path": a unix stream socket. A file already at the path is removed only if
//     it is a socket nobody listens on (a stale socket from a previous run); a live socket
//     or any other kind of file is an error. The socket gets the permission bits of mode
//     (DefaultSocketMode if 0) and, if group is not empty, that group (a name or a numeric
//     id). It is created under a temporary name, chmod-ed and chown-ed, then renamed into
//     place, so it is never reachable with looser permissions. Closing the listener removes
//     the socket file.
//   - "inet:127.0.0.1:PORT" or "inet:[::1]:PORT": TCP on a loopback address. Only loopback
//     IP literals are accepted: these protocols carry no authentication, and a policy
//     that decides TLS must not be readable or spoofable from the network. PORT 0 picks a
//     free port (see the listener's Addr). mode and group are ignored.
//
// Anything else is refused with an error saying what is accepted.
func Listen(spec string, mode os.FileMode, group string) (net.Listener, error) {
	network, addr, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	if network == "tcp" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("policyd: listen %s: %w", spec, err)
		}
		return l, nil
	}
	return listenUnix(spec, addr, mode, group)
}

// parseSpec turns a listener spec into a Go network and address, by the
// rule policy.ParseListen shares with `tlsgate check`.
func parseSpec(spec string) (network, addr string, err error) {
	network, addr, err = policy.ParseListen(spec)
	if err != nil {
		return "", "", fmt.Errorf("policyd: listener %q: %w", spec, err)
	}
	return network, addr, nil
}

var tmpSocketSeq struct {
	sync.Mutex
	n uint64
}

func listenUnix(spec, path string, mode os.FileMode, group string) (net.Listener, error) {
	if mode == 0 {
		mode = DefaultSocketMode
	}
	if mode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("policyd: listen %s: mode %v has bits other than permissions", spec, mode)
	}
	gid := -1
	if group != "" {
		var err error
		if gid, err = lookupGroup(group); err != nil {
			return nil, fmt.Errorf("policyd: listen %s: %w", spec, err)
		}
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("policyd: listen %s: %w", spec, err)
	}

	tmpSocketSeq.Lock()
	tmpSocketSeq.n++
	tmp := fmt.Sprintf("%s.%d.%d.tmp", path, os.Getpid(), tmpSocketSeq.n)
	tmpSocketSeq.Unlock()
	if len(tmp) > 107 { // sun_path is 108 bytes; fall back to binding in place.
		tmp = path
	}
	os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("policyd: listen %s: %w", spec, err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("policyd: listen %s: %w", spec, err)
	}
	if gid >= 0 {
		if err := os.Lchown(tmp, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if tmp != path {
		if err := os.Rename(tmp, path); err != nil {
			return fail(err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &unixListener{UnixListener: l, path: path, fi: fi}, nil
}

// unixListener removes its socket file on Close, if the file is still the one it created.
type unixListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
	once sync.Once
}

// Close closes the listener and removes its socket file.
func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, e := os.Lstat(l.path); e == nil && os.SameFile(fi, l.fi) {
			os.Remove(l.path)
		}
	})
	return err
}

// removeStaleSocket removes path if it is a socket nobody listens on. It fails if path is
// something else or a live socket.
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
