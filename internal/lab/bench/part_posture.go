package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/tlsgate/tlsgate/internal/posture"
)

// Subjects of the posture part: the report and its two no-op baselines,
// reading the same file.
const (
	subjPosture = "tlsgate posture"
	subjCat     = "cat"
	subjWC      = "wc -l"
)

// DefaultPostureBytes is the size of the posture part's log: a month of a
// busy relay.
const DefaultPostureBytes = 2 << 30

// posturePartners is the number of partner domains of the main log (each
// seen as up to seven peers: inbound client and sender domain, outbound
// domain, two MX hosts as each MTA writes them).
const posturePartners = 10000

// postureLog is one generated log of the part.
type postureLog struct {
	name     string
	path     string
	partners int
	st       MailLogStats
	peers    int // in the posture report
	peerDays int // days with sessions, summed over the peers
}

// partPosture measures "tlsgate posture" reading a generated month of
// mail logs (DefaultPostureBytes, generated into the work directory and
// deleted at the end) on one core, next to cat and wc -l reading the same
// file in the same rounds; and its peak memory as the log grows with the
// same peers, and as the peers grow in a log of the same size.
func (r *runner) partPosture(s *Section) error {
	dir := filepath.Join(r.work, "posture")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	size := r.o.PostureBytes
	cfg := filepath.Join(dir, "tlsgate.toml")
	if err := os.WriteFile(cfg, postureConfig(100), 0o644); err != nil {
		return err
	}
	// The main log; two more of other sizes with the same partners over
	// the same month; two of an eighth of the size with other numbers of
	// partners.
	logs := []*postureLog{
		{name: "main", partners: posturePartners},
		{name: "eighth", partners: posturePartners},
		{name: "half", partners: posturePartners},
		{name: "few", partners: posturePartners / 10},
		{name: "many", partners: posturePartners * 4},
	}
	sizes := map[string]int64{"main": size, "eighth": size / 8, "half": size / 2, "few": size / 8, "many": size / 8}
	for _, l := range logs {
		l.path = filepath.Join(dir, l.name+".log")
		t0 := time.Now()
		f, err := os.Create(l.path)
		if err != nil {
			return err
		}
		l.st, err = GenerateMailLog(f, MailLogOptions{Bytes: sizes[l.name], Partners: l.partners, Seed: uint64(len(l.name))})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		r.logf("  generated %s: %d MB, %d lines, %d partners in %v", l.name, l.st.Bytes>>20, l.st.Lines, l.partners, time.Since(t0).Round(time.Millisecond))
	}
	main := logs[0]
	s.Intro = fmt.Sprintf(`A generated month (30 days) of a relay's mail log, %d MB and %d lines: Postfix and Sendmail side by side,
inbound and outbound sessions with %d partner domains (each with a TLS habit of its own: verified, trusted, anonymous, untrusted,
plaintext or mixed), tlsgate's milter lines and the lines without TLS facts (cleanup, qmgr, anvil, pickup, lost connections); see gen_maillog.go.
%s reads it with a 100-endpoint configuration and writes the JSON report (every peer: sessions, TLS versions, ciphers, trust, a timeline per day)
to a file; %s and %s read the same file to /dev/null, the floor of any log reader. Every program runs pinned to CPU %d (GOMAXPROCS=1: one core),
in %d interleaved rounds, the file in the page cache. lines/s (CPU) is lines over user+system time, the figure a busy machine does not distort;
lines/s (wall) is over elapsed time. Peak RSS is the kernel's maxrss of the process.
Then the memory: the same partners over the same month in logs of an eighth, half and all of the size (more lines, the same peers), and
logs of an eighth of the size with %d and %d partners (the same lines, other numbers of peers).`,
		main.st.Bytes>>20, main.st.Lines, main.partners, "`tlsgate posture`", "`cat`", "`wc -l`", serverCPU, min(r.o.Rounds, 3), posturePartners/10, posturePartners*4)
	s.Commands = []string{
		"tlsgate-bench generates the logs (GenerateMailLog) into the work directory; they are deleted at the end",
		fmt.Sprintf("taskset -c %d env GOMAXPROCS=1 tlsgate posture -c tlsgate.toml --since all --now 2026-12-08T00:00:00Z --format json --out report.json LOG", serverCPU),
		fmt.Sprintf("taskset -c %d cat LOG >/dev/null", serverCPU),
		fmt.Sprintf("taskset -c %d wc -l LOG >/dev/null", serverCPU),
	}

	// The page cache holds the file before the first round.
	if _, err := r.runOneCore(subjCat, main); err != nil {
		return err
	}
	rounds := min(r.o.Rounds, 3)
	for round := 1; round <= rounds; round++ {
		for _, subj := range rotate([]string{subjPosture, subjCat, subjWC}, round) {
			res, err := r.runOneCore(subj, main)
			if err != nil {
				return err
			}
			res.add(r.data, subj, main, round)
			r.logf("  round %d %s: %.2fs wall, %.2fs CPU, %.0f MB", round, subj, res.wall.Seconds(), res.cpu.Seconds(), mb(res.rss))
			if subj == subjPosture && round == 1 {
				if err := checkPostureReport(filepath.Join(filepath.Dir(main.path), "report.json"), main, s); err != nil {
					return err
				}
			}
		}
	}
	os.Remove(main.path) // 2 GB less for the rest of the run
	for _, l := range logs[1:] {
		res, err := r.runOneCore(subjPosture, l)
		if err != nil {
			return err
		}
		res.add(r.data, subjPosture, l, 1)
		if err := checkPostureReport(filepath.Join(dir, "report.json"), l, nil); err != nil {
			return err
		}
		os.Remove(l.path)
		r.logf("  %s (%d MB, %d partners): %.0f MB peak", l.name, l.st.Bytes>>20, l.partners, mb(res.rss))
	}
	r.postureTables(s, logs)
	return nil
}

