package policyd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// SendmailMapName is the map name Sendmail sends for its access map. For
// Sendmail tlsgate answers on it as well as on [policyd] map_name, the
// name of the socket map of its own that "tlsgate mta-config" wires.
const SendmailMapName = "access"

// TLSMap answers the MTA's outbound TLS lookups (Postfix
// smtp_tls_policy_maps, Sendmail's access map) from the current policy.
// It never answers NOTFOUND for a key it cannot decide: an unloaded policy,
// an unknown map name or a malformed key is TEMP, so that the MTA defers
// instead of falling back to its opportunistic default.
type TLSMap struct {
	// Policy returns the model in force; nil means none is loaded.
	Policy func() *policy.Policy
	// Logger receives one line per lookup error or undecidable key (warn)
	// and per lookup answered for an endpoint in monitor mode or by an
	// unexpired exception (info); the other answers are logged at debug:
	// Postfix caches them per
	// delivery and logs each delivery's TLS outcome itself, and a line per
	// lookup would cost more CPU than the lookup (docs/benchmarks.md).
	// Nil discards.
	Logger *slog.Logger
	// Now is the clock each key is answered at (an exception applies
	// until it expires). Default: time.Now.
	Now func() time.Time
	// Discovery, if set and the policy has a [discovery] table, adds
	// discovered MTA-STS and DANE policies (see Discovery).
	Discovery *Discovery
}

var _ Lookuper = (*TLSMap)(nil)

// Lookup implements Lookuper.
func (m *TLSMap) Lookup(ctx context.Context, name, key string) Reply {
	p := m.Policy()
	if p == nil {
		m.log(ctx, slog.LevelWarn, name, key, "TEMP", "no policy loaded")
		return Reply{Status: StatusTemp, Data: "tlsgate has no policy loaded"}
	}
	if r, ok := m.discovered(ctx, p, name, key); ok {
		return r
	}
	if !servesMap(p, name) {
		m.log(ctx, slog.LevelWarn, name, key, "TEMP", "unknown map name, expected "+p.Settings.MapName)
		return unknownMapReply(p, name)
	}
	a, err := p.At(m.now()).Outbound(key)
	r := AnswerReply(a, err)
	lvl := slog.LevelDebug
	switch {
	case err != nil:
		lvl = slog.LevelWarn
	case a.Monitor() || a.Exception != nil:
		lvl = slog.LevelInfo
	}
	m.logAnswer(ctx, lvl, name, key, a, r, err)
	return r
}

// servesMap reports whether the endpoints answer the map name: [policyd]
// map_name, and for Sendmail its access map as well.
func servesMap(p *policy.Policy, name string) bool {
	return name == p.Settings.MapName || (p.MTA == policy.Sendmail && name == SendmailMapName)
}

// unknownMapReply is the TEMP reply for a map name tlsgate does not serve.
func unknownMapReply(p *policy.Policy, name string) Reply {
	return Reply{Status: StatusTemp, Data: "unknown map " + clip(name) + "; this tlsgate serves " + p.Settings.MapName}
}

// now returns the time keys are answered at.
func (m *TLSMap) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// AnswerNote says what an answer means beyond its reply, for logs and
// tlsgate query: that a monitor-mode endpoint's rules were withheld (and
// what enforce would answer), that a key Sendmail may have cut got the
// strictest endpoint it could belong to. "" when there is nothing to add.
func AnswerNote(a policy.Answer) string {
	var notes []string
	if a.Monitor() {
		n := "monitor mode: answered NOTFOUND"
		if a.Rules != "" {
			n += "; enforce would answer OK " + a.Rules
		}
		notes = append(notes, n)
	}
	if a.Truncated {
		notes = append(notes, fmt.Sprintf("the key may have been cut by Sendmail at %d bytes: answered with the strictest endpoint it could belong to", policy.SendmailMaxKey))
	}
	return strings.Join(notes, "; ")
}

// AnswerReply turns an outbound answer into the socketmap reply the MTA
// gets: OK with the policy text, NOTFOUND for uncovered keys, TEMP for
// keys that cannot be decided (the reason cut to 200 bytes: it quotes the
// key, and Postfix logs at most 200 bytes of it).
func AnswerReply(a policy.Answer, err error) Reply {
	switch {
	case err != nil:
		return Reply{Status: StatusTemp, Data: "cannot decide key: " + clip(err.Error())}
	case a.Found:
		return Reply{Status: StatusOK, Data: a.Text}
	}
	return Reply{Status: StatusNotFound}
}

// String returns the reply payload as sent on the wire, e.g.
// "OK secure match=mx.example.com" or "NOTFOUND ".
func (r Reply) String() string {
	switch r.Status {
	case StatusNotFound:
		return "NOTFOUND "
	case StatusOK, StatusTemp, StatusTimeout, StatusPerm:
		return r.Status.String() + " " + r.Data
	}
	return "TEMP " + reasonInternal
}

// log writes a line for a lookup that got no answer from the policy
// (no policy loaded, an unknown map name).
func (m *TLSMap) log(ctx context.Context, lvl slog.Level, name, key, answer, reason string) {
	m.write(ctx, lvl, answer, nil, nil, name, key, reason)
}

// logAnswer writes the line of an answered lookup.
func (m *TLSMap) logAnswer(ctx context.Context, lvl slog.Level, name, key string, a policy.Answer, r Reply, err error) {
	reason := AnswerNote(a)
	if err != nil {
		reason = err.Error()
	}
	var x *policy.Endpoint
	if a.Exception != nil {
		x = a.Exception.Endpoint
	}
	m.write(ctx, lvl, r.String(), a.Endpoint, x, name, key, reason)
}

// write writes one lookup line: tlsgate's own fields (answer, endpoint,
// exception) first, then what the MTA sent (map, key) and the reason,
// which may quote the key:
//
//	NOQUEUE: tls-policy-lookup answer="OK secure match=mx1.company-b.example"
//	endpoint=company-b map=tlspolicy key=company-b.example
func (m *TLSMap) write(ctx context.Context, lvl slog.Level, answer string, ep, exception *policy.Endpoint, name, key, reason string) {
	if m.Logger == nil || !m.Logger.Enabled(ctx, lvl) {
		return
	}
	// Keys and reasons come from the client: cut so that a long key of control bytes
	// (each escaped as 4) cannot make a line of tens of kilobytes.
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String("answer", answer))
	if ep != nil {
		attrs = append(attrs, slog.String("endpoint", ep.Name))
	}
	if exception != nil {
		attrs = append(attrs, slog.String("exception", exception.Name))
	}
	attrs = append(attrs, slog.String("map", clip(name)), slog.String("key", clip(key)))
	if reason != "" {
		attrs = append(attrs, slog.String("reason", clip(reason)))
	}
	m.Logger.LogAttrs(ctx, lvl, "tls-policy-lookup", attrs...)
}
