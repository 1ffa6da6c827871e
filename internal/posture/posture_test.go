package posture

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/golden"
	"github.com/tlsgate/tlsgate/internal/policy"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

// fixtureNow is a day after the capture: the reports of the fixtures are
// the same whenever the tests run.
var fixtureNow = time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)

func labModel(t testing.TB) *verdict.Model {
	t.Helper()
	p, err := policy.Load(labPolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	return verdict.New(p)
}

// labReport reads files (under testdata/lab) with the lab policy and the
// lab's proposal rules (2 sessions, any span: the capture lasts seconds).
func labReport(t testing.TB, files ...string) *Report {
	t.Helper()
	c := New(Options{Model: labModel(t), Now: fixtureNow, MinSessions: 20, MinDays: -1})
	for _, f := range files {
		if err := c.ReadFile(filepath.Join("testdata", "lab", f), nil); err != nil {
			t.Fatal(err)
		}
	}
	return c.Report()
}

func reportJSON(t testing.TB, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func peerOf(t *testing.T, r *Report, d Direction, k Kind, name string) *PeerReport {
	t.Helper()
	for i := range r.Peers {
		if p := &r.Peers[i]; p.Direction == d && p.Kind == k && p.Peer == name {
			return p
		}
	}
	t.Fatalf("no %s %s peer %q in the report", d, k, name)
	return nil
}

// TestGoldenLab: the captured Postfix and Sendmail logs give exactly the
// JSON in testdata (go test -update rewrites it after a re-capture).
func TestGoldenLab(t *testing.T) {
	for _, tc := range []struct {
		golden string
		files  []string
	}{
		{"postfix.json", []string{"postfix.log"}},
		{"sendmail.json", []string{"sendmail.log"}},
		{"both.json", []string{"postfix.log", "sendmail.log"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			golden.Check(t, tc.golden, reportJSON(t, labReport(t, tc.files...)))
		})
	}
}

// TestLabFacts states what the golden files must show, so that an
// -update cannot silently bless a wrong join.
func TestLabFacts(t *testing.T) {
	r := labReport(t, "postfix.log", "sendmail.log")
	type want struct {
		d                         Direction
		k                         Kind
		name                      string
		sessions, messages, plain int
		trust                     map[string]int
		proposal, judgement       string
	}
	for _, w := range []want{
		// Outbound, Postfix: one TLS line per session, joined by smtp PID.
		{Outbound, KindDomain, "verified.partner.test", 4, 4, 0, map[string]int{"verified": 4}, "", "would pass under enforce: 4 of 4 sessions"},
		{Outbound, KindDomain, "trusted.partner.test", 3, 3, 0, map[string]int{"trusted": 3}, "not enough evidence: 3 sessions over 0 days (need 20 over 0)", ""},
		{Outbound, KindDomain, "untrusted.partner.test", 2, 2, 0, map[string]int{"untrusted": 2}, "not enough evidence: 2 sessions over 0 days (need 20 over 0)", ""},
		{Outbound, KindDomain, "plain.partner.test", 2, 2, 2, nil, "not enough evidence: 2 sessions over 0 days (need 20 over 0)", ""},
		// The name is not in the log: a secure policy cannot be judged.
		{Outbound, KindDomain, "wrongname.partner.test", 2, 2, 0, map[string]int{"trusted": 2}, "", "would pass under enforce: 0 of 2 sessions (2 cannot be judged from the log)"},
		// The proposal rules.
		{Outbound, KindDomain, "ready.partner.test", 20, 20, 0, map[string]int{"verified": 20}, "ready: verified, min_bits = 128", ""},
		{Outbound, KindDomain, "notready.partner.test", 21, 21, 1, map[string]int{"verified": 20}, "not ready: 1 plaintext session, last 2026-12-07", ""},
		// Sendmail outbound: STARTTLS=client joined by PID; the second
		// instance's smart host has no STARTTLS.
		{Outbound, KindDomain, "sm-out.test", 15, 15, 0, map[string]int{"trusted": 15}, "not enough evidence: 15 sessions over 0 days (need 20 over 0)", ""},
		{Outbound, KindDomain, "plain-out.test", 2, 2, 2, nil, "not enough evidence: 2 sessions over 0 days (need 20 over 0)", ""},
		// Inbound, both MTAs: Postfix 4 + Sendmail 4 + 2 plaintext to the
		// second Sendmail.
		{Inbound, KindClient, "mx.trusted.test[127.0.0.2]", 10, 10, 2, map[string]int{"trusted": 8}, "not enough evidence: 10 sessions over 0 days (need 20 over 0)", ""},
		{Inbound, KindClient, "mx.untrusted.test[127.0.0.4]", 4, 4, 0, map[string]int{"untrusted": 4}, "not enough evidence: 4 sessions over 0 days (need 20 over 0)", ""},
		{Inbound, KindClient, "mx.anon.test[127.0.0.3]", 6, 6, 0, map[string]int{"anonymous": 6}, "not enough evidence: 6 sessions over 0 days (need 20 over 0)", ""},
		{Inbound, KindClient, "mx.mixed.test[127.0.0.6]", 8, 8, 2, map[string]int{"anonymous": 6}, "", "would pass under enforce: 6 of 8 sessions"},
		{Inbound, KindSender, "trusted.test", 10, 10, 2, map[string]int{"trusted": 8}, "", "would pass under enforce: 8 of 10 sessions"},
	} {
		p := peerOf(t, r, w.d, w.k, w.name)
		if p.Sessions != w.sessions || p.Messages != w.messages || p.PlaintextSessions != w.plain || !reflect.DeepEqual(p.Trust, w.trust) {
			t.Errorf("%s: sessions %d messages %d plaintext %d trust %v, want %d %d %d %v", w.name, p.Sessions, p.Messages, p.PlaintextSessions, p.Trust, w.sessions, w.messages, w.plain, w.trust)
		}
		got := ""
		if p.Proposal != nil {
			got = p.Proposal.Text
		}
		if got != w.proposal {
			t.Errorf("%s: proposal %q, want %q", w.name, got, w.proposal)
		}
		got = ""
		if p.Judgement != nil {
			got = p.Judgement.Summary
		}
		if got != w.judgement {
			t.Errorf("%s: judgement %q, want %q", w.name, got, w.judgement)
		}
	}
	// tlsproxy and connection reuse: 4 messages; a delivery with
	// conn_use=N > 1 went over an earlier session, so the sessions are
	// the deliveries without conn_use (counted here from the raw log).
	raw := string(mustRead(t, "testdata/lab/postfix.log"))
	fresh := len(regexp.MustCompile(`to=<user@reuse\.partner\.test>, relay=127[^,]*, delay=`).FindAllString(raw, -1))
	reused := len(regexp.MustCompile(`to=<user@reuse\.partner\.test>, relay=127[^,]*, conn_use=[2-9]`).FindAllString(raw, -1))
	if fresh+reused != 4 || reused == 0 {
		t.Fatalf("fixture: %d fresh and %d reused deliveries to reuse.partner.test; re-capture", fresh, reused)
	}
	if p := peerOf(t, r, Outbound, KindDomain, "reuse.partner.test"); p.Sessions != fresh || p.Messages != 4 || p.Trust["verified"] != fresh || p.TLSSessions != fresh {
		t.Errorf("reuse.partner.test: %d sessions (%v), %d messages, want %d sessions, 4 messages", p.Sessions, p.Trust, p.Messages, fresh)
	}
	// tlsgate's own decision lines are counted for the inbound peers.
	if p := peerOf(t, r, Inbound, KindSender, "trusted.test"); p.Logged["pass"] != 4 {
		t.Errorf("trusted.test: logged results %v, want pass 4 (the milter's lines)", p.Logged)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings %q for logs at the right levels", r.Warnings)
	}
}

// peersOnly is the report without its inputs (which name the files).
func peersOnly(t *testing.T, r *Report) string {
	t.Helper()
	c := *r
	c.Inputs = nil
	return reportJSON(t, &c)
}

// TestRotatedAndJournal: the same log split into a rotated .gz and the
// current file, and as journalctl -o short-iso prints it, give the same
// peers as the plain file.
func TestRotatedAndJournal(t *testing.T) {
	want := peersOnly(t, labReport(t, "postfix.log"))
	if got := peersOnly(t, labReport(t, "postfix-rotated.log.1.gz", "postfix-rotated.log")); got != want {
		t.Errorf("rotated .gz + current differ from the plain log:\n%s", diff(got, want))
	}
	if got := peersOnly(t, labReport(t, "postfix.journal")); got != want {
		t.Errorf("journald short-iso differs from the plain log:\n%s", diff(got, want))
	}
	r := labReport(t, "postfix.journal")
	if r.Inputs[0].Skipped["journal_meta"] != 1 {
		t.Errorf("journal: skipped %v, want the header line counted", r.Inputs[0].Skipped)
	}
}

func diff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) && i < len(w); i++ {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: got %q want %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(g), len(w))
}

