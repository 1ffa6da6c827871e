package policy

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Watch are the [watch] settings: what serve watches besides answering
// the MTA. The held-mail watch reads the MTA's queue (one postqueue -j or
// mailq per interval) and reports, per endpoint, the mail held because of
// TLS; the partner probes connect to covered partners' servers as the MTA
// would and warn of certificates that expire soon and keys that change.
// A file without a [watch] table runs neither; a [watch] table runs the
// held-mail watch every minute unless held_interval = "off", and the
// probes only when probe_interval is set.
type Watch struct {
	// HeldInterval is how often the queue is read ([watch]
	// held_interval; default 1 minute; 0 when "off").
	HeldInterval time.Duration
	// QueueTimeout limits one reading of the queue ([watch]
	// queue_timeout; default 30 s).
	QueueTimeout time.Duration
	// Postqueue is Postfix's postqueue command ([watch] postqueue;
	// default "postqueue" on PATH). postconf and postmap are taken from
	// the same directory when it is a path.
	Postqueue string
	// PostfixConfig is Postfix's configuration directory, passed as -c
	// ([watch] postfix_config; "" = Postfix's default).
	PostfixConfig string
	// Mailq is Sendmail's queue listing command and its arguments
	// ([watch] mailq; default "mailq").
	Mailq []string
	// ProbeInterval is how often covered partners are probed ([watch]
	// probe_interval; 0 = never, the default).
	ProbeInterval time.Duration
	// ProbeEndpoints names the endpoints whose partners are probed
	// ([watch] probe_endpoints); nil means every endpoint with an
	// [endpoint.outbound] table.
	ProbeEndpoints []string
	// ProbeTimeout limits the probe of one server ([watch] probe_timeout;
	// default 30 s).
	ProbeTimeout time.Duration
}

// Watch defaults and limits.
const (
	DefaultHeldInterval = time.Minute
	DefaultQueueTimeout = 30 * time.Second
	DefaultProbeTimeout = 30 * time.Second
	minHeldInterval     = time.Second
	minProbeInterval    = time.Minute
)

// watch compiles the [watch] table into s. probe_endpoints is kept as
// written: the endpoints it names may be in included files, and the
// assembler checks them (assembler.watch). Every string kept is a copy
// (see settings).
func (c *compiler) watch(s *Settings, r *rawWatch) {
	if r == nil {
		return
	}
	w := &Watch{HeldInterval: DefaultHeldInterval, QueueTimeout: DefaultQueueTimeout, ProbeTimeout: DefaultProbeTimeout}
	dur := func(key, v string, dst *time.Duration, off bool, minimum time.Duration) {
		if v == "" {
			return
		}
		d, err := parseWatchDuration(v, off)
		if err != nil {
			c.at("watch."+key, "%s = %q: %v", key, v, err)
			return
		}
		if d != 0 && d < minimum {
			c.at("watch."+key, "%s = %q: want at least %v", key, v, minimum)
			return
		}
		*dst = d
	}
	dur("held_interval", r.HeldInterval, &w.HeldInterval, true, minHeldInterval)
	dur("queue_timeout", r.QueueTimeout, &w.QueueTimeout, false, time.Second)
	dur("probe_interval", r.ProbeInterval, &w.ProbeInterval, true, minProbeInterval)
	dur("probe_timeout", r.ProbeTimeout, &w.ProbeTimeout, false, time.Second)

	switch c.u.mta {
	case Postfix:
		if r.Mailq != "" {
			c.at("watch.mailq", `mailq is Sendmail's queue listing; with mta = "postfix" the queue is read with postqueue -j: set postqueue and postfix_config instead, or remove mailq`)
		}
	case Sendmail:
		for _, k := range []struct{ key, v string }{{"postqueue", r.Postqueue}, {"postfix_config", r.PostfixConfig}} {
			if k.v != "" {
				c.at("watch."+k.key, `%s is for Postfix; with mta = "sendmail" the queue is read with mailq: set mailq instead (for example "/usr/sbin/sendmail -bp"), or remove %s`, k.key, k.key)
			}
		}
	}
	w.Postqueue = strings.Clone(r.Postqueue)
	if w.Postqueue == "" {
		w.Postqueue = "postqueue"
	} else if err := commandName(w.Postqueue); err != nil {
		c.at("watch.postqueue", "postqueue = %q: %v", r.Postqueue, err)
	}
	w.PostfixConfig = strings.Clone(r.PostfixConfig)
	if w.PostfixConfig != "" && !filepath.IsAbs(w.PostfixConfig) {
		c.at("watch.postfix_config", "postfix_config = %q must be an absolute path (the directory of main.cf)", w.PostfixConfig)
	}
	w.Mailq = strings.Fields(strings.Clone(r.Mailq))
	if r.Mailq == "" {
		w.Mailq = []string{"mailq"}
	} else if len(w.Mailq) == 0 {
		c.at("watch.mailq", "mailq is empty: give a command such as \"mailq\" or \"/usr/sbin/sendmail -bp\"")
	} else if err := commandName(w.Mailq[0]); err != nil {
		c.at("watch.mailq", "mailq = %q: %v", r.Mailq, err)
	}

	if r.ProbeEndpoints != nil {
		if r.ProbeInterval == "" || isOff(r.ProbeInterval) {
			c.at("watch.probe_endpoints", "probe_endpoints has no effect without probe_interval: set probe_interval (for example \"24h\") or remove probe_endpoints")
		}
		if len(r.ProbeEndpoints) == 0 {
			c.at("watch.probe_endpoints", "probe_endpoints is empty: name the endpoints to probe, or remove it to probe every endpoint with [endpoint.outbound]")
		}
		for _, name := range r.ProbeEndpoints {
			w.ProbeEndpoints = append(w.ProbeEndpoints, strings.Clone(name))
		}
	}
	s.Watch = w
}

