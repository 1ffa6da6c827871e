package posture

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as indented JSON. The peers are encoded
// one at a time, so that a report of a hundred thousand peers is never
// held in memory as one JSON text (the output is what encoding the whole
// report at once gives).
func (r *Report) WriteJSON(w io.Writer) error {
	if len(r.Peers) == 0 {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	head := *r
	head.Peers = []PeerReport{}
	b, err := json.MarshalIndent(&head, "", "  ")
	if err != nil {
		return err
	}
	// Peers is the last field: the head ends in `"peers": []` and "}".
	const empty = "[]\n}"
	if !bytes.HasSuffix(b, []byte(empty)) {
		return fmt.Errorf("posture: report JSON does not end with its peers")
	}
	if _, err := w.Write(append(b[:len(b)-len(empty)], "[\n"...)); err != nil {
		return err
	}
	for i := range r.Peers {
		p, err := json.MarshalIndent(&r.Peers[i], "    ", "  ")
		if err != nil {
			return err
		}
		sep := ",\n"
		if i == len(r.Peers)-1 {
			sep = "\n"
		}
		if _, err := w.Write(append(append([]byte("    "), p...), sep...)); err != nil {
			return err
		}
	}
	_, err = io.WriteString(w, "  ]\n}\n")
	return err
}

func day(t interface{ Format(string) string }) string { return t.Format("2006-01-02") }

// WriteText writes the report for a terminal: warnings, then one table
// per direction and kind.
func (r *Report) WriteText(w io.Writer) error {
	var lines, events int64
	for _, in := range r.Inputs {
		lines += in.Lines
		events += in.Events
	}
	fmt.Fprintf(w, "tlsgate posture: %d log(s), %d lines, %d events", len(r.Inputs), lines, events)
	if r.Since != nil {
		fmt.Fprintf(w, ", since %s", r.Since.Format("2006-01-02 15:04"))
	}
	fmt.Fprintln(w)
	if r.Policy != "" {
		fmt.Fprintf(w, "judged with %s; ", r.Policy)
	}
	fmt.Fprintf(w, "proposals need >= %d sessions over >= %d days\n", r.Rules.MinSessions, r.Rules.MinDays)
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	sections := []struct {
		d     Direction
		k     Kind
		title string
	}{
		{Outbound, KindDomain, "Outbound, by next-hop domain"},
		{Outbound, KindMX, "Outbound, by server (MX host)"},
		{Inbound, KindClient, "Inbound, by client"},
		{Inbound, KindSender, "Inbound, by sender domain"},
	}
	for _, s := range sections {
		var rows []*PeerReport
		for i := range r.Peers {
			if p := &r.Peers[i]; p.Direction == s.d && p.Kind == s.k {
				rows = append(rows, p)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s\n", s.title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  PEER\tSESS\tMSGS\tPLAIN\tTLS\tBITS\tTRUST\tLAST SEEN\tPOLICY")
		for _, p := range rows {
			last := "-"
			if p.LastSeen != nil {
				last = day(p.LastSeen)
			}
			bits := "-"
			if p.MinBits > 0 {
				bits = strconv.Itoa(p.MinBits)
			}
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Peer, p.Sessions, p.Messages, p.PlaintextSessions,
				joinKeys(p.TLSVersions), bits, trustMix(p.Trust), last, policyCell(p))
		}
		tw.Flush()
	}
	return nil
}

func joinKeys(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

func trustMix(m map[string]int) string {
	var parts []string
	for _, k := range []string{"anonymous", "untrusted", "trusted", "verified", "unknown"} {
		if n := m[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// policyCell is the last column: the judgement of a covered peer or the
// proposal for an uncovered one.
func policyCell(p *PeerReport) string {
	switch {
	case p.LookupErr != "":
		return "lookup error: " + p.LookupErr
	case len(p.Endpoints) > 0 && p.Judgement != nil:
		return strings.Join(p.Endpoints, ",") + ": " + p.Judgement.Summary
	case len(p.Endpoints) > 0:
		return strings.Join(p.Endpoints, ",")
	case p.Proposal != nil:
		return p.Proposal.Text
	}
	return "-"
}

var nameBad = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// endpointName makes a valid endpoint name from a host pattern.
func endpointName(pattern string) string {
	n := nameBad.ReplaceAllString(pattern, "-")
	n = strings.TrimLeft(n, "._-")
	if n == "" {
		n = "peer"
	}
	if len(n) > 64 {
		n = n[:64]
	}
	return n
}

// proposalBlock is one [[endpoint]] proposed: a host pattern with the
// inbound and/or outbound requirements its peers are ready for.
type proposalBlock struct {
	pattern   string
	in, out   *Proposal
	inEv      string
	outEv     string
	clientFor string
}

// WriteTOML writes ready-to-paste [[endpoint]] blocks for every peer that
// is ready, in monitor mode, with the evidence as comments. A domain that
// is both a sender domain and a next-hop domain gets one block with both
// directions (a host pattern may belong to one endpoint only).
func (r *Report) WriteTOML(w io.Writer) error {
	blocks := map[string]*proposalBlock{}
	var order []string
	for i := range r.Peers {
		p := &r.Peers[i]
		if p.Proposal == nil || p.Proposal.Status != "ready" {
			continue
		}
		pattern := p.Peer
		if p.Kind == KindClient {
			// The client's address: its name is only a pattern if verified.
			pattern = clientAddr(p.Peer)
			if pattern == "" {
				continue
			}
		}
		b := blocks[pattern]
		if b == nil {
			b = &proposalBlock{pattern: pattern}
			blocks[pattern] = b
			order = append(order, pattern)
		}
		if p.Kind == KindClient {
			b.clientFor = p.Peer
		}
		if p.Direction == Inbound {
			if b.in == nil {
				b.in, b.inEv = p.Proposal, string(p.Kind)+" "+p.Peer+": "+p.evidence
			}
		} else if b.out == nil {
			b.out, b.outEv = p.Proposal, p.evidence
		}
	}
	fmt.Fprintf(w, "# Endpoints proposed by tlsgate posture on %s from the mail log.\n", r.Generated.Format("2006-01-02"))
	fmt.Fprintf(w, "# Rules: >= %d sessions over >= %d days, no plaintext session. mode = \"monitor\":\n", r.Rules.MinSessions, r.Rules.MinDays)
	fmt.Fprintln(w, "# watch the verdicts (result=monitor in the log) before setting mode = \"enforce\".")
	if len(order) == 0 {
		fmt.Fprintln(w, "# No peer is ready.")
		return nil
	}
	used := map[string]bool{}
	for _, pat := range order {
		b := blocks[pat]
		name := endpointName(pat)
		for i := 2; used[name]; i++ {
			name = endpointName(pat) + "-" + strconv.Itoa(i)
		}
		used[name] = true
		fmt.Fprintln(w)
		if b.clientFor != "" {
			fmt.Fprintf(w, "# client %s\n", b.clientFor)
		}
		fmt.Fprintf(w, "[[endpoint]]\nname  = %s\nhosts = [%s]\nmode  = \"monitor\"\n", strconv.Quote(name), strconv.Quote(pat))
		if b.in != nil {
			fmt.Fprintf(w, "  # inbound evidence: %s (%s)\n", b.inEv, b.in.Text)
			fmt.Fprintln(w, "  [endpoint.inbound]")
			writeReq(w, b.in)
		}
		if b.out != nil {
			fmt.Fprintf(w, "  # outbound evidence: %s (%s)\n", b.outEv, b.out.Text)
			if b.out.ValidateCert {
				fmt.Fprintf(w, "  # before adding cn, check the server's names: tlsgate probe %s\n", pat)
			}
			fmt.Fprintln(w, "  [endpoint.outbound]")
			writeReq(w, b.out)
		}
	}
	return nil
}

func writeReq(w io.Writer, p *Proposal) {
	fmt.Fprintln(w, "  encryption    = true")
	if p.MinBits > 0 {
		fmt.Fprintf(w, "  min_bits      = %d\n", p.MinBits)
	}
	if p.ValidateCert {
		fmt.Fprintln(w, "  validate_cert = true")
	}
}

// clientAddr returns the address of "name[addr]".
func clientAddr(s string) string {
	i := strings.LastIndexByte(s, '[')
	if i < 0 || !strings.HasSuffix(s, "]") {
		return ""
	}
	a, err := netip.ParseAddr(s[i+1 : len(s)-1])
	if err != nil {
		return ""
	}
	return a.String()
}
