package certs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
)

// PasswordSource says where a password comes from. Passwords are never
// taken from the command line, where every user can read them in ps(1)
// output and shell history. At most one of File and Env may be set; if
// neither is, the password is asked for on the terminal without echo.
type PasswordSource struct {
	// File is a file whose first line is the password ("-" reads the
	// first line of Stdin). A trailing "\n" or "\r\n" is removed, nothing
	// else.
	File string
	// Env is the name of an environment variable holding the password. It
	// must be set; it may be empty.
	Env string
	// Stdin is read when File is "-"; nil means os.Stdin.
	Stdin io.Reader
	// Prompt is the text shown on the terminal; empty means "Password: ".
	Prompt string
}

// ErrNoTerminal is returned by [PasswordSource.Read] when the password
// would have to be asked for but there is no terminal.
var ErrNoTerminal = errors.New("certs: no terminal to ask for the password on; use --password-file FILE or --password-env VARIABLE")

// Read returns the password.
func (p PasswordSource) Read() (string, error) {
	switch {
	case p.File != "" && p.Env != "":
		return "", errors.New("certs: give the password either in a file or in an environment variable, not both")
	case p.Env != "":
		v, ok := os.LookupEnv(p.Env)
		if !ok {
			return "", fmt.Errorf("certs: environment variable %s (named by --password-env) is not set", p.Env)
		}
		return v, nil
	case p.File == "-":
		in := p.Stdin
		if in == nil {
			in = os.Stdin
		}
		return readFirstLine(bufio.NewReader(in), "standard input")
	case p.File != "":
		f, err := os.Open(p.File)
		if err != nil {
			return "", fmt.Errorf("certs: password file: %w", err)
		}
		defer f.Close()
		return readFirstLine(bufio.NewReader(f), p.File)
	}
	prompt := p.Prompt
	if prompt == "" {
		prompt = "Password: "
	}
	return promptPassword(prompt)
}

func readFirstLine(r *bufio.Reader, what string) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("certs: read password from %s: %w", what, err)
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	return line, nil
}

// promptPassword asks on the controlling terminal (/dev/tty), so that it
// works even when standard input and output are redirected. Tests replace
// it.
var promptPassword = func(prompt string) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return "", ErrNoTerminal
	}
	defer tty.Close()
	fd := int(tty.Fd())
	if !term.IsTerminal(fd) {
		return "", ErrNoTerminal
	}
	fmt.Fprint(tty, prompt)
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(tty)
	if err != nil {
		return "", fmt.Errorf("certs: read password from terminal: %w", err)
	}
	return string(pw), nil
}
