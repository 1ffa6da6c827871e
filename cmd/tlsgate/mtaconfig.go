package main

import (
	"fmt"
	"io"

	"github.com/tlsgate/tlsgate/internal/mtaconf"
	"github.com/tlsgate/tlsgate/internal/policy"
)

const mtaConfigHelp = `
Prints the MTA configuration that wires Postfix (main.cf parameters) or
Sendmail (.mc lines) to tlsgate, derived from the same file the daemons read:
the milter socket with fail-closed defaults (milter_default_action = tempfail,
F=T), the outbound TLS policy socketmap, client-certificate requests, CA files,
SHA-256 fingerprints and, on Postfix, the check_policy_service entry that
enforces inbound fingerprint pins. Review the lines, paste them, then run
"postfix reload" (Postfix) or rebuild sendmail.cf (Sendmail).
`

func cmdMTAConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("mta-config", "tlsgate mta-config [-c FILE] [--queue-dir DIR]", mtaConfigHelp, stdout, stderr)
	file := fs.String("c", defaultConfig, "configuration `file`")
	qdir := fs.String("queue-dir", "/var/spool/postfix", "Postfix queue_directory; unix sockets below it are written relative to it")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "tlsgate mta-config: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	p, err := policy.Load(*file)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	if p.MTA == policy.Sendmail {
		text, err := mtaconf.Sendmail(p)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		fmt.Fprint(stdout, text)
		return exitOK
	}
	pf, err := mtaconf.ForPostfix(p, mtaconf.Options{PostfixQueueDir: *qdir})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	fmt.Fprint(stdout, pf.Text(p.File))
	return exitOK
}
