package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/tlsgate/tlsgate/certs"
	"github.com/tlsgate/tlsgate/internal/listen"
	"github.com/tlsgate/tlsgate/internal/logx"
	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/reload"
	"github.com/tlsgate/tlsgate/internal/trust"
	"github.com/tlsgate/tlsgate/milter"
	"github.com/tlsgate/tlsgate/policyd"
)

const serveHelp = `
Runs the parts the configuration enables, each on its own listener:
  [milter]  listen             the milter (inbound checks, trace headers)
  [policyd] listen             the socketmap daemon (outbound TLS policy)
  [policyd] delegation_listen  Postfix policy delegation (inbound pins)

SIGHUP re-reads the configuration, the main file and the files its include
patterns name, and compiles again only the files whose content changed; a
mistake in any file is logged and the whole previous policy stays in force.
The endpoints, [certs], [log] level, [policyd] map_name, [milter]
authserv_id, [watch] and postfix_version apply on reload; a change to mta,
a listener or its socket_mode or socket_group, [metrics] listen, [log]
syslog or [discovery] is refused ("restart needed: ...", the previous
policy stays) until tlsgate is restarted. A signal that arrives while
serve starts is handled once it runs. SIGTERM or SIGINT stop accepting,
let the work in flight finish (at most --grace) and exit 0. Under systemd,
READY=1, RELOADING=1 and STOPPING=1 are sent (Type=notify). Unless the
environment sets GOGC, the garbage collector runs with a target of 50.

Exit status: 0 after a clean stop, 2 for a bad configuration at start,
3 when a listener cannot be opened.
`

// server is what serve runs: the milter and the two policyd servers share
// Serve and Shutdown.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", "tlsgate serve [-c FILE] [--grace DURATION]", serveHelp, stdout, stderr)
	file := fs.String("c", defaultConfig, "configuration `file`")
	grace := fs.Duration("grace", 30*time.Second, "how long in-flight work may take after SIGTERM")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "tlsgate serve: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	// Signals are caught from here on: a SIGHUP or SIGTERM that arrives
	// while the daemon loads and opens its listeners waits for the signal
	// loop (waitForStop) instead of killing the process.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if os.Getenv("GOGC") == "" {
		// Most of the heap is the policy, which stays; requests make
		// little garbage. The default target (100) would let the heap
		// grow to twice the policy between collections; half of that is
		// enough and costs little CPU.
		debug.SetGCPercent(daemonGCPercent)
	}
	ld := policy.NewLoader(*file)
	p, err := reload.Load(ld)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	level := new(slog.LevelVar)
	log, err := newLogger(p, level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate serve: %v\n", err)
		return exitUsage
	}
	holder := reload.NewFrom(ld, p, log)
	var m *metrics.Metrics
	if holder.Policy().Settings.MetricsListen != "" {
		m = metrics.New()
		m.Generation.Set(1)
		holder.OnReload = func(result string, gen uint64) {
			m.Reloads.WithLabelValues(result).Inc()
			m.Generation.Set(float64(gen))
		}
	}
	tr := &trustState{log: log, m: m, level: level}
	commit, err := tr.prepare(nil, holder.Policy())
	if err == nil {
		err = commit()
	}
	if err != nil {
		if le := (*policy.LoadError)(nil); errors.As(err, &le) {
			printLoadError(stderr, err) // FILE:LINE: per problem
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", *file, err)
		}
		return exitUsage
	}
	dr, err := newDiscoveryRun(holder.Policy(), log, m)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	holder.Prepare = tr.prepare
	if dr != nil {
		onReload := holder.OnReload
		holder.OnReload = func(result string, gen uint64) {
			if onReload != nil {
				onReload(result, gen)
			}
			dr.afterReload()
		}
	}
	return serve(holder, tr, log, m, dr, sigs, *grace, stderr)
}

// daemonGCPercent is serve's garbage collector target (GOGC) unless the
// environment sets one.
const daemonGCPercent = 50

