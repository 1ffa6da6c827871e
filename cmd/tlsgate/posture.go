package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/posture"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

const postureHelp = `
Reads Postfix and Sendmail logs (plain, rotated .gz, "journalctl -o
short-iso" output; LOG "-" is standard input) and tlsgate's own decision
lines, and reports per peer what TLS was used: outbound by next-hop domain
and by server, inbound by client and by sender domain, with sessions,
messages, first and last seen, TLS versions, ciphers, bits, certificate
trust (anonymous, untrusted, trusted, verified) and plaintext sessions.

Peers covered by the configuration are judged with it as if enforced
("would pass under enforce: N of M sessions"). For uncovered peers with
enough evidence (--min-sessions over --min-days) it proposes an endpoint:
"ready: encryption, min_bits = 128", "ready: verified", or "not ready: 3
plaintext sessions, last 2026-11-30". --format toml prints the ready ones as
[[endpoint]] blocks in monitor mode, to paste into the configuration.

The logs must show TLS: Postfix needs smtpd_tls_loglevel = 1 and
smtp_tls_loglevel = 1 (the default 0 logs nothing about TLS), Sendmail
LogLevel 9 or higher. posture warns when they do not. Lines that are not
log lines (binary data, truncated or over-long lines) are skipped and
counted. Timestamps without a year are placed in the year that makes them
not later than the file's modification time.

Exit status: 0 report written, 2 usage or configuration error, 3 a log
could not be read.
`

func cmdPosture(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fl := newFlags("posture", "tlsgate posture [-c FILE] [--since 30d] [--format text|json|toml|html] [--out FILE] LOG...", postureHelp, stdout, stderr)
	file := fl.String("c", defaultConfig, "configuration `file` to judge covered peers with (\"\" or missing default: judge nothing)")
	since := fl.String("since", "30d", "report the last `period` (30d, 12h) or since a date (2026-11-01); \"all\" reads everything")
	format := fl.String("format", "text", "output `format`: text, json, toml or html")
	out := fl.String("out", "", "write the report to `file` instead of standard output")
	minSessions := fl.Int("min-sessions", 20, "sessions a proposal needs")
	minDays := fl.Int("min-days", 14, "days between first and last session a proposal needs")
	now := fl.String("now", "", "report as of this `time` (RFC 3339; default now), for reproducible reports")
	pos, err := parseInterspersed(fl, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "tlsgate posture: name at least one LOG (\"-\" for standard input)")
		return exitUsage
	}
	switch *format {
	case "text", "json", "toml", "html":
	default:
		fmt.Fprintf(stderr, "tlsgate posture: --format %q: want text, json, toml or html\n", *format)
		return exitUsage
	}
	opts, code := reportOptions(*file, flagGiven(fl, "c"), *since, *now, stderr, "posture")
	if code != exitOK {
		return code
	}
	opts.MinSessions, opts.MinDays = orNegative(*minSessions), orNegative(*minDays)
	c := posture.New(opts)
	if code := readLogs(c, pos, stdin, stderr, "posture"); code != exitOK {
		return code
	}
	r := c.Report()
	w := stdout
	var f *os.File
	if *out != "" {
		if f, err = os.Create(*out); err != nil {
			fmt.Fprintf(stderr, "tlsgate posture: %v\n", err)
			return exitUsage
		}
		w = f
	}
	bw := bufio.NewWriter(w)
	switch *format {
	case "json":
		err = r.WriteJSON(bw)
	case "toml":
		err = r.WriteTOML(bw)
	case "html":
		err = r.WriteHTML(bw)
	default:
		err = r.WriteText(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate posture: %v\n", err)
		return exitRuntime
	}
	if *format != "text" {
		for _, warn := range r.Warnings {
			fmt.Fprintf(stderr, "tlsgate posture: warning: %s\n", warn)
		}
	}
	return exitOK
}

// orNegative maps 0 ("no minimum") to the collector's "none" value.
func orNegative(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// flagGiven reports whether flag name was given on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// reportOptions loads the policy (a missing default file means "judge
// nothing") and parses --since and --now.
func reportOptions(file string, explicit bool, since, now string, stderr io.Writer, cmd string) (posture.Options, int) {
	var opts posture.Options
	opts.Now = time.Now()
	if now != "" {
		t, err := time.Parse(time.RFC3339, now)
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate %s: --now %q: want RFC 3339, e.g. 2026-12-01T00:00:00Z\n", cmd, now)
			return opts, exitUsage
		}
		opts.Now = t
	}
	s, err := parseSince(since, opts.Now)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate %s: --since: %v\n", cmd, err)
		return opts, exitUsage
	}
	opts.Since = s
	if file != "" {
		p, err := policy.Load(file)
		switch {
		case err == nil:
			opts.Model = verdict.New(p)
		case !explicit && errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(stderr, "tlsgate %s: %s does not exist: peers are not judged (give -c FILE)\n", cmd, file)
		default:
			printLoadError(stderr, err)
			return opts, exitUsage
		}
	}
	return opts, exitOK
}

// parseSince reads "30d", "12h", "2026-11-01", an RFC 3339 time or "all".
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == "all":
		return time.Time{}, nil
	case strings.HasSuffix(s, "d"):
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil || n < 0 {
			return time.Time{}, fmt.Errorf("%q: want a number of days (30d), hours (12h), a date (2026-11-01) or all", s)
		}
		return now.AddDate(0, 0, -n), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want a number of days (30d), hours (12h), a date (2026-11-01) or all", s)
}

// readLogs reads the logs oldest first (by modification time: rotated
// files are older), so that sessions are joined across file boundaries
// whatever order the shell's glob gave.
func readLogs(c *posture.Collector, paths []string, stdin io.Reader, stderr io.Writer, cmd string) int {
	type in struct {
		path string
		mod  time.Time
	}
	var ins []in
	stdinSeen := false
	for _, p := range paths {
		if p == "-" {
			if stdinSeen {
				fmt.Fprintf(stderr, "tlsgate %s: \"-\" (standard input) given twice\n", cmd)
				return exitUsage
			}
			stdinSeen = true
			ins = append(ins, in{path: p, mod: time.Now()})
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate %s: %v\n", cmd, err)
			return exitUsage
		}
		if fi.IsDir() {
			fmt.Fprintf(stderr, "tlsgate %s: %s is a directory; name the log files\n", cmd, p)
			return exitUsage
		}
		ins = append(ins, in{path: p, mod: fi.ModTime()})
	}
	sort.SliceStable(ins, func(i, j int) bool { return ins[i].mod.Before(ins[j].mod) })
	for _, i := range ins {
		if err := c.ReadFile(i.path, stdin); err != nil {
			fmt.Fprintf(stderr, "tlsgate %s: %v\n", cmd, err)
			return exitRuntime
		}
	}
	return exitOK
}
