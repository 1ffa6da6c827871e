package main

import (
	"context"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/internal/control"
	"github.com/tlsgate/tlsgate/internal/discovery"
	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/policyd"
)

// discoveryRun is the discovery engine of a running daemon: made once at
// start from the [discovery] settings, refreshed ahead of expiry and saved
// by its Run loop, asked by the socketmap and the control socket.
type discoveryRun struct {
	d      *discovery.Discoverer
	guard  *daneGuard // Postfix with dane = true only
	ctl    policy.Listener
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan error
}

// newDiscoveryRun makes the engine for p, or returns nil when p has no
// [discovery] table. With metrics, the engine's counters are exported.
func newDiscoveryRun(p *policy.Policy, log *slog.Logger, m *metrics.Metrics) (*discoveryRun, error) {
	ds := p.Settings.Discovery
	if ds == nil {
		return nil, nil
	}
	d, err := newDiscoverer(p, log, true)
	if err != nil {
		return nil, err
	}
	r := &discoveryRun{d: d, log: log, ctl: policy.Listener{Addr: "unix:" + ds.ControlSocket, Mode: 0o600}}
	if p.MTA == policy.Postfix && ds.DANE {
		r.guard = &daneGuard{}
	}
	if m != nil {
		m.AddDiscovery(d.Stats)
	}
	if ds.CacheFile != "" {
		// Reading a large cache file leaves garbage the runtime would keep
		// mapped for minutes (100,000 domains: tens of MB); return it now,
		// in the background.
		go debug.FreeOSMemory()
	}
	return r, nil
}

// start checks the resolver (a failure turns DANE off with one error
// line, logged by the engine's event) and Postfix's DANE settings, and
// starts the refresh and save loop.
func (r *discoveryRun) start() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	r.d.SelfCheck(ctx)
	cancel()
	if r.guard != nil {
		r.guard.check(r.log)
	}
	ctx, r.cancel = context.WithCancel(context.Background())
	r.done = make(chan error, 1)
	go func() { r.done <- r.d.Run(ctx) }()
}

// stop ends the loop, which saves the cache file once more.
func (r *discoveryRun) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		r.log.Error("discovery-cache", "error", "saving the cache at stop: "+err.Error())
	}
}

// afterReload re-checks Postfix's DANE settings (an administrator who
// fixed main.cf sends SIGHUP).
func (r *discoveryRun) afterReload() {
	if r.guard != nil {
		r.guard.check(r.log)
	}
}

// mapDiscovery is what the socketmap needs.
func (r *discoveryRun) mapDiscovery() *policyd.Discovery {
	dc := &policyd.Discovery{Engine: r.d}
	if r.guard != nil {
		dc.DANEAllowed = r.guard.allowed
	}
	return dc
}

// controlPart is the control socket as one of serve's parts.
func (r *discoveryRun) controlPart(m *policyd.TLSMap) *part {
	ctx, cancel := context.WithCancel(context.Background())
	return &part{name: "control", l: r.ctl, srv: &controlServer{h: controlHandler(r.d, m), log: r.log, ctx: ctx, cancel: cancel}}
}

// controlServer adapts control.Serve to serve's parts.
type controlServer struct {
	h      control.Handler
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (s *controlServer) Serve(ln net.Listener) error {
	s.wg.Add(1)
	defer s.wg.Done()
	return control.Serve(s.ctx, ln, s.h, s.log)
}

func (s *controlServer) Shutdown(ctx context.Context) error {
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