// newLogger makes the daemon's logger on p's [log] settings; level holds
// the minimum level, which a reload may change.
func newLogger(p *policy.Policy, level *slog.LevelVar, stderr io.Writer) (*slog.Logger, error) {
	if err := level.UnmarshalText([]byte(p.Settings.LogLevel)); err != nil {
		return nil, err
	}
	h, err := logx.New(logx.Options{Level: level, Syslog: p.Settings.Syslog, Stderr: stderr})
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// limitedLogger is log with its warnings rate-limited (logx.Limit), for
// what a listener's clients can make tlsgate say; decisions are logged
// in full through log itself.
func limitedLogger(log *slog.Logger, name string) *slog.Logger {
	return slog.New(logx.Limit(log.Handler(), logx.LimitOptions{Name: name}))
}

// milterOptions configures the milter on h's policy; with metrics, each
// decision is counted and its judgement timed.
func milterOptions(h *reload.Holder, log *slog.Logger, m *metrics.Metrics) milter.Options {
	opts := milter.Options{Policy: h.Policy, Logger: log}
	if m != nil {
		opts.OnDecision = m.MilterDecision
	}
	return opts
}

// part is one server serve runs, with its listener setting and, once
// opened, its listener.
type part struct {
	name string
	l    policy.Listener
	srv  server
	ln   net.Listener
}

func serve(h *reload.Holder, tr *trustState, log *slog.Logger, m *metrics.Metrics, dr *discoveryRun, sigs <-chan os.Signal, grace time.Duration, stderr io.Writer) int {
	p := h.Policy()
	parts, err := newParts(h, log, m, dr)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate serve: %v\n", err)
		return exitRuntime
	}
	if len(parts) == 0 {
		fmt.Fprintln(stderr, "tlsgate serve: nothing to serve: set [milter] listen, [policyd] listen or [policyd] delegation_listen")
		return exitUsage
	}
	if err := openParts(parts, log); err != nil {
		fmt.Fprintf(stderr, "tlsgate serve: %v\n", err)
		return exitRuntime
	}
	errc := make(chan error, len(parts)+1)
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	if m != nil {
		if err := serveMetrics(mctx, m, p.Settings.MetricsListen, errc, log); err != nil {
			fmt.Fprintf(stderr, "tlsgate serve: metrics: %v\n", err)
			closeParts(parts)
			return exitRuntime
		}
	}
	stopWatchers := startWatchers(h, log, m) // [watch]: held mail, partner probes
	defer stopWatchers()
	if dr != nil {
		dr.start()
		defer dr.stop()
	}
	var wg sync.WaitGroup
	for _, pt := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pt.srv.Serve(pt.ln); err != nil && !errors.Is(err, policyd.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", pt.name, err)
			}
		}()
		log.Info("listening", "part", pt.name, "listen", pt.l.Addr)
	}
	code := waitForStop(h, tr, log, m, sigs, errc)
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, pt := range parts {
		if err := pt.srv.Shutdown(ctx); err != nil {
			log.Warn("stop", "part", pt.name, "error", err.Error())
		}
	}
	wg.Wait()
	return code
}

// newParts makes the servers the configuration enables. They share the
// open-file limit: each one's connection cap is its share
// (listen.ConnCap), so that no listener's clients can take the
// descriptors another one needs.
func newParts(h *reload.Holder, log *slog.Logger, m *metrics.Metrics, dr *discoveryRun) ([]*part, error) {
	s := h.Policy().Settings
	n := 0
	for _, l := range []policy.Listener{s.Milter, s.Socketmap, s.Delegation} {
		if l.Addr != "" {
			n++
		}
	}
	var parts []*part
	if s.Milter.Addr != "" {
		opts := milterOptions(h, log, m)
		opts.MaxConns = listen.ConnCap(milter.DefaultMaxConns, n)
		ms, err := milter.New(opts)
		if err != nil {
			return nil, fmt.Errorf("milter: %w", err)
		}
		parts = append(parts, &part{name: "milter", l: s.Milter, srv: ms})
	}
	if s.Socketmap.Addr != "" {
		smLog := limitedLogger(log, "socketmap")
		tm := &policyd.TLSMap{Policy: h.Policy, Logger: smLog}
		if dr != nil {
			tm.Discovery = dr.mapDiscovery()
			parts = append(parts, dr.controlPart(tm))
		}
		var lk policyd.Lookuper = tm
		if m != nil {
			lk = m.Lookuper(lk)
		}
		sm, err := policyd.NewSocketmapServer(policyd.SocketmapOptions{Lookuper: lk, Logger: smLog, MaxConns: listen.ConnCap(policyd.DefaultMaxConns, n)})
		if err != nil {
			return nil, fmt.Errorf("socketmap: %w", err)
		}
		parts = append(parts, &part{name: "socketmap", l: s.Socketmap, srv: sm})
	}
	if s.Delegation.Addr != "" {
		dc := &policyd.InboundPolicy{Policy: h.Policy, Logger: log}
		if m != nil {
			dc.OnDecision = m.DelegationDecision
		}
		ds, err := policyd.NewDelegationServer(policyd.DelegationOptions{Decider: dc, Logger: limitedLogger(log, "delegation"), MaxConns: listen.ConnCap(policyd.DefaultMaxConns, n)})
		if err != nil {
			return nil, fmt.Errorf("delegation: %w", err)
		}
		parts = append(parts, &part{name: "delegation", l: s.Delegation, srv: ds})
	}
	return parts, nil
}

