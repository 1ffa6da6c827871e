package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/mtaconf"
	"github.com/tlsgate/tlsgate/internal/whatif"
)

// postfixRoutes finds the next hop of recipient domains as Postfix does:
// the first transport_maps entry for the domain or a parent domain
// (".example.com"), else relayhost, else the domain itself. It asks
// Postfix's own tools, a few commands per call whatever the number of
// domains: one postconf for transport_maps and relayhost, then one
// "postmap -q -" per table with every key on its standard input. Answers
// are kept for ttl, so that a watch that runs every minute asks again only
// for new domains, and sees a changed table within ttl.
type postfixRoutes struct {
	// dir is Postfix's configuration directory ("" = its default);
	// postqueue is the postqueue command: postconf and postmap are taken
	// from its directory when it is a path.
	dir, postqueue string
	// timeout limits each command (default 30 s); ttl keeps answers
	// (0: each call asks again).
	timeout, ttl time.Duration

	loaded    time.Time
	maps      []string
	relayhost string
	cache     map[string]cachedHop
}

type cachedHop struct {
	hop   whatif.NextHop
	relay bool // the hop is relayhost's
	at    time.Time
}

// bin returns the path of a Postfix command beside postqueue.
func (r *postfixRoutes) bin(name string) string {
	if i := strings.LastIndexByte(r.postqueue, '/'); i >= 0 {
		return r.postqueue[:i+1] + name
	}
	return name
}

// run runs the Postfix command name (postconf, postmap) with -c dir and
// args, stdin on its standard input.
func (r *postfixRoutes) run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	t := r.timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	if r.dir != "" {
		args = append([]string{"-c", r.dir}, args...)
	}
	postmap := name == "postmap"
	name = r.bin(name)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && postmap && cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 1 && stderr.Len() == 0 {
		// postmap -q: no key was found.
		return "", nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%s %s: no answer within %v", name, strings.Join(args, " "), t)
		}
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// route returns the next hop of each domain; with relay false, a domain
// that only relayhost routes gets its own name (the partner's servers,
// not our relay, for probes).
func (r *postfixRoutes) route(ctx context.Context, domains []string, relay bool) (map[string]whatif.NextHop, error) {
	now := time.Now()
	if r.cache == nil || now.Sub(r.loaded) >= r.ttl {
		out, err := r.run(ctx, "", "postconf", "-h", "transport_maps", "relayhost")
		if err != nil {
			return nil, err
		}
		lines := strings.SplitN(out, "\n", 3)
		for len(lines) < 2 {
			lines = append(lines, "")
		}
		maps, err := mtaconf.SplitList(lines[0])
		if err != nil {
			return nil, fmt.Errorf("transport_maps: %w", err)
		}
		r.maps = maps
		r.relayhost = strings.TrimSpace(lines[1])
		r.cache, r.loaded = map[string]cachedHop{}, now
	}
	out := make(map[string]whatif.NextHop, len(domains))
	var ask []string
	for _, d := range domains {
		if c, ok := r.cache[d]; ok && now.Sub(c.at) < r.ttl {
			out[d] = hopFor(d, c, relay)
			continue
		}
		if _, dup := out[d]; !dup {
			ask = append(ask, d)
			out[d] = whatif.NextHop{}
		}
	}
	if len(ask) == 0 {
		return out, nil
	}
	// Every key of every asked domain, in Postfix's order: the domain,
	// then .parent for each parent domain.
	var keys []string
	keysOf := map[string][]string{}
	for _, d := range ask {
		ks := []string{d}
		for p := d; strings.Contains(p, "."); {
			p = p[strings.IndexByte(p, '.')+1:]
			ks = append(ks, "."+p)
		}
		keysOf[d] = ks
		keys = append(keys, ks...)
	}
	found := make([]map[string]string, len(r.maps))
	for i, m := range r.maps {
		res, err := r.run(ctx, strings.Join(keys, "\n")+"\n", "postmap", "-q", "-", m)
		if err != nil {
			return nil, err
		}
		found[i] = map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(res))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "\t"); ok {
				found[i][k] = strings.TrimSpace(v)
			}
		}
	}
	for _, d := range ask {
		value := ""
	lookup:
		for _, k := range keysOf[d] {
			for i := range r.maps {
				if v, ok := found[i][k]; ok {
					value = v
					break lookup
				}
			}
		}
		c := cachedHop{at: now}
		if value == "" && r.relayhost != "" {
			value, c.relay = "smtp:"+r.relayhost, true
		}
		c.hop = parseTransport(d, value)
		r.cache[d] = c
		out[d] = hopFor(d, c, relay)
	}
	return out, nil
}

func hopFor(domain string, c cachedHop, relay bool) whatif.NextHop {
	if c.relay && !relay {
		return whatif.NextHop{Key: domain, Domain: domain}
	}
	return c.hop
}
