package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/metrics"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/reload"
	"github.com/tlsgate/tlsgate/milter"
)

// TestMilterDecisionIsTimed drives the milter serve builds through one
// refused MAIL FROM and checks that the decision is counted and its
// judgement lands in the milter part of the decision-latency histogram.
func TestMilterDecisionIsTimed(t *testing.T) {
	p, err := policy.Parse("test.toml", []byte(`mta = "postfix"
[[endpoint]]
name  = "company-b"
hosts = ["192.0.2.10"]
  [endpoint.inbound]
  encryption = true
`))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New()
	ms, err := milter.New(milterOptions(reload.NewWith("test.toml", p, log), log, m))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ms.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms.Shutdown(ctx)
		<-done
	}()

	macros := gomilter.NewMacroBag()
	for k, v := range map[string]string{"{client_addr}": "192.0.2.10", "{client_name}": "unknown", "{client_resolve}": "OK",
		"j": "mx.lab.test", "v": "Postfix 3.7.11", "{mail_addr}": "a@x.example"} {
		macros.Set(gomilter.MacroName(k), v)
	}
	cs, err := gomilter.NewClient("tcp", ln.Addr().String()).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if act, err := cs.Conn("unknown", gomilter.FamilyInet, 40000, "192.0.2.10"); err != nil || act.Type != gomilter.ActionContinue {
		t.Fatalf("connect: %v %v", act, err)
	}
	if act, err := cs.Helo("client.example"); err != nil || act.Type != gomilter.ActionContinue {
		t.Fatalf("helo: %v %v", act, err)
	}
	act, err := cs.Mail("a@x.example", "")
	if err != nil {
		t.Fatalf("mail: %v", err)
	}
	if act.Type != gomilter.ActionRejectWithCode || act.SMTPCode != policy.DeferCode {
		t.Fatalf("plaintext MAIL from a covered peer: %+v, want %d", act, policy.DeferCode)
	}
	if got := testutil.ToFloat64(m.Decisions.WithLabelValues("milter", "company-b", "defer")); got != 1 {
		t.Errorf(`decisions{part="milter",endpoint="company-b",result="defer"} = %v, want 1`, got)
	}
	if n := testutil.CollectAndCount(m.DecisionSeconds, "tlsgate_inbound_decision_duration_seconds"); n != 1 {
		t.Fatalf("decision histogram has %d series, want 1 (milter)", n)
	}
	if n, sum := milterSamples(t, m); n != 1 || sum <= 0 {
		t.Errorf(`decision_duration_seconds{part="milter"}: %d samples summing to %vs, want 1 > 0s`, n, sum)
	}
}

// milterSamples returns the sample count and sum of the milter's
// decision-latency histogram as the registry exposes it.
func milterSamples(t *testing.T, m *metrics.Metrics) (uint64, float64) {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tlsgate_inbound_decision_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "part" && l.GetValue() == "milter" {
					return s.GetHistogram().GetSampleCount(), s.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	return 0, 0
}
