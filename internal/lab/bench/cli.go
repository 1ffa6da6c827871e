package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `tlsgate-bench: tlsgate's cost next to no-op baselines (docs/benchmarks.md)

Usage:
  tlsgate-bench run -tlsgate PATH [-out docs/benchmarks.md] [-parts 1234p] [...]
                              run the benchmark and write the report
  tlsgate-bench gen-config -n ENDPOINTS [-o FILE] [-keys FILE]
                              write a generated policy file (and lookup keys)

Modes the runner starts as separate processes:
  tlsgate-bench noop-socketmap -impl raw|policyd -listen SPEC [-reply NOTFOUND]
  tlsgate-bench noop-milter -listen SPEC
  tlsgate-bench load-socketmap -addr SPEC -keys FILE [-conc N] [-duration D] [-server-pid PID]
  tlsgate-bench load-milter -addr SPEC -clients FILE [-per-conn N] [-conc N] [-duration D] [-server-pid PID]
  tlsgate-bench rusage -- COMMAND [ARG...]   run COMMAND, print its elapsed and CPU time and peak RSS (JSON)

SPEC is unix:/path or inet:127.0.0.1:PORT. Run "tlsgate-bench MODE -h" for the options.
`

// Main is the tlsgate-bench command: it dispatches on args[0] and returns the
// exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stdout, stderr)
	case "gen-config":
		err = cmdGenConfig(args[1:], stderr)
	case "noop-socketmap":
		err = cmdNoopSocketmap(args[1:], stderr)
	case "noop-milter":
		err = cmdNoopMilter(args[1:], stderr)
	case "load-socketmap":
		err = cmdLoadSocketmap(args[1:], stdout, stderr)
	case "load-milter":
		err = cmdLoadMilter(args[1:], stdout, stderr)
	case "rusage":
		err = cmdRusage(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tlsgate-bench: unknown mode %q\n\n%s", args[0], usage)
		return 2
	}
	if err == flag.ErrHelp {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate-bench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tlsgate-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// pidList parses "123,456".
func pidList(s string) ([]int, error) {
	var pids []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad PID %q", f)
		}
		pids = append(pids, n)
	}
	return pids, nil
}

// waitSignal blocks until SIGTERM or SIGINT.
func waitSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
	signal.Stop(c)
}

func cmdNoopSocketmap(args []string, stderr io.Writer) error {
	fs := newFlagSet("noop-socketmap", stderr)
	impl := fs.String("impl", "raw", "raw (a bare netstring loop) or policyd (policyd.SocketmapServer with a constant Lookuper)")
	listen := fs.String("listen", "", "listener `SPEC`: unix:/path or inet:127.0.0.1:PORT")
	reply := fs.String("reply", "NOTFOUND", "the answer to every request: NOTFOUND or \"OK data\"")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := NoopReply(*reply)
	if err != nil {
		return err
	}
	if *impl != "raw" && *impl != "policyd" {
		return fmt.Errorf("-impl %q: want raw or policyd", *impl)
	}
	l, err := ListenSpec(*listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	switch *impl {
	case "raw":
		go func() { errc <- ServeRawSocketmap(l, r) }()
	case "policyd":
		srv, err := NewNoopSocketmapServer(r)
		if err != nil {
			return err
		}
		go func() { errc <- srv.Serve(l) }()
		defer srv.Close()
	}
	go func() { waitSignal(); l.Close() }()
	err = <-errc
	if err != nil && !strings.Contains(err.Error(), "closed") {
		return err
	}
	return nil
}

func cmdNoopMilter(args []string, stderr io.Writer) error {
	fs := newFlagSet("noop-milter", stderr)
	listen := fs.String("listen", "", "listener `SPEC`: unix:/path or inet:127.0.0.1:PORT")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := ListenSpec(*listen)
	if err != nil {
		return err
	}
	srv := NewNoopMilterServer()
	go func() { waitSignal(); srv.Close() }()
	err = srv.Serve(l)
	if err != nil && !strings.Contains(err.Error(), "closed") {
		return err
	}
	return nil
}

// loadFlags are the options shared by the load clients.
type loadFlags struct {
	addr      *string
	conc      *int
	duration  *time.Duration
	warmup    *time.Duration
	serverPID *string
}

func addLoadFlags(fs *flag.FlagSet) loadFlags {
	return loadFlags{
		addr:      fs.String("addr", "", "server `SPEC`: unix:/path or inet:127.0.0.1:PORT"),
		conc:      fs.Int("conc", 1, "concurrent connections, one operation in flight each"),
		duration:  fs.Duration("duration", 2*time.Second, "measurement window"),
		warmup:    fs.Duration("warmup", 300*time.Millisecond, "warm-up before the window"),
		serverPID: fs.String("server-pid", "", "comma-separated `PIDs` whose CPU time is charged to the operations"),
	}
}

func (f loadFlags) options() (DriveOptions, error) {
	pids, err := pidList(*f.serverPID)
	if err != nil {
		return DriveOptions{}, err
	}
	return DriveOptions{Conc: *f.conc, Warmup: *f.warmup, Duration: *f.duration, ServerPIDs: pids}, nil
}

func printResult(stdout io.Writer, r *LoadResult, err error) error {
	if r != nil {
		if jerr := json.NewEncoder(stdout).Encode(r); jerr != nil {
			return jerr
		}
	}
	return err
}

func cmdLoadSocketmap(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("load-socketmap", stderr)
	lf := addLoadFlags(fs)
	keysFile := fs.String("keys", "", "`file` of lookup keys, one a line")
	mapName := fs.String("map", "tlspolicy", "socketmap name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o, err := lf.options()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(*keysFile)
	if err != nil {
		return err
	}
	keys := strings.Fields(string(data))
	r, err := Drive(o, func(id int) (Stepper, error) {
		return NewSocketmapStepper(*lf.addr, *mapName, keys, id*len(keys)/o.Conc)
	})
	return printResult(stdout, r, err)
}

func cmdLoadMilter(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("load-milter", stderr)
	lf := addLoadFlags(fs)
	clientsFile := fs.String("clients", "", "JSON `file` of InboundClient")
	perConn := fs.Int("per-conn", 1, "messages per milter connection (SMTP session)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o, err := lf.options()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(*clientsFile)
	if err != nil {
		return err
	}
	var clients []InboundClient
	if err := json.Unmarshal(data, &clients); err != nil {
		return fmt.Errorf("%s: %w", *clientsFile, err)
	}
	network, addr, err := SplitSpec(*lf.addr)
	if err != nil {
		return err
	}
	r, err := Drive(o, func(id int) (Stepper, error) {
		return NewMilterStepper(network, addr, clients, *perConn, id)
	})
	return printResult(stdout, r, err)
}

func cmdGenConfig(args []string, stderr io.Writer) error {
	fs := newFlagSet("gen-config", stderr)
	n := fs.Int("n", 1000, "number of endpoints")
	out := fs.String("o", "-", "output `file` (- for standard output)")
	keys := fs.String("keys", "", "also write lookup keys to this `file`")
	smListen := fs.String("socketmap-listen", "", "[policyd] listen `SPEC`")
	mListen := fs.String("milter-listen", "", "[milter] listen `SPEC`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	g, err := GenerateConfig(ConfigOptions{Endpoints: *n, SocketmapListen: *smListen, MilterListen: *mListen})
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err = os.Stdout.Write(g.TOML)
	} else {
		err = os.WriteFile(*out, g.TOML, 0o644)
	}
	if err == nil && *keys != "" {
		err = os.WriteFile(*keys, []byte(strings.Join(g.Keys, "\n")+"\n"), 0o644)
	}
	return err
}
