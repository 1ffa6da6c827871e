package bench

import (
	"bytes"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/posture"
)

// TestGenerateMailLog: the generated log is read by the posture report
// line for line (nothing skipped, no warning: every STARTTLS session has
// its TLS line), its sessions are joined to peers with TLS, plaintext and
// every trust level, the peers grow with the partners; the same seed
// gives the same log.
func TestGenerateMailLog(t *testing.T) {
	var buf bytes.Buffer
	st, err := GenerateMailLog(&buf, MailLogOptions{Bytes: 8 << 20, Partners: 500})
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(buf.Len()) || st.Bytes < 8<<20 || st.Lines < 20000 {
		t.Fatalf("stats %+v for %d bytes", st, buf.Len())
	}
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	c := posture.New(posture.Options{Now: now})
	if err := c.Read("gen.log", bytes.NewReader(buf.Bytes()), now); err != nil {
		t.Fatal(err)
	}
	rep := c.Report()
	in := rep.Inputs[0]
	if in.Lines != st.Lines || len(in.Skipped) != 0 {
		t.Errorf("posture read %d lines (skipped %v), generated %d", in.Lines, in.Skipped, st.Lines)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings: %q", rep.Warnings)
	}
	kinds := map[string]int{}
	trust := map[string]bool{}
	plain := 0
	for _, p := range rep.Peers {
		kinds[string(p.Direction)+" "+string(p.Kind)]++
		plain += p.PlaintextSessions
		for k := range p.Trust {
			trust[k] = true
		}
	}
	t.Logf("%d lines, %d sessions, %d peers: %v; trust %v", st.Lines, st.Sessions, len(rep.Peers), kinds, trust)
	// Per partner: the inbound client and sender domain, the outbound
	// domain, and its two MX hosts as each MTA writes them (Postfix
	// "mx1.pN.example[IP]:25", Sendmail "mx1.pN.example. [IP]"); plus the
	// local LMTP delivery.
	if len(rep.Peers) < 4*500 || len(rep.Peers) > 7*500+2 {
		t.Errorf("%d peers from 500 partners", len(rep.Peers))
	}
	if plain == 0 || len(trust) < 4 {
		t.Errorf("plaintext sessions %d, trust levels %v", plain, trust)
	}
	var again bytes.Buffer
	GenerateMailLog(&again, MailLogOptions{Bytes: 8 << 20, Partners: 500})
	if !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Error("the same options gave another log")
	}
}