var classicTS = regexp.MustCompile(`^(?:[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d)`)

// retime rewrites the classic timestamps of a captured log: line i gets
// start + i*step.
func retime(t *testing.T, data []byte, start time.Time, step time.Duration) []byte {
	t.Helper()
	var b bytes.Buffer
	for i, line := range strings.SplitAfter(string(data), "\n") {
		if line == "" {
			continue
		}
		if !classicTS.MatchString(line) {
			t.Fatalf("line %d has no classic timestamp: %q", i+1, line)
		}
		b.WriteString(start.Add(time.Duration(i)*step).Format(time.Stamp) + line[15:])
	}
	return b.Bytes()
}

// TestYearBoundary: a log that runs from December into January, read in
// January, puts December in the year before.
func TestYearBoundary(t *testing.T) {
	data, err := os.ReadFile("testdata/lab/postfix.log")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(data, []byte("\n"))
	// Half the lines before midnight, half after, one second apart.
	start := time.Date(0, 12, 31, 23, 59, 59, 0, time.UTC).Add(-time.Duration(lines/2) * time.Second)
	shifted := retime(t, data, start, time.Second)
	now := time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC)
	c := New(Options{Now: now})
	if err := c.Read("newyear.log", bytes.NewReader(shifted), now); err != nil {
		t.Fatal(err)
	}
	r := c.Report()
	in := r.Inputs[0]
	if in.First.Year() != 2026 || in.First.Month() != 12 || in.Last.Year() != 2027 || in.Last.Month() != 1 {
		t.Fatalf("first %v last %v, want 2026-12-31 .. 2027-01-01", in.First, in.Last)
	}
	// Every session still joins: the totals match the plain log's.
	plain := labReport(t, "postfix.log")
	sum := func(r *Report) (n int) {
		for _, p := range r.Peers {
			n += p.Sessions
		}
		return n
	}
	if sum(r) != sum(plain) {
		t.Errorf("sessions across the year boundary %d, plain log %d", sum(r), sum(plain))
	}
	p := peerOf(t, r, Outbound, KindDomain, "notready.partner.test")
	if p.FirstSeen.Year() != 2026 && p.LastSeen.Year() != 2027 {
		t.Errorf("notready.partner.test seen %v..%v", p.FirstSeen, p.LastSeen)
	}
}

