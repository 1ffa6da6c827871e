package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tlsgate/tlsgate/internal/mailq"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/posture"
	"github.com/tlsgate/tlsgate/internal/probe"
	"github.com/tlsgate/tlsgate/internal/verdict"
	"github.com/tlsgate/tlsgate/internal/whatif"
)

const whatifHelp = `
Tells what a new configuration would do, before it is deployed.

With --queue (the default when no --logs are given) it reads the live queue
(Postfix: postqueue -j; Sendmail: mailq) and shows, per next hop (Postfix:
the recipient domain routed through transport_maps and relayhost, as
postmap -q finds it), the queued messages, today's answer (from --current,
default the main configuration) and the new one, the TLS last seen with the
peer (a probe with --probe, else the logs given with --logs, else the
queue's delay reason), and the verdict: "would deliver" or "would stay
queued".

With --logs it re-judges the period's sessions (--since) with both files
and lists the peers whose sessions the new file would have refused
(inbound) or held (outbound) that today's file let through. Sessions whose
judgement needs facts the log does not show (certificate names) are
counted apart and do not count as worse.

Exit status: 0 nothing would change for the worse, 1 something would
(mail that would stay queued, sessions that would be refused, a next hop
the new file cannot be judged on), 2 usage or configuration error, 3 the
queue could not be read. It can gate a deployment pipeline.
`

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdWhatif(args []string, stdout, stderr io.Writer) int {
	fl := newFlags("whatif", "tlsgate whatif -c NEW.toml [--current FILE] [--queue] [--probe] [--logs LOG...]", whatifHelp, stdout, stderr)
	file := fl.String("c", "", "the new configuration `file` (required)")
	current := fl.String("current", defaultConfig, "today's configuration `file`")
	useQueue := fl.Bool("queue", false, "read the live queue (default when no --logs are given)")
	var logs stringList
	fl.Var(&logs, "logs", "mail `log` to re-judge (repeatable; further arguments are logs too)")
	since := fl.String("since", "30d", "period of the logs: 30d, 12h, a date or \"all\"")
	now := fl.String("now", "", "judge as of this `time` (RFC 3339), for reproducible runs")
	doProbe := fl.Bool("probe", false, "probe each next hop with queued mail (STARTTLS, as the MTA would)")
	postqueue := fl.String("postqueue", "postqueue", "Postfix's postqueue `command`")
	pfDir := fl.String("postfix-config", "", "Postfix configuration `dir`ectory (postqueue/postconf/postmap -c)")
	mailqCmd := fl.String("mailq", "mailq", "Sendmail's queue listing `command` (e.g. \"sendmail -C /etc/mail/sendmail.cf -bp\")")
	timeout := fl.Duration("timeout", 30*time.Second, "time limit for the queue listing and each probe")
	pos, err := parseInterspersed(fl, args)
	if err != nil {
		return flagExit(err)
	}
	logs = append(logs, pos...)
	if *file == "" {
		fmt.Fprintln(stderr, "tlsgate whatif: -c NEW.toml is required: the configuration to try")
		return exitUsage
	}
	if !*useQueue && len(logs) == 0 {
		*useQueue = true
	}
	next, err := policy.Load(*file)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	var today *policy.Policy
	if p, err := policy.Load(*current); err == nil {
		today = p
	} else if !flagGiven(fl, "current") && errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "tlsgate whatif: %s does not exist: today, every next hop gets the MTA's default\n", *current)
		if today, err = policy.Parse("(no current configuration)", []byte(fmt.Sprintf("mta = %q\n", next.MTA))); err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
	} else {
		printLoadError(stderr, err)
		return exitUsage
	}
	if today.MTA != next.MTA {
		fmt.Fprintf(stderr, "tlsgate whatif: %s is for %s, %s for %s\n", today.File, today.MTA, next.File, next.MTA)
		return exitUsage
	}
	o := whatif.Options{Current: verdict.New(today), New: verdict.New(next), Now: time.Now()}
	if *now != "" {
		t, err := time.Parse(time.RFC3339, *now)
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate whatif: --now %q: want RFC 3339\n", *now)
			return exitUsage
		}
		o.Now = t
	}
	if len(logs) > 0 {
		for i, m := range []*verdict.Model{o.Current, o.New} {
			s, err := parseSince(*since, o.Now)
			if err != nil {
				fmt.Fprintf(stderr, "tlsgate whatif: --since: %v\n", err)
				return exitUsage
			}
			c := posture.New(posture.Options{Model: m, Since: s, Now: o.Now})
			if code := readLogs(c, logs, nil, stderr, "whatif"); code != exitOK {
				return code
			}
			if i == 0 {
				o.Logs = c.Report()
			} else {
				o.LogsNew = c.Report()
			}
		}
	}
	ctx := context.Background()
	if *useQueue {
		var src mailq.Source
		if next.MTA == policy.Sendmail {
			src = mailq.Sendmail(strings.Fields(*mailqCmd))
		} else {
			src = mailq.Postfix(*postqueue, *pfDir)
			o.Route = postfixRouter(*pfDir, *postqueue)
		}
		src.Timeout = *timeout
		q, err := src.Read(ctx, o.Now)
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate whatif: %v\n", err)
			return exitRuntime
		}
		if q == nil {
			q = []mailq.Message{}
		}
		o.Queue = q
	}
	if *doProbe {
		popts := probe.Options{Timeout: *timeout, MaxHosts: 1}
		roots, _, err := loadRoots(next.Settings)
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate whatif: %v\n", err)
			return exitUsage
		}
		popts.Roots = roots
		o.Probe = func(ctx context.Context, t probe.Target) ([]probe.Result, error) { return probe.Probe(ctx, t, popts) }
	}
	res, err := whatif.Run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate whatif: %v\n", err)
		return exitRuntime
	}
	printWhatif(stdout, res, today.File, next.File, o, *useQueue)
	if res.Worse {
		return exitFail
	}
	return exitOK
}

