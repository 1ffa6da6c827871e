package listen

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// State is where a tracked connection stands between requests.
type State int32

// The states of a [Conn]. A connection starts Active.
const (
	// Active: a request is being handled or answered.
	Active State = iota
	// Idle: waiting for the first byte of the next request.
	Idle
	// Closed: closed by the server (shutdown, eviction) or ended.
	Closed
	// Reading: a request has started and its rest is awaited. MTAs write
	// a request at once, so a connection that stays here is a slow (or
	// hostile) sender.
	Reading
)

// ConnsOptions configure [NewConns].
type ConnsOptions struct {
	// Name opens the log lines ("socketmap", "milter").
	Name string
	// MaxConns is the most connections tracked at once; at least 1.
	MaxConns int
	// MaxHeld is the most bytes all connections together may hold for
	// unfinished requests (see [Conn.Hold]); 0 means no budget.
	MaxHeld int64
	// Logger receives the warnings about closed connections, at most one
	// of each kind every 10 s. Default slog.Default().
	Logger *slog.Logger
}

// warnEvery is how often each kind of warning about closed connections
// may be logged.
const warnEvery = 10 * time.Second

// Conns tracks the connections of one listener, caps their number and
// chooses which to close when the cap or the byte budget is reached. It is
// safe for concurrent use.
//
// At the cap a new connection closes the connection that has been sending
// an unfinished request for the longest time (the slowest sender: never an
// MTA, which writes each request at once), else the connection idle for the
// longest time (an MTA reconnects, or defers just that session), else it is
// closed itself without a reply (the MTA retries or defers). Over the byte
// budget, the slowest sender is closed likewise.
type Conns struct {
	name    string
	log     *slog.Logger
	max     int
	maxHeld int64

	mu      sync.Mutex
	conns   map[*Conn]struct{}
	stopped bool
	nextID  uint64
	held    int64
	refused warnCount // new connections closed at the cap
	slow    warnCount // slow senders closed for a new connection
	starved warnCount // slow senders closed over the byte budget
}

// warnCount counts the events of one kind between two log lines.
type warnCount struct {
	n  uint64
	at time.Time
}

// note counts an event and returns how many to report now (0: not yet).
func (w *warnCount) note(now time.Time) uint64 {
	w.n++
	if now.Sub(w.at) < warnEvery {
		return 0
	}
	n := w.n
	w.n, w.at = 0, now
	return n
}

// NewConns returns an empty tracker.
func NewConns(opts ConnsOptions) *Conns {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Conns{
		name: opts.Name, log: opts.Logger, max: max(opts.MaxConns, 1), maxHeld: opts.MaxHeld,
		conns: make(map[*Conn]struct{}),
	}
}

// Conn is a tracked connection. Close it (not the connection it wraps) to
// end it.
type Conn struct {
	net.Conn
	// ID numbers the listener's connections from 1, for log lines.
	ID uint64

	cs    *Conns
	state atomic.Int32
	since atomic.Int64 // unix nanoseconds: start of the Idle or Reading state
	held  int64        // guarded by cs.mu
}

// Admit starts tracking nc, making room at the cap as [Conns] describes.
// It returns nil, having closed nc, when there is no room or after Stop.
func (cs *Conns) Admit(nc net.Conn) *Conn {
	now := time.Now()
	var evict *Conn
	var slowLog, refusedLog uint64
	cs.mu.Lock()
	if cs.stopped {
		cs.mu.Unlock()
		nc.Close()
		return nil
	}
	if len(cs.conns) >= cs.max {
		if evict = cs.slowestLocked(); evict != nil {
			slowLog = cs.slow.note(now)
		} else if evict = cs.oldestIdleLocked(); evict == nil {
			refusedLog = cs.refused.note(now)
			cs.mu.Unlock()
			nc.Close()
			if refusedLog > 0 {
				cs.log.Warn(cs.name+": connection limit reached, closing new connections",
					"max_conns", cs.max, "refused", refusedLog, "remote", RemoteString(nc))
			}
			return nil
		}
		cs.removeLocked(evict)
	}
	cs.nextID++
	c := &Conn{Conn: nc, ID: cs.nextID, cs: cs}
	c.since.Store(now.UnixNano())
	cs.conns[c] = struct{}{}
	cs.mu.Unlock()
	if evict != nil {
		evict.Conn.Close()
		cs.log.Debug(cs.name+": connection limit reached, closed the slowest or longest-idle connection",
			"max_conns", cs.max, "evicted_conn", evict.ID)
	}
	if slowLog > 0 {
		cs.log.Warn(cs.name+": connection limit reached with requests arriving slowly, closing the slowest connections",
			"max_conns", cs.max, "closed", slowLog, "remote", RemoteString(evict))
	}
	return c
}

// slowestLocked marks the connection that has been in the Reading state
// for the longest time as closed (it is still tracked) and returns it; nil
// if no connection is reading. cs.mu must be held.
func (cs *Conns) slowestLocked() *Conn { return cs.oldestLocked(Reading) }

// oldestIdleLocked is slowestLocked for the Idle state.
func (cs *Conns) oldestIdleLocked() *Conn { return cs.oldestLocked(Idle) }

func (cs *Conns) oldestLocked(st State) *Conn {
	for {
		var oldest *Conn
		var since int64
		for c := range cs.conns {
			if State(c.state.Load()) != st {
				continue
			}
			if t := c.since.Load(); oldest == nil || t < since {
				oldest, since = c, t
			}
		}
		if oldest == nil {
			return nil
		}
		if oldest.state.CompareAndSwap(int32(st), int32(Closed)) {
			return oldest
		}
		// It moved on meanwhile: look again.
	}
}