// withoutLines drops the lines matching re (what a lower log level would
// not have written).
func withoutLines(t *testing.T, file string, re *regexp.Regexp) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "lab", file))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if !re.MatchString(line) {
			b.WriteString(line)
		}
	}
	return b.Bytes()
}

// TestLogLevelWarnings: logs written at Postfix's default TLS log level 0
// (no TLS summary lines) or below Sendmail LogLevel 9 (no STARTTLS= lines)
// say which setting to change, and do not pass off TLS sessions as
// plaintext.
func TestLogLevelWarnings(t *testing.T) {
	pf := withoutLines(t, "postfix.log", regexp.MustCompile(`TLS connection (established|reused) `))
	c := New(Options{Model: labModel(t), Now: fixtureNow, MinSessions: 2, MinDays: -1})
	if err := c.Read("level0.log", bytes.NewReader(pf), fixtureNow); err != nil {
		t.Fatal(err)
	}
	r := c.Report()
	joined := strings.Join(r.Warnings, "\n")
	for _, want := range []string{"set smtpd_tls_loglevel = 1", "set smtp_tls_loglevel = 1"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings %q lack %q", r.Warnings, want)
		}
	}
	if p := peerOf(t, r, Inbound, KindClient, "mx.trusted.test[127.0.0.2]"); p.PlaintextSessions != 0 || p.UnloggedTLS != 4 {
		t.Errorf("inbound at loglevel 0: plaintext %d unlogged %d, want 0 and 4 (starttls=1 in the disconnect lines)", p.PlaintextSessions, p.UnloggedTLS)
	}
	if p := peerOf(t, r, Outbound, KindDomain, "ready.partner.test"); p.Proposal == nil || !strings.Contains(p.Proposal.Text, "smtp_tls_loglevel") || p.Judgement != nil {
		t.Errorf("outbound at loglevel 0: proposal %+v judgement %+v, want not ready (no TLS lines)", p.Proposal, p.Judgement)
	}

	sm := withoutLines(t, "sendmail.log", regexp.MustCompile(`STARTTLS=`))
	c = New(Options{Now: fixtureNow})
	if err := c.Read("loglevel8.log", bytes.NewReader(sm), fixtureNow); err != nil {
		t.Fatal(err)
	}
	r = c.Report()
	if !strings.Contains(strings.Join(r.Warnings, "\n"), "LogLevel 9 or higher") {
		t.Errorf("Sendmail without STARTTLS= lines: warnings %q", r.Warnings)
	}
}