func printWhatif(w io.Writer, r *whatif.Result, today, next string, o whatif.Options, queue bool) {
	fmt.Fprintf(w, "tlsgate whatif: %s (new) against %s (today)\n", next, today)
	if queue {
		msgs := 0
		for _, h := range r.Hops {
			msgs += h.Messages
		}
		fmt.Fprintf(w, "\nQueue: %d message(s) to %d next hop(s)\n", msgs, len(r.Hops))
		if len(r.Hops) > 0 {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "  NEXT HOP\tMSGS\tOLDEST\tTODAY\tNEW\tTLS SEEN\tVERDICT")
			for _, h := range r.Hops {
				oldest := "-"
				if !h.Oldest.IsZero() {
					oldest = h.Oldest.Local().Format("2006-01-02 15:04")
				}
				verdictText := h.NewOutcome.String()
				if h.NewOutcome != mtapolicy.Deliver && h.Why != "" {
					verdictText += ": " + h.Why
				}
				if h.Worse {
					verdictText += " [worse]"
				}
				fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\n", h.NextHop.Key, h.Messages, oldest,
					answerCell(h.Today, h.TodayText), answerCell(h.New, h.NewText), h.Evidence, verdictText)
			}
			tw.Flush()
		}
		if r.Unknown > 0 {
			fmt.Fprintf(w, "%d would stay queued, %d cannot be judged (probe with --probe), %d would deliver.\n", r.Held, r.Unknown, r.Delivered)
		} else {
			fmt.Fprintf(w, "%d would stay queued, %d would deliver.\n", r.Held, r.Delivered)
		}
	}
	if o.Logs != nil {
		fmt.Fprintf(w, "\nLogs: %d log(s)", len(o.Logs.Inputs))
		if o.Logs.Since != nil {
			fmt.Fprintf(w, " since %s", o.Logs.Since.Format("2006-01-02"))
		}
		fmt.Fprintln(w, ": sessions the new file would have refused (inbound) or held (outbound)")
		if len(r.Changes) == 0 {
			fmt.Fprintln(w, "  none more than today")
		}
		for _, c := range r.Changes {
			fmt.Fprintf(w, "  %s %s %s: %d of %d sessions (today %d), endpoint %s", c.Direction, c.Kind, c.Peer, c.New, c.Sessions, c.Today, strings.Join(c.Endpoints, ","))
			if c.LastSession != nil {
				fmt.Fprintf(w, ", last %s", c.LastSession.Describe())
			}
			if c.Reason != "" {
				fmt.Fprintf(w, "; %s", c.Reason)
			}
			fmt.Fprintln(w)
		}
		for _, warn := range o.Logs.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", warn)
		}
	}
	if r.Worse {
		fmt.Fprintln(w, "\nSomething would change for the worse.")
	} else {
		fmt.Fprintln(w, "\nNothing would change for the worse.")
	}
}

func answerCell(a verdict.Answer, active string) string {
	switch {
	case a.Err != nil:
		return "TEMP (lookup error)"
	case a.Endpoint == "":
		return "default"
	case active == "":
		return a.Endpoint + ": default (monitor)"
	}
	return a.Endpoint + ": " + active
}

// postfixRouter finds a domain's next hop as Postfix would: the first
// transport_maps entry for the domain or a parent (".example.com"), else
// relayhost, else the domain itself (postfixRoutes).
func postfixRouter(dir, postqueue string) whatif.Router {
	r := &postfixRoutes{dir: dir, postqueue: postqueue, ttl: time.Hour}
	return func(domain string) (whatif.NextHop, error) {
		hops, err := r.route(context.Background(), []string{domain}, true)
		if err != nil {
			return whatif.NextHop{}, err
		}
		return hops[domain], nil
	}
}

// parseTransport reads a transport(5) value "transport:nexthop" for mail
// to domain.
func parseTransport(domain, value string) whatif.NextHop {
	if value == "" {
		return whatif.NextHop{Key: domain, Domain: domain}
	}
	transport, nexthop, _ := strings.Cut(value, ":")
	switch transport {
	case "error", "discard", "local", "virtual", "retry", "hold":
		return whatif.NextHop{Key: domain, Domain: domain, NoTLS: true}
	}
	if nexthop == "" {
		return whatif.NextHop{Key: domain, Domain: domain}
	}
	if strings.HasPrefix(nexthop, "[") {
		end := strings.IndexByte(nexthop, ']')
		if end > 0 {
			host, port := nexthop[1:end], 25
			if p, err := strconv.Atoi(strings.TrimPrefix(nexthop[end+1:], ":")); err == nil {
				port = p
			}
			return whatif.NextHop{Key: nexthop, Host: strings.TrimPrefix(host, "IPv6:"), Port: port, Bracketed: true}
		}
	}
	if h, p, ok := strings.Cut(nexthop, ":"); ok {
		port, _ := strconv.Atoi(p)
		return whatif.NextHop{Key: nexthop, Host: h, Port: port}
	}
	// A bare host is looked up like a domain (with its parents).
	return whatif.NextHop{Key: nexthop, Domain: nexthop, Host: nexthop, Port: 25}
}
