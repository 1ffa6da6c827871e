package dnslab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is a lab process started in a process group of its own (its
// PGID is its PID), so that it and the children it forks can be stopped
// by that ID and nothing else.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// startDaemon starts argv with output appended to logFile.
func startDaemon(name, logFile string, argv ...string) (*daemon, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// exited reports whether the daemon's main process has exited.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the daemon's process group, waits up to timeout
// for every process of the group to be gone, then sends SIGKILL. It
// returns an error if anything of the group survives.
func (d *daemon) stop(timeout time.Duration) error {
	pgid := d.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if d.exited() && len(groupMembers(pgid)) == 0 {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	deadline = time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if d.exited() && len(groupMembers(pgid)) == 0 {
			return fmt.Errorf("%s (pgid %d) needed SIGKILL", d.name, pgid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s (pgid %d): processes %v survive SIGKILL", d.name, pgid, groupMembers(pgid))
}

// groupMembers lists the live (not zombie) processes of process group
// pgid. A zombie counts as gone: the test binary is PID 1 of its
// namespace and inherits nsd's exited children without reaping them.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			out = append(out, pid)
		}
	}
	return out
}
