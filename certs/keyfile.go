package certs

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// serviceUser is the user the shipped systemd unit runs tlsgate as (User=).
const serviceUser = "tlsgate"

// keyReader is the user who must be able to read a private key, and the
// groups that user is in; a key readable by one of those groups (Debian's
// 0640 root:ssl-cert layout) is not exposed beyond what that user needs.
type keyReader struct {
	name    string
	primary uint32
	gids    map[uint32]bool // primary and supplementary
}

// currentKeyReader returns the user running this process and its groups.
// For root, who reads any file anyway, it returns the service user
// tlsgate when that user exists: a key group has to admit the daemon, so
// `tlsgate check` run by root judges a key the way `serve` will.
func currentKeyReader() keyReader {
	if os.Geteuid() == 0 {
		if u, err := user.Lookup(serviceUser); err == nil {
			if r, err := lookupKeyReader(u); err == nil {
				return r
			}
		}
	}
	r := keyReader{primary: uint32(os.Getegid()), gids: map[uint32]bool{uint32(os.Getegid()): true}}
	if u, err := user.LookupId(strconv.Itoa(os.Geteuid())); err == nil {
		r.name = u.Username
	} else {
		r.name = "uid " + strconv.Itoa(os.Geteuid())
	}
	if gs, err := os.Getgroups(); err == nil {
		for _, g := range gs {
			r.gids[uint32(g)] = true
		}
	}
	return r
}

func lookupKeyReader(u *user.User) (keyReader, error) {
	pg, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return keyReader{}, err
	}
	r := keyReader{name: u.Username, primary: uint32(pg), gids: map[uint32]bool{uint32(pg): true}}
	ids, err := u.GroupIds()
	if err != nil {
		return keyReader{}, err
	}
	for _, id := range ids {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			r.gids[uint32(g)] = true
		}
	}
	return r, nil
}

// CheckKeyFile refuses a private key file that is exposed beyond the user
// who needs it, naming the fix. Others may neither read nor write it, and
// its group may not write it. Its group may read it only when the user
// running tlsgate (for root: the service user tlsgate, if it exists) is a
// member of that group, as with Debian's keys (mode 0640, group ssl-cert,
// after "adduser tlsgate ssl-cert"). It also refuses paths that are not
// regular files. It does not parse the key; see [LoadKeyFile].
func CheckKeyFile(path string) error {
	return checkKeyFile(path, currentKeyReader())
}

func checkKeyFile(path string, r keyReader) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("certs: private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("certs: private key %s is not a regular file", path)
	}
	perm := fi.Mode().Perm()
	if perm&0o066 == 0 {
		return nil
	}
	gid, hasGID := fileGID(fi)
	groupName := groupLabel(gid, hasGID)
	readerGroup := hasGID && r.gids[gid]
	groupOK := perm&0o060 == 0 || (perm&0o020 == 0 && readerGroup)
	others := perm&0o006 != 0
	if groupOK && !others {
		return nil
	}
	// The fix keeps group read for a supplementary group of the reader
	// (a key group such as ssl-cert) and removes everything else.
	fix := "chmod 600 " + shellQuote(path)
	if readerGroup && gid != r.primary {
		fix = "chmod 640 " + shellQuote(path)
	}
	switch {
	case others && !groupOK:
		return fmt.Errorf("certs: private key %s is %s by group and others (mode %04o); only its owner may read it, fix with: %s", path, how(perm&0o066), perm, fix)
	case others:
		return fmt.Errorf("certs: private key %s is %s by others (mode %04o); only its owner and its group %s may read it, fix with: %s", path, how(perm&0o006), perm, groupName, fix)
	case perm&0o020 != 0:
		return fmt.Errorf("certs: private key %s is writable by its group %s (mode %04o); only its owner may change it, fix with: %s", path, groupName, perm, fix)
	}
	return fmt.Errorf("certs: private key %s is readable by its group %s (mode %04o), which user %s is not in; only its owner and a key group of %s may read it, fix with: %s, or, if %s is a group for private keys such as ssl-cert: adduser %s %s",
		path, groupName, perm, r.name, r.name, fix, groupName, r.name, groupName)
}

// how says "readable" or "writable" for a group or others permission.
func how(bits os.FileMode) string {
	if bits&0o044 != 0 {
		return "readable"
	}
	return "writable"
}

func fileGID(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Gid, true
}

// groupLabel is the group's name, or its number when it has none.
func groupLabel(gid uint32, ok bool) string {
	if !ok {
		return "(unknown)"
	}
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		return g.Name
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// shellQuote quotes s for a POSIX shell when needed so that printed fix
// commands can be pasted.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '.' || r == '_' || r == '-' || r == '+' || r == ':' || r == '@' || r == ',') {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	out := "'"
	for _, r := range s {
		if r == '\'' {
			out += `'\''`
		} else {
			out += string(r)
		}
	}
	return out + "'"
}
