package bench

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stepper performs one operation of a load client (a lookup, a message) per
// call to Step, on its own connection; the driver calls it from one
// goroutine. Step returns a short label for the outcome ("OK", "NOTFOUND",
// "accept", ...), counted in LoadResult.Answers. After an error the next Step
// must start over on a fresh connection.
type Stepper interface {
	Step() (string, error)
	Close() error
}

// DriveOptions configure Drive.
type DriveOptions struct {
	// Conc is the number of concurrent clients, each with its own
	// connection(s) and at most one operation in flight. Default 1.
	Conc int
	// Warmup runs before the measurement window and is not counted.
	// Default 300 ms.
	Warmup time.Duration
	// Duration is the measurement window. Default 2 s.
	Duration time.Duration
	// ServerPIDs are the processes whose CPU time is charged to the
	// operations in the window (for example a milter and a socketmap
	// server). Default none.
	ServerPIDs []int
}

// LoadResult is what a load client measured in its window.
type LoadResult struct {
	// Ops is the number of operations that started and completed in the
	// window without error.
	Ops int64 `json:"ops"`
	// Errors counts failed operations in the window.
	Errors int64 `json:"errors"`
	// FirstError describes the first failure, "" if none.
	FirstError string `json:"first_error,omitempty"`
	// Elapsed is the length of the window.
	Elapsed time.Duration `json:"elapsed_ns"`
	// P50 and P99 are latency percentiles of the operations, as the client
	// saw them.
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	// ClientCPU is the CPU time the load client used in the window.
	ClientCPU time.Duration `json:"client_cpu_ns"`
	// ServerCPU is the CPU time the ServerPIDs used in the window.
	ServerCPU time.Duration `json:"server_cpu_ns"`
	// Answers counts the operations by outcome label.
	Answers map[string]int64 `json:"answers"`
}

// Rate is operations per second.
func (r *LoadResult) Rate() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// ServerCPUPerOp is the servers' CPU time per operation, in microseconds.
func (r *LoadResult) ServerCPUPerOp() float64 {
	if r.Ops == 0 {
		return 0
	}
	return float64(r.ServerCPU.Microseconds()) / float64(r.Ops)
}

// ClientBusy and ServerBusy are the CPU time used per second of the window
// (1.0 = one CPU fully busy).
func (r *LoadResult) ClientBusy() float64 { return r.ClientCPU.Seconds() / r.Elapsed.Seconds() }

// ServerBusy is the servers' CPU time per second of the window.
func (r *LoadResult) ServerBusy() float64 { return r.ServerCPU.Seconds() / r.Elapsed.Seconds() }

// Drive runs o.Conc steppers made by newStepper for o.Warmup, then measures
// o.Duration: operation count, latencies, and the CPU time of this process
// and of o.ServerPIDs, read from /proc at the edges of the window.
func Drive(o DriveOptions, newStepper func(id int) (Stepper, error)) (*LoadResult, error) {
	if o.Conc <= 0 {
		o.Conc = 1
	}
	if o.Warmup <= 0 {
		o.Warmup = 300 * time.Millisecond
	}
	if o.Duration <= 0 {
		o.Duration = 2 * time.Second
	}
	steppers := make([]Stepper, o.Conc)
	for i := range steppers {
		s, err := newStepper(i)
		if err != nil {
			for _, s := range steppers[:i] {
				s.Close()
			}
			return nil, err
		}
		steppers[i] = s
	}
	const (
		warm = iota
		measure
		stop
	)
	var phase atomic.Int32
	type local struct {
		lat      []time.Duration
		errs     int64
		firstErr error
		answers  map[string]int64
	}
	locals := make([]*local, o.Conc)
	var wg sync.WaitGroup
	for i, s := range steppers {
		l := &local{lat: make([]time.Duration, 0, 1<<14), answers: map[string]int64{}}
		locals[i] = l
		wg.Go(func() {
			defer s.Close()
			for {
				p := phase.Load()
				if p == stop {
					return
				}
				t0 := time.Now()
				ans, err := s.Step()
				d := time.Since(t0)
				if p != measure || phase.Load() != measure {
					if err != nil && p == warm {
						time.Sleep(time.Millisecond) // do not spin on a dead server
					}
					continue
				}
				if err != nil {
					l.errs++
					if l.firstErr == nil {
						l.firstErr = err
					}
					time.Sleep(time.Millisecond)
					continue
				}
				l.lat = append(l.lat, d)
				l.answers[ans]++
			}
		})
	}
	time.Sleep(o.Warmup)
	cpu := func() (self, srv time.Duration, err error) {
		if self, err = ProcCPU(os.Getpid()); err != nil {
			return
		}
		for _, pid := range o.ServerPIDs {
			c, e := ProcCPU(pid)
			if e != nil {
				return 0, 0, e
			}
			srv += c
		}
		return
	}
	self0, srv0, err0 := cpu()
	t0 := time.Now()
	phase.Store(measure)
	time.Sleep(o.Duration)
	phase.Store(stop)
	elapsed := time.Since(t0)
	self1, srv1, err1 := cpu()
	wg.Wait()
	if err := firstNonNil(err0, err1); err != nil {
		return nil, err
	}
	r := &LoadResult{Elapsed: elapsed, ClientCPU: self1 - self0, ServerCPU: srv1 - srv0, Answers: map[string]int64{}}
	var all []time.Duration
	for _, l := range locals {
		all = append(all, l.lat...)
		r.Errors += l.errs
		if r.FirstError == "" && l.firstErr != nil {
			r.FirstError = l.firstErr.Error()
		}
		for k, v := range l.answers {
			r.Answers[k] += v
		}
	}
	slices.Sort(all)
	r.Ops = int64(len(all))
	r.P50 = Percentile(all, 0.50)
	r.P99 = Percentile(all, 0.99)
	if r.Ops == 0 {
		return r, fmt.Errorf("bench: no operation completed in %v (%d errors, first: %s)", o.Duration, r.Errors, r.FirstError)
	}
	return r, nil
}

func firstNonNil(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
