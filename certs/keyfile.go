package certs

import (
	"fmt"
	"os"
)

// CheckKeyFile refuses a private key file that group or others may read or
// write, naming the fix ("chmod 600 PATH"). It also refuses paths that are
// not regular files. It does not parse the key; see [LoadKeyFile].
func CheckKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("certs: private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("certs: private key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o066 != 0 {
		group, others := perm&0o060 != 0, perm&0o006 != 0
		who := "others"
		switch {
		case group && others:
			who = "group and others"
		case group:
			who = "its group"
		}
		how := "writable"
		if perm&0o044 != 0 {
			how = "readable"
		}
		return fmt.Errorf("certs: private key %s is %s by %s (mode %04o); only its owner may read it, fix with: chmod 600 %s", path, how, who, perm, shellQuote(path))
	}
	return nil
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