// oneCoreRun is one program's run over a log.
type oneCoreRun struct {
	wall, cpu time.Duration
	rss       int64
}

func (res oneCoreRun) add(d *dataset, subj string, l *postureLog, round int) {
	v := l.name
	for _, kv := range []struct {
		k string
		v float64
	}{
		{"wall_s", res.wall.Seconds()},
		{"cpu_s", res.cpu.Seconds()},
		{"rss_mb", mb(res.rss)},
		{"lines_per_cpu_s", float64(l.st.Lines) / res.cpu.Seconds()},
		{"lines_per_wall_s", float64(l.st.Lines) / res.wall.Seconds()},
		{"mb_per_wall_s", float64(l.st.Bytes) / (1 << 20) / res.wall.Seconds()},
	} {
		d.add(Measurement{Section: "posture", Round: round, Subject: subj, Variant: v, Metric: kv.k, Value: kv.v})
	}
}

// runOneCore runs subj over l's file on the server CPU (GOMAXPROCS=1)
// and returns its elapsed time, CPU time and peak RSS.
func (r *runner) runOneCore(subj string, l *postureLog) (oneCoreRun, error) {
	var argv []string
	switch subj {
	case subjPosture:
		argv = []string{r.o.Tlsgate, "posture", "-c", filepath.Join(filepath.Dir(l.path), "tlsgate.toml"), "--since", "all",
			"--now", "2026-12-08T00:00:00Z", "--format", "json", "--out", filepath.Join(filepath.Dir(l.path), "report.json"), l.path}
	case subjCat:
		argv = []string{"cat", l.path}
	case subjWC:
		argv = []string{"wc", "-l", l.path}
	}
	if c := r.cpu(serverCPU); c >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(c)}, argv...)
	}
	// A fresh tlsgate-bench process starts the program and reports its
	// usage: a child's peak RSS counts the memory of the process that
	// forked it, which for the runner is hundreds of MB.
	cmd := exec.Command(r.o.Self, append([]string{"rusage", "--"}, argv...)...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	var stdout, stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return oneCoreRun{}, fmt.Errorf("%s: %v: %s", subj, err, stderr.String())
	}
	var u Usage
	if err := json.Unmarshal(stdout.b, &u); err != nil {
		return oneCoreRun{}, fmt.Errorf("%s: rusage: %v: %q", subj, err, stdout.String())
	}
	return oneCoreRun{wall: u.Wall, cpu: u.CPU, rss: u.MaxRSS}, nil
}

