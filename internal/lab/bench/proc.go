package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ). It is
// 100 on every Linux architecture Go supports; sysconf(_SC_CLK_TCK) is not
// reachable without cgo.
const clockTick = 10 * time.Millisecond

// ProcCPU returns the CPU time (user + system, all threads, including threads
// that have exited) that process pid has used so far, from fields 14 and 15 of
// /proc/PID/stat. Linux derives both from the scheduler's nanosecond runtime,
// so the sum is exact to one clock tick (10 ms).
func ProcCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: cpu of %d: %w", pid, err)
	}
	return parseStatCPU(data)
}

// parseStatCPU extracts utime + stime from the contents of /proc/PID/stat.
// The command name (field 2) may contain spaces and parentheses, so fields
// are counted from the last ')'.
func parseStatCPU(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("bench: /proc/PID/stat: no ')'")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/PID/stat: %d fields after the command name", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/PID/stat: utime %q stime %q", f[11], f[12])
	}
	return time.Duration(ut+st) * clockTick, nil
}

// Memory is a process's resident set as /proc/PID/status reports it.
type Memory struct {
	// RSS is VmRSS, the resident set now, in bytes.
	RSS int64
	// HWM is VmHWM, the peak resident set, in bytes.
	HWM int64
}

// ProcMemory reads VmRSS and VmHWM of process pid.
func ProcMemory(pid int) (Memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("bench: memory of %d: %w", pid, err)
	}
	return parseStatus(data)
}

func parseStatus(data []byte) (Memory, error) {
	var m Memory
	var seen int
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("bench: /proc/PID/status: %s: %q", k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("bench: /proc/PID/status: %s: %v", k, err)
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.HWM = n << 10
		}
		seen++
	}
	if seen != 2 {
		return Memory{}, errors.New("bench: /proc/PID/status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// LoadAvg returns the first three fields of /proc/loadavg ("1.02 0.87 0.55"),
// or "?" if it cannot be read.
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Load1 returns the one-minute load average, or -1.
func Load1() float64 {
	f := strings.Fields(LoadAvg())
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// Machine describes the computer a report was measured on.
type Machine struct {
	// CPUs is the number of online CPUs this process may run on.
	CPUs int
	// Model is the CPU model name from /proc/cpuinfo.
	Model string
	// Kernel is the kernel release (uname -r).
	Kernel string
	// GoVersion is the Go release the runner was built with.
	GoVersion string
	// MemTotal is the installed memory in bytes (0 if unknown).
	MemTotal int64
}

// ThisMachine describes the machine the process runs on.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Model: "?", Kernel: "?"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					m.MemTotal = n << 10
				}
			}
		}
	}
	return m
}

// IsTmpfs reports whether path lies on a tmpfs file system.
func IsTmpfs(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.TMPFS_MAGIC
}

// MachineBusy returns the CPU time all CPUs have spent outside the idle and
// iowait states since boot, from the first line of /proc/stat.
func MachineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("bench: /proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/stat: %v", err)
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, nil
}