// watch checks the endpoints [watch] probe_endpoints names, now that all
// files' endpoints are known, and gives the policy a Watch of its own
// whose ProbeEndpoints are their names as the endpoints spell them.
func (a *assembler) watch(names map[string]int32) {
	p := a.p
	w := p.Settings.Watch
	if w == nil || w.ProbeEndpoints == nil {
		return
	}
	line := p.Line("watch.probe_endpoints")
	cp := *w
	cp.ProbeEndpoints = make([]string, 0, len(w.ProbeEndpoints))
	seen := map[string]bool{}
	for _, name := range w.ProbeEndpoints {
		id, ok := names[lowerASCII(name)]
		var ep *Endpoint
		if ok {
			ep = p.byID[id]
		}
		switch {
		case ep == nil:
			a.problem(p.File, line, "probe_endpoints: no endpoint is named %q%s", name, a.closestName(name))
		case !ep.Defines(Outbound):
			a.problem(p.File, line, "probe_endpoints: endpoint %q (%s) has no [endpoint.outbound] table: it names no servers we deliver to", name, lineIn(ep.File, ep.Line, p.File))
		case seen[ep.Name]:
			a.problem(p.File, line, "probe_endpoints: %q is listed twice", name)
		default:
			seen[ep.Name] = true
			cp.ProbeEndpoints = append(cp.ProbeEndpoints, ep.Name)
		}
	}
	p.Settings.Watch = &cp
}

// isOff reports whether a duration setting says "off".
func isOff(s string) bool { s = strings.TrimSpace(s); return s == "off" || s == "0" }

// commandName checks a command: an absolute path or a bare name looked up
// on PATH.
func commandName(s string) error {
	if strings.ContainsRune(s, '/') && !filepath.IsAbs(s) {
		return fmt.Errorf("want an absolute path or a command name looked up on PATH")
	}
	return nil
}

// parseWatchDuration reads "30s", "1m", "24h", "1h30m" or "7d"; with off,
// also "off" (0).
func parseWatchDuration(s string, off bool) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if off && isOff(s) {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 366 {
			return 0, fmt.Errorf("want a duration such as \"1m\", \"24h\" or \"7d\"")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		if off {
			return 0, fmt.Errorf("want a duration such as \"1m\", \"24h\" or \"7d\", or \"off\"")
		}
		return 0, fmt.Errorf("want a duration such as \"10s\" or \"1m\"")
	}
	return d, nil
}