// TestHostileInput: truncated lines, binary garbage, NUL bytes, a 10 MB
// line and a corrupt gzip tail are skipped and counted, and the peers are
// those of the clean log.
func TestHostileInput(t *testing.T) {
	clean, err := os.ReadFile("testdata/lab/postfix.log")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(clean), "\n")
	garbage := []string{
		"\x00\x01\x02binary\xff\xfe garbage\n",
		"Dec 07 19:41:17 mx postfix/smtpd[31241]\n",        // truncated before the colon
		"Dec 07 19:41:1\n",                                 // truncated timestamp
		"Dec 07 19:41:17 mx postfix/smtpd[12x]: connect\n", // bad PID
		"Dec 07 19:41:17 mx post\x00fix/smtpd[1]: x\n",
		strings.Repeat("A", 10<<20) + "\n",
		"Dec 07 19:41:17 mx postfix/smtp[1]: Verified TLS connection established to \n",
		"Dec 07 19:41:17 mx postfix/smtp[1]: ABCDEF12345: to=<x@y>, relay=\n",
		"\n",
	}
	var b bytes.Buffer
	for i, l := range lines {
		b.WriteString(l)
		if i%40 == 0 {
			b.WriteString(garbage[(i/40)%len(garbage)])
		}
	}
	for _, g := range garbage {
		b.WriteString(g)
	}
	b.WriteString("Dec 07 19:41:17 mx postfix/smtpd[1]: no newline at the end")
	c := New(Options{Model: labModel(t), Now: fixtureNow, MinSessions: 20, MinDays: -1})
	if err := c.Read("hostile.log", &b, fixtureNow); err != nil {
		t.Fatalf("hostile input is fatal: %v", err)
	}
	r := c.Report()
	in := r.Inputs[0]
	if in.Skipped["too_long"] < 1 || in.Skipped["malformed"] < 4 {
		t.Errorf("skipped %v, want the 10 MB line(s) as too_long and the garbage as malformed", in.Skipped)
	}
	want := peersOnly(t, labReport(t, "postfix.log"))
	r.Warnings = nil
	if got := peersOnly(t, r); got != want {
		t.Errorf("peers with garbage differ from the clean log's: %s", diff(got, want))
	}

	// A gzip file cut in the middle: the lines before the cut are read.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(clean)
	zw.Close()
	cut := gz.Bytes()[:gz.Len()/2]
	c = New(Options{Now: fixtureNow})
	if err := c.Read("cut.log.gz", bytes.NewReader(cut), fixtureNow); err != nil {
		t.Fatalf("truncated gzip is fatal: %v", err)
	}
	r = c.Report()
	if r.Inputs[0].Skipped["corrupt_compressed"] != 1 || r.Inputs[0].Events == 0 {
		t.Errorf("cut gzip: %+v, want events from the first half and corrupt_compressed 1", r.Inputs[0])
	}
	if !strings.Contains(strings.Join(r.Warnings, "\n"), "cut.log.gz: skipped") {
		t.Errorf("warnings %q do not name the cut file", r.Warnings)
	}
}

// TestProposalTOMLLoads: the proposed [[endpoint]] blocks load, alone and
// pasted into the current policy.
func TestProposalTOMLLoads(t *testing.T) {
	r := labReport(t, "postfix.log", "sendmail.log")
	var b bytes.Buffer
	if err := r.WriteTOML(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	golden.Check(t, "proposals.toml", out)
	if !strings.Contains(out, `hosts = ["ready.partner.test"]`) || strings.Contains(out, "notready") {
		t.Fatalf("proposals lack ready.partner.test or propose notready:\n%s", out)
	}
	for _, base := range []string{"mta = \"postfix\"\n", string(mustRead(t, labPolicyFile))} {
		p, err := policy.Parse("proposed.toml", []byte(base+"\n"+out))
		if err != nil {
			t.Fatalf("proposals do not load: %v\n%s", err, out)
		}
		for _, ep := range p.Endpoints {
			if strings.Contains(ep.Name, "ready") && ep.Mode != policy.Monitor {
				t.Errorf("endpoint %s mode %s, want monitor", ep.Name, ep.Mode)
			}
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestJSONRoundTrip: the JSON is valid and carries the timeline.
func TestJSONRoundTrip(t *testing.T) {
	var r Report
	if err := json.Unmarshal([]byte(reportJSON(t, labReport(t, "postfix.log"))), &r); err != nil {
		t.Fatal(err)
	}
	p := peerOf(t, &r, Outbound, KindDomain, "notready.partner.test")
	if len(p.Timeline) != 1 || p.Timeline[0].Verified != 20 || p.Timeline[0].Plaintext != 1 {
		t.Errorf("timeline %+v", p.Timeline)
	}
}
