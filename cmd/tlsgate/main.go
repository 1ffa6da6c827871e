// Command tlsgate gives Postfix or Sendmail per-peer mandatory TLS
// endpoint policies: a milter for mail they send us, a socketmap policy
// daemon for mail we send them, and the tools to check and query both.
//
// Run "tlsgate help" for the subcommands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tlsgate/tlsgate/certs"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes shared by the subcommands.
const (
	exitOK      = 0
	exitFail    = 1 // a verdict or lookup said no / not found
	exitUsage   = 2 // bad command line or bad configuration
	exitRuntime = 3 // could not run (socket unreachable, ...)
)

const defaultConfig = "/etc/tlsgate/tlsgate.toml"

const usageText = `tlsgate: mandatory TLS endpoint policies for Postfix and Sendmail

Usage:
  tlsgate check     -c FILE          validate the configuration, name every mistake
  tlsgate query     -c FILE outbound KEY
                                     print the socketmap reply for a next hop
  tlsgate query     --socket SPEC outbound KEY
                                     ask the running daemon
  tlsgate query     -c FILE inbound --client-addr IP [...]
                                     print the verdict for an inbound session
  tlsgate serve     -c FILE          run the milter and the policy daemon
  tlsgate discovery [-c FILE] show|refresh|purge DOMAIN
                                     the running daemon's MTA-STS/DANE cache
  tlsgate mta-config -c FILE [--apply]
                                     the Postfix or Sendmail settings, merged
                                     with what the MTA has (--apply: set them)
  tlsgate posture   [-c FILE] LOG... TLS posture per peer from the mail log,
                                     with proposals (text, json, toml, html)
  tlsgate whatif    -c NEW.toml [--queue] [--logs LOG...]
                                     what a new configuration would hold
  tlsgate probe     [-c FILE] DOMAIN|[HOST]:PORT
                                     connect as our MTA would, show the TLS
  tlsgate certs     SUBCOMMAND       keys, CSRs, PKCS#12, show, verify, CA store
  tlsgate version                    print the version

Run "tlsgate COMMAND -h" for the options of a command.
The configuration defaults to ` + defaultConfig + `.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "query":
		return cmdQuery(rest, stdout, stderr)
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "discovery":
		return cmdDiscovery(rest, stdout, stderr)
	case "mta-config":
		return cmdMTAConfig(rest, stdout, stderr)
	case "posture":
		return cmdPosture(rest, stdin, stdout, stderr)
	case "whatif":
		return cmdWhatif(rest, stdout, stderr)
	case "probe":
		return cmdProbe(rest, stdout, stderr)
	case "certs":
		return certs.Main(rest, stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "tlsgate %s\n", version)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	fmt.Fprintf(stderr, "tlsgate: unknown command %q\n\n%s", cmd, usageText)
	return exitUsage
}

// newFlags returns a FlagSet whose -h output starts with usage and help.
func newFlags(name, usage, help string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fs.SetOutput(stdout)
		fmt.Fprintf(stdout, "Usage: %s\n\n%s\nOptions:\n", usage, strings.TrimSpace(help)+"\n")
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return fs
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments, and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flagExit maps a flag parsing error to an exit code: -h is success.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
