package policyd

import (
	"context"
	"log/slog"
	"time"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// SendmailMapName is the map name Sendmail sends for its access map.
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
	// and per lookup answered for an endpoint in monitor mode (info);
	// the other answers are logged at debug: Postfix caches them per
	// delivery and logs each delivery's TLS outcome itself, and a line per
	// lookup would cost more CPU than the lookup (docs/benchmarks.md).
	// Nil discards.
	Logger *slog.Logger
	// Discovery, if set and the policy has a [discovery] table, adds
	// discovered MTA-STS and DANE policies (see Discovery).
	Discovery *Discovery
}

var _ Lookuper = (*TLSMap)(nil)

// Lookup implements Lookuper.
func (m *TLSMap) Lookup(ctx context.Context, name, key string) Reply {
	p := m.Policy()
	if p == nil {
		m.log(ctx, slog.LevelWarn, name, key, nil, "TEMP", "no policy loaded")
		return Reply{Status: StatusTemp, Data: "tlsgate has no policy loaded"}
	}
	if r, ok := m.discovered(ctx, p, name, key); ok {
		return r
	}
	want := p.Settings.MapName
	if p.MTA == policy.Sendmail {
		want = SendmailMapName
	}
	if name != want {
		m.log(ctx, slog.LevelWarn, name, key, nil, "TEMP", "unknown map name, expected "+want)
		return Reply{Status: StatusTemp, Data: "unknown map " + clip(name) + "; this tlsgate serves " + want}
	}
	a, err := p.At(time.Now()).Outbound(key)
	r := AnswerReply(a, err)
	lvl := slog.LevelDebug
	switch {
	case err != nil:
		lvl = slog.LevelWarn
	case a.Endpoint != nil && !a.Found:
		lvl = slog.LevelInfo // monitor mode: what would have been enforced
	}
	reason := ""
	if err != nil {
		reason = err.Error()
	} else if a.Endpoint != nil && !a.Found {
		reason = "monitor mode: the MTA default applies"
	}
	m.log(ctx, lvl, name, key, a.Endpoint, r.String(), reason)
	return r
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

func (m *TLSMap) log(ctx context.Context, lvl slog.Level, name, key string, ep *policy.Endpoint, answer, reason string) {
	if m.Logger == nil || !m.Logger.Enabled(ctx, lvl) {
		return
	}
	// Keys and reasons come from the client: cut so that a long key of control bytes
	// (each escaped as 4) cannot make a line of tens of kilobytes.
	attrs := []slog.Attr{slog.String("map", clip(name)), slog.String("key", clip(key))}
	if ep != nil {
		attrs = append(attrs, slog.String("endpoint", ep.Name))
	}
	attrs = append(attrs, slog.String("answer", answer))
	if reason != "" {
		attrs = append(attrs, slog.String("reason", clip(reason)))
	}
	m.Logger.LogAttrs(ctx, lvl, "tls-policy-lookup", attrs...)
}
