package milter

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Listen opens the listener a policy.Listener describes: "inet:HOST:PORT"
// (TCP), or "unix:/path" (a unix socket; a stale socket at the path is
// removed first, but never any other kind of file; the socket gets
// l.Mode, default 0660, and group l.Group when set). A unix socket is
// removed again when the listener is closed.
func Listen(l policy.Listener) (net.Listener, error) {
	switch {
	case strings.HasPrefix(l.Addr, "inet:"):
		return net.Listen("tcp", l.Addr[len("inet:"):])
	case strings.HasPrefix(l.Addr, "unix:"):
		return listenUnix(l)
	}
	return nil, fmt.Errorf("milter: listen %q: want unix:/path or inet:HOST:PORT", l.Addr)
}

func listenUnix(l policy.Listener) (net.Listener, error) {
	path := l.Addr[len("unix:"):]
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("milter: listen %q: %s exists and is not a socket", l.Addr, path)
		}
		// A socket nobody answers on is stale; a live one is in use.
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("milter: listen %q: another process is listening on %s", l.Addr, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("milter: listen %q: removing stale socket: %w", l.Addr, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("milter: listen %q: %w", l.Addr, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	mode := l.Mode
	if mode == 0 {
		mode = 0o660
	}
	fail := func(err error) (net.Listener, error) {
		_ = ln.Close()
		return nil, fmt.Errorf("milter: listen %q: %w", l.Addr, err)
	}
	if l.Group != "" {
		gid, err := lookupGroup(l.Group)
		if err != nil {
			return fail(err)
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(path, mode.Perm()); err != nil {
		return fail(err)
	}
	return ln, nil
}

// lookupGroup resolves a group name or numeric id.
func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil {
		return n, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(grp.Gid)
}