// removeLocked stops tracking c, marks it closed and returns its held
// bytes to the budget. cs.mu must be held.
func (cs *Conns) removeLocked(c *Conn) {
	c.state.Store(int32(Closed))
	delete(cs.conns, c)
	cs.releaseLocked(c)
}

func (cs *Conns) releaseLocked(c *Conn) {
	if c.held == 0 {
		return
	}
	cs.held -= c.held
	c.held = 0
}

// Stop makes Admit refuse every further connection (for a shutdown).
func (cs *Conns) Stop() {
	cs.mu.Lock()
	cs.stopped = true
	cs.mu.Unlock()
}

// CloseIdle closes the idle connections and reports whether none is left.
func (cs *Conns) CloseIdle() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.conns {
		if c.state.CompareAndSwap(int32(Idle), int32(Closed)) {
			cs.removeLocked(c)
			c.Conn.Close()
		}
	}
	return len(cs.conns) == 0
}

// CloseAll closes every connection.
func (cs *Conns) CloseAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.conns {
		cs.removeLocked(c)
		c.Conn.Close()
	}
}

// Len returns the number of tracked connections.
func (cs *Conns) Len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.conns)
}

// Count returns the number of tracked connections in state st.
func (cs *Conns) Count(st State) int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	n := 0
	for c := range cs.conns {
		if State(c.state.Load()) == st {
			n++
		}
	}
	return n
}

// Held returns the bytes held for unfinished requests.
func (cs *Conns) Held() int64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.held
}

// State returns c's state.
func (c *Conn) State() State { return State(c.state.Load()) }

// Wait marks c idle: it waits for the first byte of its next request. It
// returns false if c was closed meanwhile.
func (c *Conn) Wait() bool {
	c.since.Store(time.Now().UnixNano())
	return c.state.CompareAndSwap(int32(Active), int32(Idle))
}

// Begin marks the start of a request on an idle c: Active if the request
// is complete already (reading it cannot block), else Reading, from now.
// It returns false if c was closed meanwhile.
func (c *Conn) Begin(complete bool) bool {
	next := Active
	if !complete {
		next = Reading
		c.since.Store(time.Now().UnixNano())
	}
	return c.state.CompareAndSwap(int32(Idle), int32(next))
}

// Done marks the request begun by Begin as read. It returns false if c was
// closed meanwhile (evicted as a slow sender, or shut down).
func (c *Conn) Done() bool {
	return c.state.CompareAndSwap(int32(Reading), int32(Active)) || c.State() == Active
}

// Hold counts n more bytes buffered for c's unfinished request against the
// budget (ConnsOptions.MaxHeld). Over the budget the slowest sender is
// closed to make room, and so on until the budget holds or no other
// sender is left; if c itself is the slowest, Hold returns false and the
// caller must give up the request. Closed connections return their bytes
// at once, their buffers are freed once their readers return.
func (c *Conn) Hold(n int64) bool {
	cs := c.cs
	var victims []*Conn
	var warn uint64
	self := false
	cs.mu.Lock()
	if c.State() == Closed {
		cs.mu.Unlock()
		return false
	}
	c.held += n
	cs.held += n
	now := time.Now()
	for cs.maxHeld > 0 && cs.held > cs.maxHeld {
		v := cs.slowestLocked()
		if v == nil {
			break
		}
		cs.removeLocked(v)
		victims = append(victims, v)
		warn = cs.starved.note(now)
		if v == c {
			self = true
			break
		}
	}
	cs.mu.Unlock()
	for _, v := range victims {
		v.Conn.Close()
	}
	if warn > 0 {
		cs.log.Warn(cs.name+": unfinished requests hold too much memory, closing the slowest senders",
			"max_bytes", cs.maxHeld, "closed", warn, "remote", RemoteString(victims[len(victims)-1]))
	}
	return !self
}

// Release returns all bytes c holds to the budget (its request is
// complete, or given up).
func (c *Conn) Release() {
	c.cs.mu.Lock()
	c.cs.releaseLocked(c)
	c.cs.mu.Unlock()
}

// Close stops tracking c, returns what it holds and closes it.
func (c *Conn) Close() error {
	cs := c.cs
	cs.mu.Lock()
	if _, ok := cs.conns[c]; ok {
		cs.removeLocked(c)
	} else {
		c.state.Store(int32(Closed))
	}
	cs.mu.Unlock()
	return c.Conn.Close()
}

// RemoteString names the peer of c for a log line: its address, or for a
// unix socket (whose peers have none) the socket's path.
func RemoteString(c net.Conn) string {
	a := c.RemoteAddr()
	if a == nil || a.String() == "" || a.String() == "@" {
		if l := c.LocalAddr(); l != nil {
			return "local:" + l.String()
		}
		return "unknown"
	}
	return a.String()
}

// fdReserve is how many file descriptors ConnCap leaves for everything
// but the listeners' connections: standard streams, the listeners, the
// syslog socket, the configuration and certificate files a reload reads,
// metrics scrapes, and the descriptor accept needs before a connection can
// be refused or make room.
const fdReserve = 64

// ConnCap returns the connection cap of one of parts listeners that share
// the process's open-file limit (RLIMIT_NOFILE): limit, or (RLIMIT_NOFILE -
// 64) / parts if that is less, but at least 1. With such caps no listener's
// clients can take the descriptors another listener needs.
func ConnCap(limit, parts int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || parts < 1 {
		return limit
	}
	share := (int64(lim.Cur) - fdReserve) / int64(parts)
	if lim.Cur > 1<<30 || share >= int64(limit) {
		return limit
	}
	return int(max(share, 1))
}

// String names a state for log lines and test failures.
func (s State) String() string {
	switch s {
	case Active:
		return "active"
	case Idle:
		return "idle"
	case Closed:
		return "closed"
	case Reading:
		return "reading"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}
