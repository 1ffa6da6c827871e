package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

const subjNoopMilter = "noop-milter"

// milterModes are the messages per milter connection of part 3.
var milterModes = []int{1, 10}

func modeLabel(perConn int) string {
	if perConn == 1 {
		return "1 msg/conn"
	}
	return strconv.Itoa(perConn) + " msgs/conn"
}

// partMilter measures tlsgate's milter against a no-op go-milter server.
func (r *runner) partMilter(s *Section) error {
	dir := filepath.Join(r.work, "p3")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s.Intro = fmt.Sprintf(`**tlsgate** is `+"`tlsgate serve`"+` with the generated 1,000-endpoint policy (milter only, default logging: one decision line per message);
**noop-milter** is go-milter's NoOpMilter behind a server that negotiates exactly like tlsgate's milter (same actions,
same skipped events, same macro requests), so both get the same conversation. Both run on CPU %d; go-milter's client on CPU %d
plays Postfix 3.7: per SMTP session one milter connection with CONNECT, EHLO, EHLO after STARTTLS with the TLS macros
({tls_version}, {cipher}, {cipher_bits}, and {cert_subject}/{cert_issuer} for clients with a trusted certificate), then per message
MAIL, 2 RCPT, DATA, 10 headers, EOH, a 2 KB body, EOM and ABORT, with the macros Postfix sends at each stage.
Sixteen clients rotate: three of four are covered by an endpoint and satisfy it (tlsgate judges "pass" and inserts its
Received and Authentication-Results headers), one is uncovered ("none", headers still inserted).
A message's latency includes opening the milter connection when it is the first of its session.`, serverCPU, clientCPU)
	specs := map[string]string{
		subjTlsgate:    "unix:" + filepath.Join(dir, "tlsgate-milter.sock"),
		subjNoopMilter: "unix:" + filepath.Join(dir, "noop-milter.sock"),
	}
	g, err := GenerateConfig(ConfigOptions{Endpoints: 1000, MilterListen: specs[subjTlsgate]})
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "tlsgate-milter.toml")
	clients := filepath.Join(dir, "clients.json")
	if err := os.WriteFile(cfg, g.TOML, 0o644); err != nil {
		return err
	}
	if err := writeJSON(clients, g.Clients); err != nil {
		return err
	}
	subjects := []string{subjTlsgate, subjNoopMilter}
	argv := map[string][]string{
		subjTlsgate:    {r.o.Tlsgate, "serve", "-c", cfg},
		subjNoopMilter: {r.o.Self, "noop-milter", "-listen", specs[subjNoopMilter]},
	}
	procs := map[string]*Process{}
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	for _, subj := range subjects {
		p, err := StartProcess(subj, specs[subj], filepath.Join(dir, subj+".log"), r.cpu(serverCPU), nil, argv[subj]...)
		if err != nil {
			return err
		}
		procs[subj] = p
	}
	s.Commands = append(s.Commands,
		fmt.Sprintf("taskset -c %d tlsgate serve -c tlsgate-milter.toml 2>tlsgate.log   # [milter] listen = %q", serverCPU, specs[subjTlsgate]),
		fmt.Sprintf("taskset -c %d tlsgate-bench noop-milter -listen %s", serverCPU, specs[subjNoopMilter]),
		fmt.Sprintf("taskset -c %d tlsgate-bench load-milter -addr SPEC -clients clients.json -per-conn {1,10} -conc {%s} -duration %v -warmup %v -server-pid PID",
			clientCPU, joinInts(r.o.Concs), r.o.Duration, r.o.Warmup))
	for round := 1; round <= r.o.Rounds; round++ {
		for mi, perConn := range milterModes {
			for ci, conc := range r.o.Concs {
				for _, subj := range rotate(subjects, round+mi+ci) {
					p := procs[subj]
					if p.Exited() {
						return fmt.Errorf("%s exited: %s", subj, tailFile(p.LogPath, 1000))
					}
					args := append([]string{r.o.Self, "load-milter", "-clients", clients, "-per-conn", strconv.Itoa(perConn)},
						r.clientArgs(p.Spec, conc, p.PID())...)
					res, err := RunClient(r.cpu(clientCPU), r.clientTimeout(), args...)
					if err != nil {
						return err
					}
					if res.Errors > 0 {
						return fmt.Errorf("%s %s conc %d: %d errors, first: %s", subj, modeLabel(perConn), conc, res.Errors, res.FirstError)
					}
					for ans := range res.Answers {
						if ans != "accept" && ans != "continue" {
							return fmt.Errorf("%s %s conc %d: unexpected answers %v (the generated clients should all pass)", subj, modeLabel(perConn), conc, res.Answers)
						}
					}
					r.data.addLoad(Measurement{Section: "milter", Round: round, Subject: subj, Conc: conc, Variant: modeLabel(perConn)}, res)
					r.logf("  %s %s conc=%d round %d: %.0f msg/s p99 %v cpu %.1fµs (client %.2f server %.2f)",
						subj, modeLabel(perConn), conc, round, res.Rate(), res.P99, res.ServerCPUPerOp(), res.ClientBusy(), res.ServerBusy())
				}
			}
		}
	}
	r.milterTables(s)
	return nil
}

