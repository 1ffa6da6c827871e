// Command tlsgate-demo plays tlsgate's demo on this machine: a private
// Postfix on loopback with tlsgate attached through "tlsgate mta-config",
// one partner that must use TLS with a verified certificate and one whose
// servers do not offer TLS, both directions of mail, told in plain words.
// It cleans up after itself and sends nothing off the machine.
//
// Usage (as root, after scripts/install-test-deps.sh; "make demo" does
// both and builds ./tlsgate):
//
//	tlsgate-demo [-tlsgate ./tlsgate] [-v]
//
// The exit status is 0 when everything went as the policy says, 1 when a
// story went otherwise or a part could not be started, 2 for bad usage.
// See package internal/lab/demo for what is played.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tlsgate/tlsgate/internal/lab/demo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tlsgate-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("tlsgate", "./tlsgate", "path of the tlsgate `binary` to run (make build writes ./tlsgate)")
	verbose := fs.Bool("v", false, "also print the test harness's own log lines (to stderr)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tlsgate-demo [-tlsgate PATH] [-v]")
		fmt.Fprintln(stderr, "Plays tlsgate's demo with a private Postfix on loopback (root, Debian 12; see make demo).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tlsgate-demo: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := demo.Options{Tlsgate: *bin, Out: stdout}
	if *verbose {
		o.Verbose = stderr
	}
	sum, err := demo.Run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "\ntlsgate-demo: FAILED: %v\n", err)
		return 1
	}
	if sum != demo.Want {
		fmt.Fprintf(stderr, "\ntlsgate-demo: FAILED: got %s; want %s\n", sum, demo.Want)
		return 1
	}
	return 0
}
