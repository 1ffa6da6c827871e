package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a server the runner started: the real tlsgate or a no-op.
type Process struct {
	// Name labels the process in the report ("tlsgate", "noop-raw", ...).
	Name string
	// Spec is the listener it serves ("unix:/path" or "inet:127.0.0.1:PORT").
	Spec string
	// LogPath receives its stdout and stderr.
	LogPath string
	// Started is how long it took from exec to accepting connections.
	Started time.Duration

	cmd    *exec.Cmd
	exited chan struct{}
	log    *os.File
}

// PID is the process ID (taskset execs the program, so it is the server's).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// StartProcess starts argv with its output in logPath, on CPU cpu when cpu >= 0
// (through taskset), and waits until spec accepts connections.
func StartProcess(name, spec, logPath string, cpu int, env []string, argv ...string) (*Process, error) {
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p := &Process{Name: name, Spec: spec, LogPath: logPath, cmd: cmd, exited: make(chan struct{}), log: lf}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	go func() { cmd.Wait(); close(p.exited) }()
	if err := p.waitReady(30 * time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	p.Started = time.Since(t0)
	return p, nil
}

func (p *Process) waitReady(timeout time.Duration) error {
	network, addr, err := SplitSpec(p.Spec)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("bench: %s exited before listening on %s: %s", p.Name, p.Spec, tailFile(p.LogPath, 2000))
		default:
		}
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s does not listen on %s after %v: %v", p.Name, p.Spec, timeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, waits up to 10 s, then kills the process (by its PID).
func (p *Process) Stop() error {
	defer p.log.Close()
	select {
	case <-p.exited:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.exited
	return fmt.Errorf("bench: %s (pid %d) ignored SIGTERM for 10 s and was killed", p.Name, p.PID())
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// SplitSpec turns "unix:/path" or "inet:host:port" into a network and address
// for net.Dial.
func SplitSpec(spec string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(spec, "unix:"):
		return "unix", spec[5:], nil
	case strings.HasPrefix(spec, "inet:"):
		return "tcp", spec[5:], nil
	}
	return "", "", fmt.Errorf("bench: listener %q: want unix:/path or inet:host:port", spec)
}

// ListenSpec listens on spec (a unix socket is made mode 0666 so that
// Postfix's unprivileged daemons can connect).
func ListenSpec(spec string) (net.Listener, error) {
	network, addr, err := SplitSpec(spec)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		os.Remove(addr)
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := os.Chmod(addr, 0o666); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// FreeTCPPort returns a port of 127.0.0.1 that was free a moment ago.
func FreeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RunClient runs a load client (a mode of tlsgate-bench) on CPU cpu when
// cpu >= 0 and decodes the LoadResult it prints. A client still running
// after timeout is killed.
func RunClient(cpu int, timeout time.Duration, argv ...string) (*LoadResult, error) {
	if cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	err := cmd.Run()
	var r LoadResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		if err == nil {
			err = jerr
		}
		return nil, fmt.Errorf("bench: %s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	if err != nil {
		return &r, fmt.Errorf("bench: %s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(errb.String()))
	}
	return &r, nil
}

// tailFile returns the last n bytes of a file.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return strings.TrimSpace(string(data))
}

// errJoin joins non-nil errors.
func errJoin(errs ...error) error { return errors.Join(errs...) }
