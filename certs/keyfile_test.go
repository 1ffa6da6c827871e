package certs

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestCheckKeyFile(t *testing.T) {
	k, _ := GenerateKey("p256")
	keyPEM, _ := MarshalKeyPEM(k)
	// The process's own group: a key readable by it is readable by the
	// user running tlsgate only. (Root with a tlsgate user on the system
	// is judged as that user instead: see TestCheckKeyFileGroups.)
	_, errLookup := user.Lookup(serviceUser)
	judgedAsSelf := os.Geteuid() != 0 || errLookup != nil
	tests := []struct {
		name    string
		perm    os.FileMode
		wantErr string
	}{
		{name: "0600", perm: 0o600},
		{name: "0400", perm: 0o400},
		{name: "0700", perm: 0o700},
		{name: "0644 world readable", perm: 0o644, wantErr: "is readable by others (mode 0644)"},
		{name: "0604 others", perm: 0o604, wantErr: "readable by others (mode 0604)"},
		{name: "0620 group writable", perm: 0o620, wantErr: "writable by its group"},
		{name: "0666", perm: 0o666, wantErr: "chmod 600"},
	}
	if judgedAsSelf {
		tests = append(tests, struct {
			name    string
			perm    os.FileMode
			wantErr string
		}{name: "0640 readable by our own group", perm: 0o640})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "mx.key", keyPEM, tc.perm)
			err := CheckKeyFile(p)
			if tc.wantErr == "" {
				noErr(t, err)
				_, err = LoadKeyFile(p)
				noErr(t, err)
				return
			}
			wantErr(t, err, tc.wantErr)
			wantErr(t, err, "chmod 600 "+p)
			_, err = LoadKeyFile(p)
			wantErr(t, err, "chmod 600")
		})
	}
	t.Run("missing", func(t *testing.T) {
		wantErr(t, CheckKeyFile(filepath.Join(t.TempDir(), "nope.key")), "no such file")
	})
	t.Run("directory", func(t *testing.T) {
		wantErr(t, CheckKeyFile(t.TempDir()), "not a regular file")
	})
	t.Run("quoted path", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "my keys")
		os.Mkdir(dir, 0o755)
		p := writeFile(t, dir, "mx.key", keyPEM, 0o644)
		wantErr(t, CheckKeyFile(p), "chmod 600 '"+p+"'")
	})
	t.Run("not a key", func(t *testing.T) {
		p := writeFile(t, t.TempDir(), "mx.key", []byte("nothing"), 0o600)
		_, err := LoadKeyFile(p)
		wantErr(t, err, "no PEM private key found")
		wantErr(t, err, p)
	})
}

// TestCheckKeyFileGroups: a key its group may read is accepted when the
// user who must read it (tlsgate) is in that group, as with Debian's
// 0640 root:ssl-cert keys; a group-readable key of any other group, a
// group-writable key and a key others may read or write are refused with
// a fix that keeps what is right.
func TestCheckKeyFileGroups(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the key file arbitrary groups")
	}
	k, _ := GenerateKey("p256")
	keyPEM, _ := MarshalKeyPEM(k)
	// Group numbers no system has names for, so messages show numbers.
	const primary, sslCert, other = 4000900, 4000901, 4000902
	r := keyReader{name: "tlsgate", primary: primary, gids: map[uint32]bool{primary: true, sslCert: true}}
	tests := []struct {
		name string
		perm os.FileMode
		gid  int
		want []string // substrings of the error; none: accepted
	}{
		{name: "owner only", perm: 0o600, gid: other},
		{name: "debian ssl-cert layout", perm: 0o640, gid: sslCert},
		{name: "read-only for the key group", perm: 0o440, gid: sslCert},
		{name: "own primary group", perm: 0o640, gid: primary},
		{name: "group we are not in", perm: 0o640, gid: other, want: []string{
			"is readable by its group 4000902 (mode 0640), which user tlsgate is not in",
			"fix with: chmod 600 KEY, or, if 4000902 is a group for private keys such as ssl-cert: adduser tlsgate 4000902"}},
		{name: "world readable key group", perm: 0o644, gid: sslCert, want: []string{
			"is readable by others (mode 0644); only its owner and its group 4000901 may read it, fix with: chmod 640 KEY"}},
		{name: "world readable other group", perm: 0o644, gid: other, want: []string{
			"is readable by group and others (mode 0644); only its owner may read it, fix with: chmod 600 KEY"}},
		{name: "others only", perm: 0o604, gid: other, want: []string{"is readable by others (mode 0604)", "chmod 600 KEY"}},
		{name: "others write", perm: 0o602, gid: sslCert, want: []string{"is writable by others (mode 0602)", "chmod 640 KEY"}},
		{name: "key group may write", perm: 0o660, gid: sslCert, want: []string{
			"is writable by its group 4000901 (mode 0660); only its owner may change it, fix with: chmod 640 KEY"}},
		{name: "primary group may write", perm: 0o620, gid: primary, want: []string{"writable by its group 4000900", "chmod 600 KEY"}},
		{name: "everyone", perm: 0o666, gid: sslCert, want: []string{"by group and others (mode 0666)", "chmod 640 KEY"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "mx.key", keyPEM, tc.perm)
			if err := os.Chown(p, 0, tc.gid); err != nil {
				t.Fatal(err)
			}
			err := checkKeyFile(p, r)
			if len(tc.want) == 0 {
				noErr(t, err)
				return
			}
			for _, w := range tc.want {
				wantErr(t, err, strings.ReplaceAll(w, "KEY", p))
			}
		})
	}
}

// TestCurrentKeyReader: root is judged as the service user tlsgate when it
// exists, anyone else as themselves with all their groups.
func TestCurrentKeyReader(t *testing.T) {
	r := currentKeyReader()
	if u, err := user.Lookup(serviceUser); err == nil && os.Geteuid() == 0 {
		if r.name != serviceUser || strconv.FormatUint(uint64(r.primary), 10) != u.Gid {
			t.Errorf("root with a %s user: reader %q primary %d, want %s with gid %s", serviceUser, r.name, r.primary, serviceUser, u.Gid)
		}
		return
	}
	if r.primary != uint32(os.Getegid()) || !r.gids[uint32(os.Getegid())] {
		t.Errorf("reader primary %d, want our egid %d", r.primary, os.Getegid())
	}
	gs, _ := os.Getgroups()
	for _, g := range gs {
		if !r.gids[uint32(g)] {
			t.Errorf("supplementary group %d missing from %v", g, r.gids)
		}
	}
	if r.name == "" {
		t.Error("reader has no name")
	}
}
