package certs

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/certid"
)

// Exit statuses of [Main].
const (
	ExitOK      = 0 // success
	ExitFailed  = 1 // a certificate failed verification
	ExitUsage   = 2 // bad usage, unreadable or unacceptable input
	cmdPrefix   = "tlsgate certs"
	helpCommand = "help"
)

const mainUsage = `usage: tlsgate certs COMMAND [options] [arguments]

Prepare the certificates and keys your mail server needs before partners can
be required to use verified TLS.

Commands:
  key       create a new private key for this mail server
  csr       create a certificate signing request (CSR) to send to your CA
  pfx2pem   convert a .pfx/.p12 file (e.g. exported from Windows) to PEM files
  show      print subject, issuer, validity, names and SHA-256 fingerprints
  verify    check a certificate against a CA store, as Postfix would
  store     list, add or remove CA certificates in tlsgate's CA store

Run "tlsgate certs COMMAND -h" for the options of one command.

Exit status: 0 ok, 1 a certificate failed verification, 2 bad usage or
unreadable input. Passwords are never taken from the command line.
`

// env is what a subcommand runs with.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	now            func() time.Time
}

type command struct {
	usage string
	run   func(e *env, args []string) int
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"key":     {keyUsage, runKey},
		"csr":     {csrUsage, runCSR},
		"pfx2pem": {pfxUsage, runPFX},
		"show":    {showUsage, runShow},
		"verify":  {verifyUsage, runVerify},
		"store":   {storeUsage, runStore},
	}
}

// Main runs the "tlsgate certs" subcommand with args (the arguments after
// "certs") and returns the process exit status: 0 ok, 1 verification
// failure, 2 usage or input error. Help (-h, --help, "help COMMAND") goes to
// stdout, errors to stderr.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, now: time.Now}
	return e.main(args)
}

func (e *env) main(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, mainUsage)
		return ExitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", helpCommand:
		if name == helpCommand && len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				fmt.Fprint(e.stdout, c.usage)
				return ExitOK
			}
			fmt.Fprintf(e.stderr, "%s: unknown command %q\n\n%s", cmdPrefix, args[1], mainUsage)
			return ExitUsage
		}
		fmt.Fprint(e.stdout, mainUsage)
		return ExitOK
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(e.stderr, "%s: unknown command %q\n\n%s", cmdPrefix, name, mainUsage)
		return ExitUsage
	}
	return c.run(e, args[1:])
}

// newFlagSet returns a silent FlagSet; parse prints help and errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(cmdPrefix+" "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if onNewFlagSet != nil {
		onNewFlagSet(fs)
	}
	return fs
}

// onNewFlagSet lets tests check that every flag is documented.
var onNewFlagSet func(*flag.FlagSet)

// parse parses flags anywhere among the arguments ("verify CERT --name X"
// works as admins expect); "--" ends flag parsing. On -h it prints usage to
// stdout. ok is false when the command should return code.
func (e *env) parse(fs *flag.FlagSet, usage string, args []string) (pos []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(e.stdout, usage)
				return nil, ExitOK, false
			}
			return nil, e.usageError(fs.Name(), err.Error()), false
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), 0, true
		}
		if len(rest) == 0 {
			return pos, 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (e *env) usageError(cmd, msg string) int {
	fmt.Fprintf(e.stderr, "%s: %s\nRun \"%s -h\" for help.\n", cmd, msg, cmd)
	return ExitUsage
}

// fail prints an error (which normally starts with "certs: ") and returns
// code. The message may quote a certificate: it is made safe for a
// terminal.
func (e *env) fail(code int, err error) int {
	msg := certid.Printable(err.Error())
	if !strings.HasPrefix(msg, "certs: ") {
		msg = "certs: " + msg
	}
	fmt.Fprintf(e.stderr, "tlsgate %s\n", msg)
	return code
}

// maxInput bounds what a command reads from one file or from standard
// input: far above any certificate bundle, far below what would exhaust
// memory by mistake (certs show /dev/zero).
const maxInput = 64 << 20

// readInput reads a file, "-" meaning standard input, of at most maxInput
// bytes.
func (e *env) readInput(path string) ([]byte, error) { return e.readInputMax(path, maxInput) }

// readInputMax is readInput with a limit of its own.
func (e *env) readInputMax(path string, limit int64) ([]byte, error) {
	name, r := "standard input", e.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		defer f.Close()
		name, r = path, f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("certs: read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("certs: %s is larger than %d bytes, the most this command reads; not reading it", name, limit)
	}
	return b, nil
}

// stringList is a repeatable flag whose values may also be comma-separated.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// parseTime accepts a date, a date and time, or RFC 3339; plain dates and
// times are UTC.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read time %q: use 2006-01-02, \"2006-01-02 15:04\" or RFC 3339", s)
}