// Usage is what "tlsgate-bench rusage" reports of the program it ran.
type Usage struct {
	// Wall is the elapsed time, CPU the user and system time.
	Wall, CPU time.Duration
	// MaxRSS is the peak resident set, in bytes.
	MaxRSS int64
}

// cmdRusage runs argv with its output to /dev/null and prints its Usage
// as JSON.
func cmdRusage(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		return fmt.Errorf("rusage: no command")
	}
	cmd := exec.Command(args[0], args[1:]...)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	var errOut limitedBuffer
	cmd.Stdout, cmd.Stderr = devnull, &errOut
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", args[0], err, errOut.String())
	}
	u := Usage{Wall: time.Since(t0)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		u.MaxRSS = ru.Maxrss << 10 // kB
	}
	return json.NewEncoder(stdout).Encode(u)
}

// limitedBuffer keeps the first 4 KB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// checkPostureReport reads the JSON report of l and checks that every
// generated line was read, none skipped; with s, it notes the peers.
func checkPostureReport(path string, l *postureLog, s *Section) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var rep struct {
		Inputs []posture.Input `json:"inputs"`
		Peers  []struct {
			Timeline []json.RawMessage `json:"timeline"`
		} `json:"peers"`
	}
	if err := json.NewDecoder(bufio.NewReaderSize(f, 1<<20)).Decode(&rep); err != nil {
		return fmt.Errorf("posture report of %s: %w", l.name, err)
	}
	if len(rep.Inputs) != 1 || rep.Inputs[0].Lines != l.st.Lines || len(rep.Inputs[0].Skipped) != 0 {
		return fmt.Errorf("posture report of %s: inputs %+v, want %d lines read, none skipped", l.name, rep.Inputs, l.st.Lines)
	}
	l.peers, l.peerDays = len(rep.Peers), 0
	for _, p := range rep.Peers {
		l.peerDays += len(p.Timeline)
	}
	if s != nil {
		s.Notes = append(s.Notes, fmt.Sprintf("The report of the main log lists %d peers; every one of its %d lines was read, none skipped (the report's own count).", len(rep.Peers), l.st.Lines))
	}
	return nil
}

// postureConfig is a Postfix configuration with n endpoints covering the
// first n partners of the generated logs, both directions.
func postureConfig(n int) []byte {
	b := []byte("mta = \"postfix\"\n")
	for i := 0; i < n; i++ {
		b = fmt.Appendf(b, "\n[[endpoint]]\nname = \"p%d\"\nhosts = [\"p%d.example\", \"mail.p%d.example\"]\n  [endpoint.inbound]\n  encryption = true\n  [endpoint.outbound]\n  encryption = true\n", i, i, i)
	}
	return b
}

