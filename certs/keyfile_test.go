package certs

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCheckKeyFile(t *testing.T) {
	k, _ := GenerateKey("p256")
	keyPEM, _ := MarshalKeyPEM(k)
	tests := []struct {
		name    string
		perm    os.FileMode
		wantErr string
	}{
		{name: "0600", perm: 0o600},
		{name: "0400", perm: 0o400},
		{name: "0700", perm: 0o700},
		{name: "0644 world readable", perm: 0o644, wantErr: "is readable by group and others (mode 0644); only its owner may read it, fix with: chmod 600 "},
		{name: "0640 group readable", perm: 0o640, wantErr: "readable by its group (mode 0640)"},
		{name: "0604 others", perm: 0o604, wantErr: "readable by others (mode 0604)"},
		{name: "0620 group writable", perm: 0o620, wantErr: "writable by its group"},
		{name: "0666", perm: 0o666, wantErr: "chmod 600"},
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
