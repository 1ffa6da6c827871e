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
	"strconv"
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

SIGHUP re-reads the configuration; a file with mistakes is logged and the
previous policy stays in force. SIGTERM or SIGINT stop accepting, let the
work in flight finish (at most --grace) and exit 0. Under systemd, READY=1,
RELOADING=1 and STOPPING=1 are sent (Type=notify).

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
	p, err := policy.Load(*file)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	log, err := newLogger(p, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate serve: %v\n", err)
		return exitUsage
	}
	holder := reload.NewWith(*file, p, log)
	var m *metrics.Metrics
	if holder.Policy().Settings.MetricsListen != "" {
		m = metrics.New()
		m.Generation.Set(1)
		holder.OnReload = func(result string, gen uint64) {
			m.Reloads.WithLabelValues(result).Inc()
			m.Generation.Set(float64(gen))
		}
	}
	if err := prepareTrust(holder.Policy(), log, m); err != nil {
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
	holder.Prepare = func(p *policy.Policy) error {
		if err := discoveryUnchanged(holder.Policy(), p); err != nil {
			return err
		}
		return prepareTrust(p, log, m)
	}
	if dr != nil {
		onReload := holder.OnReload
		holder.OnReload = func(result string, gen uint64) {
			if onReload != nil {
				onReload(result, gen)
			}
			dr.afterReload()
		}
	}
	return serve(holder, log, m, dr, *grace, stderr)
}

func newLogger(p *policy.Policy, stderr io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(p.Settings.LogLevel)); err != nil {
		return nil, err
	}
	h, err := logx.New(logx.Options{Level: lvl, Syslog: p.Settings.Syslog, Stderr: stderr})
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

func serve(h *reload.Holder, log *slog.Logger, m *metrics.Metrics, dr *discoveryRun, grace time.Duration, stderr io.Writer) int {
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
	code := waitForStop(h, log, m, errc)
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
// SIGTERM or SIGINT, or until a part fails (errc): SIGHUP reloads the
// configuration, once a day the certificates' expiry is checked, and when
// an exception ends the log says so once (exceptionWatch). It returns the
// exit status.
func waitForStop(h *reload.Holder, log *slog.Logger, m *metrics.Metrics, errc <-chan error) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	p := h.Policy()
	log.Info("start", "file", p.File, "mta", string(p.MTA), "endpoints", len(p.Endpoints), "pid", os.Getpid())
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
			checkExpiry(h.Policy(), time.Now(), log, m)
		case err := <-errc:
			log.Error("stop", "error", err.Error())
			return exitRuntime
		}
	}
}

// prepareTrust writes the CA bundle and trust-anchor files the policy
// names and logs certificates that expire soon.
func prepareTrust(p *policy.Policy, log *slog.Logger, m *metrics.Metrics) error {
	plan, err := trust.Prepare(p)
	if err != nil {
		return err
	}
	if err := plan.Write(p); err != nil {
		return err
	}
	refreshExpiry(plan, time.Now(), log, m)
	return nil
}

// expiryEvery is how often serve re-reads the certificates it knows to
// log those expiring soon and refresh the expiry gauge (tests shorten it).
var expiryEvery = 24 * time.Hour

// checkExpiry re-reads the certificates p names (a renewed server
// certificate or CA store is picked up without a reload) and refreshes
// their expiry as of now. A certificate that can no longer be read is
// logged; the gauge then keeps its last values.
func checkExpiry(p *policy.Policy, now time.Time, log *slog.Logger, m *metrics.Metrics) {
	plan, err := trust.Prepare(p)
	if err != nil {
		log.Warn("cert-expiry", "file", p.File, "error", err.Error())
		return
	}
	refreshExpiry(plan, now, log, m)
}

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