func (r *runner) postureTables(s *Section, logs []*postureLog) {
	d := r.data
	main := logs[0]
	rounds := min(r.o.Rounds, 3)
	get := func(subj, v, metric string) Spread {
		return d.spread(key{section: "posture", subject: subj, variant: v, metric: metric})
	}
	t := Table{Title: fmt.Sprintf("Reading the %d MB log (%d lines), one core", main.st.Bytes>>20, main.st.Lines),
		Header: []string{"program", "elapsed s", "CPU s", "lines/s (CPU)", "lines/s (wall)", "MB/s (wall)", "peak RSS MB", "elapsed vs cat", "elapsed vs wc -l"}}
	for _, subj := range []string{subjPosture, subjWC, subjCat} {
		k := key{section: "posture", variant: main.name, metric: "wall_s"}
		t.Rows = append(t.Rows, []string{subj,
			fmtSpread(get(subj, main.name, "wall_s"), 2),
			fmtSpread(get(subj, main.name, "cpu_s"), 2),
			fmtRate(get(subj, main.name, "lines_per_cpu_s")),
			fmtRate(get(subj, main.name, "lines_per_wall_s")),
			fmtSpread(get(subj, main.name, "mb_per_wall_s"), 0),
			fmtSpread(get(subj, main.name, "rss_mb"), 1),
			fmtRatio(d.ratios(k, subj, subjCat, rounds)),
			fmtRatio(d.ratios(k, subj, subjWC, rounds)),
		})
	}
	s.Tables = append(s.Tables, t)

	m := Table{Title: "Peak memory of tlsgate posture: the same peers in more lines, and more peers in the same lines",
		Header: []string{"log", "MB", "lines", "partners", "peers in the report", "peer-days", "peak RSS MB", "KB per peer", "bytes per peer-day", "lines/s (CPU)"}}
	for _, l := range []*postureLog{logs[1], logs[2], main, logs[3], logs[4]} {
		rss := get(subjPosture, l.name, "rss_mb")
		perPeer, perDay := "–", "–"
		if l.peers > 0 {
			perPeer = fmt.Sprintf("%.1f", rss.Median*1024/float64(l.peers))
			perDay = fmt.Sprintf("%.0f", rss.Median*(1<<20)/float64(l.peerDays))
		}
		m.Rows = append(m.Rows, []string{l.name, strconv.FormatInt(l.st.Bytes>>20, 10), strconv.FormatInt(l.st.Lines, 10),
			strconv.Itoa(l.partners), strconv.Itoa(l.peers), strconv.Itoa(l.peerDays), fmtSpread(rss, 0), perPeer, perDay, fmtRate(get(subjPosture, l.name, "lines_per_cpu_s"))})
	}
	s.Tables = append(s.Tables, m)

	rate := get(subjPosture, main.name, "lines_per_cpu_s")
	wall := get(subjPosture, main.name, "lines_per_wall_s")
	s.Targets = append(s.Targets, Target{Name: "P. posture lines/s on one core (CPU time, " + strconv.FormatInt(main.st.Bytes>>20, 10) + " MB log)", Want: "≥ 200,000",
		Got: fmtRate(rate), Met: rate.Median >= 200000, Summary: true, Note: "elapsed: " + fmtRate(wall) + " lines/s"})
	eighth, half := logs[1], logs[2]
	h, b := get(subjPosture, half.name, "rss_mb"), get(subjPosture, main.name, "rss_mb")
	perDay := func(l *postureLog, rss Spread) float64 { return rss.Median / float64(max(l.peerDays, 1)) }
	growth := perDay(main, b) / perDay(half, h)
	s.Targets = append(s.Targets, Target{Name: fmt.Sprintf("P. posture peak RSS per peer-day, twice the lines, the same peers and month (%d → %d MB log)", half.st.Bytes>>20, main.st.Bytes>>20),
		Want: "≤ 1.10x", Got: fmt.Sprintf("%.2fx", growth), Met: growth <= 1.10, Summary: true,
		Note: fmt.Sprintf("peak RSS %s → %s MB (%.2fx) for %.2fx the peer-days and 2x the lines; 8 times the lines: %.2fx; %d and %d partners at the same size: %s and %s MB",
			fmtSpread(h, 0), fmtSpread(b, 0), Ratio(b, h), float64(main.peerDays)/float64(max(half.peerDays, 1)), Ratio(b, get(subjPosture, eighth.name, "rss_mb")),
			logs[3].partners, logs[4].partners, fmtSpread(get(subjPosture, logs[3].name, "rss_mb"), 0), fmtSpread(get(subjPosture, logs[4].name, "rss_mb"), 0))})
	s.Notes = append(s.Notes, "Memory follows the peers and the days each was active (peer-days: the report keeps a timeline entry per peer and day), "+
		"not the lines: a month's log has at most 30 days per peer, however many lines it has, so the peak is bounded by the peers. A shorter log of the "+
		"same month has fewer peer-days (fewer sessions per peer, on fewer days), hence a lower peak; the bytes per peer-day stay level as the lines grow.")
}
