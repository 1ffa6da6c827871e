package whatif

import (
	"context"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/mailq"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

func model(t *testing.T, conf string) *verdict.Model {
	t.Helper()
	p, err := policy.Parse("test.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return verdict.New(p)
}

// TestQueueEvidence: without logs or probes, the queue's own delay
// reasons are the evidence; a hop with none cannot be judged, which
// counts as worse when the answer changes.
func TestQueueEvidence(t *testing.T) {
	today := model(t, `mta = "postfix"
[[endpoint]]
name  = "same"
hosts = ["same.example"]
  [endpoint.outbound]
  encryption = true
`)
	next := model(t, `mta = "postfix"
[[endpoint]]
name  = "same"
hosts = ["same.example"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name  = "plain"
hosts = ["plain.example"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name  = "bad"
hosts = ["bad.example"]
  [endpoint.outbound]
  validate_cert = true
[[endpoint]]
name  = "quiet"
hosts = ["quiet.example"]
  [endpoint.outbound]
  encryption = true
[[endpoint]]
name  = "watched"
hosts = ["watched.example"]
mode  = "monitor"
  [endpoint.outbound]
  encryption = true
`)
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	msg := func(id, rcpt, reason string) mailq.Message {
		return mailq.Message{ID: id, Arrival: at, Recipients: []mailq.Recipient{{Address: rcpt, Reason: reason}}}
	}
	q := []mailq.Message{
		msg("A1", "u@plain.example", "TLS is required, but was not offered by host mx.plain.example[192.0.2.1]"),
		msg("A2", "v@plain.example", "TLS is required, but was not offered by host mx.plain.example[192.0.2.1]"),
		msg("B1", "u@bad.example", "Server certificate not verified"),
		msg("C1", "u@quiet.example", "connect to mx.quiet.example[192.0.2.3]:25: Connection refused"),
		msg("D1", "u@same.example", "TLS is required, but was not offered by host mx.same.example[192.0.2.4]"),
		msg("E1", "u@watched.example", "connect to mx.watched.example[192.0.2.5]:25: Connection timed out"),
		// Two recipients of one message at one next hop: one message.
		{ID: "F1", Arrival: at, Recipients: []mailq.Recipient{{Address: "a@other.example"}, {Address: "b@other.example"}}},
	}
	r, err := Run(context.Background(), Options{Current: today, New: next, Queue: q, Now: at.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		msgs    int
		outcome mtapolicy.Outcome
		worse   bool
	}{
		"plain.example":   {2, mtapolicy.Hold, true},
		"bad.example":     {1, mtapolicy.Hold, true},
		"quiet.example":   {1, mtapolicy.Unknown, true},
		"same.example":    {1, mtapolicy.Hold, false}, // unchanged answer: not worse
		"watched.example": {1, mtapolicy.Deliver, false},
		"other.example":   {1, mtapolicy.Deliver, false},
	}
	if len(r.Hops) != len(want) {
		t.Fatalf("%d hops: %+v", len(r.Hops), r.Hops)
	}
	for _, h := range r.Hops {
		w, ok := want[h.NextHop.Key]
		if !ok || h.Messages != w.msgs || h.NewOutcome != w.outcome || h.Worse != w.worse {
			t.Errorf("%s: %d msgs, %v (%s), worse %v; want %+v", h.NextHop.Key, h.Messages, h.NewOutcome, h.Why, h.Worse, w)
		}
	}
	if !r.Worse || r.Held != 4 || r.Unknown != 1 || r.Delivered != 2 {
		t.Errorf("worse %v held %d unknown %d delivered %d, want true 4 1 2", r.Worse, r.Held, r.Unknown, r.Delivered)
	}
}
