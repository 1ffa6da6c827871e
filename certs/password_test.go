package certs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPasswordSource(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TLSGATE_TEST_PW", "from env ")
	t.Setenv("TLSGATE_TEST_EMPTY", "")
	prompted := ""
	old := promptPassword
	promptPassword = func(p string) (string, error) { prompted = p; return "typed", nil }
	t.Cleanup(func() { promptPassword = old })

	tests := []struct {
		name    string
		src     PasswordSource
		want    string
		wantErr string
	}{
		{name: "file with newline", src: PasswordSource{File: writeFile(t, dir, "a", []byte("pw with spaces \n"), 0o600)}, want: "pw with spaces "},
		{name: "file with CRLF", src: PasswordSource{File: writeFile(t, dir, "b", []byte("windows\r\nsecond line\n"), 0o600)}, want: "windows"},
		{name: "file without newline", src: PasswordSource{File: writeFile(t, dir, "c", []byte("bare"), 0o600)}, want: "bare"},
		{name: "empty file", src: PasswordSource{File: writeFile(t, dir, "d", nil, 0o600)}, want: ""},
		{name: "missing file", src: PasswordSource{File: filepath.Join(dir, "nope")}, wantErr: "password file: open"},
		{name: "stdin", src: PasswordSource{File: "-", Stdin: strings.NewReader("piped\nrest")}, want: "piped"},
		{name: "env", src: PasswordSource{Env: "TLSGATE_TEST_PW"}, want: "from env "},
		{name: "env empty but set", src: PasswordSource{Env: "TLSGATE_TEST_EMPTY"}, want: ""},
		{name: "env unset", src: PasswordSource{Env: "TLSGATE_TEST_UNSET_XYZ"}, wantErr: "environment variable TLSGATE_TEST_UNSET_XYZ (named by --password-env) is not set"},
		{name: "both", src: PasswordSource{File: "x", Env: "y"}, wantErr: "not both"},
		{name: "prompt", src: PasswordSource{Prompt: "Password for x.pfx: "}, want: "typed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.src.Read()
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			noErr(t, err)
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	if prompted != "Password for x.pfx: " {
		t.Errorf("prompt was %q", prompted)
	}
}

func TestPasswordNoTerminal(t *testing.T) {
	// With a controlling terminal the real prompt would wait for input.
	if tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0); err == nil {
		tty.Close()
		t.Skip("running with a terminal")
	}
	_, err := PasswordSource{}.Read()
	if !errors.Is(err, ErrNoTerminal) {
		t.Fatalf("got %v, want ErrNoTerminal", err)
	}
	wantErr(t, err, "use --password-file FILE or --password-env VARIABLE")
}