// openParts opens the listener of each part; on a failure it closes those
// already open.
func openParts(parts []*part, log *slog.Logger) error {
	for i, pt := range parts {
		ln, err := listen.Open(pt.l.Addr, pt.l.Mode, pt.l.Group)
		if err != nil {
			log.Error("start", "part", pt.name, "listen", pt.l.Addr, "error", err.Error())
			closeParts(parts[:i])
			return fmt.Errorf("%s: %w", pt.name, err)
		}
		pt.ln = ln
	}
	return nil
}

func closeParts(parts []*part) {
	for _, pt := range parts {
		pt.ln.Close()
	}
}

// serveMetrics opens the metrics listener and serves it until ctx ends;
// a failure of the server goes to errc.
func serveMetrics(ctx context.Context, m *metrics.Metrics, addr string, errc chan<- error, log *slog.Logger) error {
	ln, err := listen.Open(addr, 0o660, "")
	if err != nil {
		return err
	}
	go func() {
		if err := m.Serve(ctx, ln); err != nil {
			errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
	log.Info("listening", "part", "metrics", "listen", addr)
	return nil
}

// waitForStop tells systemd the daemon is ready and handles signals until
// SIGTERM or SIGINT (sigs, caught since start), or until a part fails
// (errc): SIGHUP reloads the
// configuration, once a day the certificates' expiry is checked, and when
// an exception ends the log says so once (exceptionWatch). It returns the
// exit status.
func waitForStop(h *reload.Holder, tr *trustState, log *slog.Logger, m *metrics.Metrics, sigs <-chan os.Signal, errc <-chan error) int {
	p := h.Policy()
	log.Info("start", "file", p.File, "mta", string(p.MTA), "endpoints", len(p.Endpoints), "files", len(p.Files()), "pid", os.Getpid())
	daemon.SdNotify(false, daemon.SdNotifyReady)
	daily := time.NewTicker(expiryEvery)
	defer daily.Stop()
	exc := newExceptionWatch(log, m)
	defer exc.stop()
	for {
		select {
		case <-exc.C():
			exc.tick(h.Policy(), time.Now())
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				log.Info("stop", "signal", sig.String())
				return exitOK
			}
			daemon.SdNotify(false, "RELOADING=1\nMONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
			h.Reload() // logs its outcome; a failure keeps the old policy
			exc.tick(h.Policy(), time.Now())
			daemon.SdNotify(false, daemon.SdNotifyReady)
		case <-daily.C:
			tr.checkExpiry(h.Policy(), time.Now())
		case err := <-errc:
			log.Error("stop", "error", err.Error())
			return exitRuntime
		}
	}
}

// trustState is what serve keeps between reloads besides the policy: the
// trust plan in force (the CA store as the bundle holds it) and the log
// level. Its methods run on the signal loop only (start, reload and the
// daily expiry check), one at a time.
type trustState struct {
	log   *slog.Logger
	m     *metrics.Metrics
	level *slog.LevelVar
	plan  *trust.Plan // in force; nil before start
}

// prepare is the reload.Holder's Prepare: it refuses next when a setting
// changed that the running daemon cannot apply (restartNeeded) or when a
// CA in force would be dropped because its file can no longer be read;
// it logs every CA store file left out, and stages the CA bundle and
// trust-anchor files next needs. Its commit puts them in place, then
// applies next's log level and refreshes the certificate expiry figures.
// cur is nil at start.
func (tr *trustState) prepare(cur, next *policy.Policy) (func() error, error) {
	if cur != nil {
		if err := restartNeeded(cur, next); err != nil {
			return nil, err
		}
	}
	plan, err := trust.Prepare(next)
	if err != nil {
		return nil, err
	}
	for _, pr := range plan.StoreProblems(next) {
		tr.log.Error("ca-store", "file", pr.File, "line", pr.Line, "problem", pr.Msg)
	}
	if err := plan.Lost(tr.plan); err != nil {
		return nil, err
	}
	st, err := plan.Stage(next)
	if err != nil {
		return nil, err
	}
	return func() error {
		if err := st.Commit(); err != nil {
			return err
		}
		tr.plan = plan
		tr.level.UnmarshalText([]byte(next.Settings.LogLevel)) // compiled, so valid
		refreshExpiry(plan, time.Now(), tr.log, tr.m)
		return nil
	}, nil
}

// restartNeeded says which settings differ between cur and next that the
// running daemon took at start and cannot change: the MTA (it decides
// which listeners run), every listener with its socket mode and group,
// the metrics listener, the syslog choice and [discovery] (discoveryUnchanged).
func restartNeeded(cur, next *policy.Policy) error {
	if err := discoveryUnchanged(cur, next); err != nil {
		return err
	}
	a, b := cur.Settings, next.Settings
	var changed []string
	add := func(name string, x, y any) {
		if x != y && !slices.Contains(changed, name) {
			changed = append(changed, name)
		}
	}
	add("mta", cur.MTA, next.MTA)
	for _, l := range []struct {
		table, key string
		x, y       policy.Listener
	}{
		{"[milter]", "listen", a.Milter, b.Milter},
		{"[policyd]", "listen", a.Socketmap, b.Socketmap},
		{"[policyd]", "delegation_listen", a.Delegation, b.Delegation},
	} {
		add(l.table+" "+l.key, l.x.Addr, l.y.Addr)
		if strings.HasPrefix(l.y.Addr, "unix:") && l.x.Addr == l.y.Addr {
			add(l.table+" socket_mode", l.x.Mode, l.y.Mode)
			add(l.table+" socket_group", l.x.Group, l.y.Group)
		}
	}
	add("[metrics] listen", a.MetricsListen, b.MetricsListen)
	add("[log] syslog", a.Syslog, b.Syslog)
	if len(changed) == 0 {
		return nil
	}
	return fmt.Errorf("restart needed: %s changed; the running daemon cannot apply that on reload, so it keeps the previous policy: restart tlsgate (systemctl restart tlsgate) to apply the file", strings.Join(changed, ", "))
}

// checkExpiry re-reads the certificates p names (a renewed server
// certificate or CA store is picked up without a reload) and refreshes
// their expiry as of now. A certificate that can no longer be read is
// logged; the gauge then keeps its last values.
func (tr *trustState) checkExpiry(p *policy.Policy, now time.Time) {
	plan, err := trust.Prepare(p)
	if err == nil {
		err = plan.Lost(tr.plan)
	}
	if err != nil {
		tr.log.Warn("cert-expiry", "file", p.File, "error", err.Error())
		return
	}
	refreshExpiry(plan, now, tr.log, tr.m)
}

// expiryEvery is how often serve re-reads the certificates it knows to
// log those expiring soon and refresh the expiry gauge (tests shorten it).
var expiryEvery = 24 * time.Hour

// refreshExpiry logs the certificates of plan that expire within
// certs.DefaultWarnWithin of now or have expired and, with metrics, sets
// tlsgate_cert_expiry_seconds to exactly plan's certificates. Start,
// reload and the daily check all go through it.
func refreshExpiry(plan *trust.Plan, now time.Time, log *slog.Logger, m *metrics.Metrics) {
	for _, r := range plan.Expiry(now, certs.DefaultWarnWithin) {
		log.Warn("cert-expiry", "cert", r.Name, "not_after", r.NotAfter.UTC().Format(time.RFC3339), "days_left", int(r.Left.Hours()/24), "status", r.Status.String())
	}
	if m != nil {
		m.CertExpiry.Reset()
		for _, k := range plan.Known {
			m.CertExpiry.WithLabelValues(k.Name).Set(k.Cert.NotAfter.Sub(now).Seconds())
		}
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as sd_notify's
// MONOTONIC_USEC wants it.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Sec*1e6 + ts.Nsec/1e3
}