func (r *runner) milterTables(s *Section) {
	d := r.data
	t := Table{Header: []string{"mode", "conc", "server", "messages/s", "p50 µs", "p99 µs", "CPU µs/message", "busy client / server"}}
	rt := Table{Title: "Ratios (tlsgate over noop-milter, round by round)",
		Header: []string{"mode", "conc", "rate (≥ 0.8x)", "CPU/message", "p99", "bottleneck"}}
	var rateS []Spread
	var labels []string
	for _, perConn := range milterModes {
		mode := modeLabel(perConn)
		for _, conc := range r.o.Concs {
			k := key{section: "milter", conc: conc, variant: mode}
			var bn []string
			for _, subj := range []string{subjTlsgate, subjNoopMilter} {
				k.subject = subj
				row := []string{mode, strconv.Itoa(conc), subj}
				k.metric = "rate_per_s"
				row = append(row, fmtRate(d.spread(k)))
				for _, m := range []string{"p50_us", "p99_us"} {
					k.metric = m
					row = append(row, fmtSpread(d.spread(k), 0))
				}
				k.metric = "cpu_us_per_op"
				row = append(row, fmtSpread(d.spread(k), 1))
				row = append(row, busyCell(d, k))
				t.Rows = append(t.Rows, row)
				k.metric = "client_busy"
				cb := d.spread(k).Median
				k.metric = "server_busy"
				if b := bottleneck(cb, d.spread(k).Median); b != "" {
					bn = append(bn, subj+": "+b)
				}
			}
			k.subject = ""
			kr, kc, kp := k, k, k
			kr.metric, kc.metric, kp.metric = "rate_per_s", "cpu_us_per_op", "p99_us"
			rate := d.ratios(kr, subjTlsgate, subjNoopMilter, r.o.Rounds)
			cpu := d.ratios(kc, subjTlsgate, subjNoopMilter, r.o.Rounds)
			p99 := d.ratios(kp, subjTlsgate, subjNoopMilter, r.o.Rounds)
			rt.Rows = append(rt.Rows, []string{mode, strconv.Itoa(conc), fmtRatio(rate), fmtRatio(cpu), fmtRatio(p99), joinStrings(bn)})
			label := fmt.Sprintf("%s conc %d", mode, conc)
			s.Targets = append(s.Targets, Target{Name: "messages/s vs noop-milter, " + label, Want: "≥ 0.80x", Got: fmtRatio(rate),
				Met: rate.Median >= 0.8, Note: joinStrings(bn)})
			rateS, labels = append(rateS, rate), append(labels, label)
		}
	}
	s.Tables = append(s.Tables, t, rt)
	s.Targets = summarize(s.Targets, []targetGroup{{"3. milter messages/s vs no-op", "≥ 0.80x", rateS, labels, true, 0.8}})
}
