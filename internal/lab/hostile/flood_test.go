package hostile

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/policyd"
)

// servedWhile runs checkServed every interval until stop is closed and
// returns how many rounds passed; a failed round fails t.
func (d *daemon) servedWhile(t *testing.T, stop <-chan struct{}, interval time.Duration) <-chan int {
	out := make(chan int, 1)
	go func() {
		n := 0
		defer func() { out <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(interval):
			}
			if err := d.served(); err != nil {
				t.Errorf("during the flood: %v", err)
				return
			}
			n++
		}
	}()
	return out
}

// served is checkServed returning an error instead of failing (for other
// goroutines).
func (d *daemon) served() error {
	select {
	case <-d.done:
		return errors.New("tlsgate serve exited:\n" + d.logs.tail(40))
	default:
	}
	for key, want := range map[string]string{"partner.example": answerPartnerA, "other.example": answerNotFound} {
		if r, err := d.lookup("tlspolicy", key); err != nil || r.String() != want {
			return errors.New("socketmap " + key + ": " + r.String() + " " + errString(err))
		}
	}
	if got, err := d.decide(delegationRequest("192.0.2.10", "a@partner.example", false)); err != nil || got != actionDefer {
		return errors.New("delegation: " + got + " " + errString(err))
	}
	if r, err := runMilter(d.milter, partnerTLS); err != nil || !r.Accepted {
		return errors.New("milter: " + errString(err))
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestFloodIdleConnections opens 1000 idle connections on each of the
// three listeners (the milter ones negotiated, so go-milter keeps them)
// while well-behaved clients keep getting correct answers. Each listener
// is at its cap of 1000 and evicts the longest-idle connection for each
// new one. After the flood the descriptors are released.
func TestFloodIdleConnections(t *testing.T) {
	t.Parallel()
	needFDs(t, 3100)
	d := startDaemon(t, conf{Level: "warn"})
	d.checkServed(t)
	baseFDs, baseRSS := d.fds(), d.rssMB()
	d.resetPeak()
	stop := make(chan struct{})
	rounds := d.servedWhile(t, stop, 20*time.Millisecond)
	const flood = 1000
	var conns []net.Conn
	for range flood {
		conns = append(conns, dialRaw(t, d.socketmap), dialRaw(t, d.delegation))
		c := dialRaw(t, d.milter)
		negotiate(t, c, bufio.NewReader(c))
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond)
	fds := d.fds()
	d.checkServed(t)
	close(stop)
	n := <-rounds
	peak := d.peakMB()
	record("flood: 3x1000 idle connections", "peak RSS %.1f MB (%.1f MB before), %d fds (%d before), %d well-behaved rounds during the flood, %d reconnects", peak, baseRSS, fds, baseFDs, n, d.reconnects)
	if n < 3 {
		t.Errorf("only %d well-behaved rounds completed during the flood", n)
	}
	if peak > rssLimitMB(160) {
		t.Errorf("peak RSS %.1f MB under 3000 idle connections", peak)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.fds() > baseFDs+20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open 10 s after the flood closed, %d before it", d.fds(), baseFDs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.checkServed(t)
}

// TestSlowClients runs, at the same time against one daemon: 100
// slowloris socketmap and 100 slowloris delegation clients (a byte every
// 500 ms), half-open clients that stop mid-request, 1000 connections that
// announce a 10000-byte request and send half, a client that half-closes
// after a whole request, and one that pipelines requests without reading
// the answers. The read timeout (10 s) cuts the slow and silent ones; on
// the socketmap, which they push over its cap of 1000 connections, new
// connections evict the slowest senders first (before policyd's fix every
// new connection was refused until the read timeout). The write timeout
// (10 s) cuts the one that does not read, memory stays bounded, and
// well-behaved clients are served throughout.
//
// The read timeout runs from when the server sees a request's first byte,
// which is after the client wrote it and, on a busy machine or with the
// connection still in the listen backlog, possibly well after. So each
// connection's cut is timed from its own first byte: it must not come
// before the read timeout (less cutMargin) counted from just before that
// byte was written, the earliest the server's deadline can start; it must
// come within the read timeout plus cutSlack counted from just after.
func TestSlowClients(t *testing.T) {
	t.Parallel()
	needFDs(t, 1300)
	d := startDaemon(t, conf{Level: "warn"})
	baseRSS := d.rssMB()
	d.resetPeak()
	stop := make(chan struct{})
	rounds := d.servedWhile(t, stop, 100*time.Millisecond)
	const readTimeout = policyd.DefaultReadTimeout
	// cutMargin allows for timer granularity below the read timeout,
	// cutSlack for a loaded machine (and the race detector) above it.
	const cutMargin, cutSlack = 250 * time.Millisecond, 10 * time.Second
	var wg sync.WaitGroup
	var cut, evicted atomic.Int32
	// sent is a connection whose first bytes are written, with the times
	// just before and just after that write.
	type sent struct {
		c             net.Conn
		before, after time.Time
	}
	send := func(c net.Conn, p []byte) sent {
		before := time.Now()
		if _, err := c.Write(p); err != nil {
			t.Errorf("first write: %v", err)
		}
		return sent{c, before, time.Now()}
	}
	// cutWithin waits for the server to close s.c, within readTimeout+cutSlack
	// after s.after. If timedOut it must be by the read timeout: not before
	// readTimeout-cutMargin after s.before. Otherwise the connection may also
	// be evicted at the cap, at any time.
	cutWithin := func(name string, s sent, timedOut bool) {
		hi := readTimeout + cutSlack
		s.c.SetReadDeadline(s.after.Add(hi + 5*time.Second))
		_, err := io.Copy(io.Discard, s.c)
		now := time.Now()
		fromBefore, fromAfter := now.Sub(s.before), now.Sub(s.after)
		switch {
		case err != nil && !errors.Is(err, syscall.ECONNRESET):
			t.Errorf("%s: not closed %v after its first byte: %v", name, fromAfter, err)
		case timedOut && fromBefore < readTimeout-cutMargin:
			t.Errorf("%s: closed %v after its first byte, before the read timeout (%v)", name, fromBefore, readTimeout)
		case fromAfter > hi:
			t.Errorf("%s: closed %v after its first byte, want within %v", name, fromAfter, hi)
		default:
			cut.Add(1)
			if fromBefore < readTimeout-cutMargin {
				evicted.Add(1) // to make room at the cap, before its read timeout
			}
		}
	}
	// trickle writes the rest of msg, whose first byte is sent, a byte
	// every 500 ms.
	trickle := func(c net.Conn, msg string) {
		for i := 1; i < len(msg); i++ {
			time.Sleep(500 * time.Millisecond)
			if _, err := c.Write([]byte{msg[i]}); err != nil {
				return
			}
		}
	}
	for range 100 {
		smMsg := "9000:tlspolicy " + strings.Repeat("a", 8990) + ","
		dlMsg := delegationRequest("192.0.2.10", "a@partner.example", false)
		sm := send(dialRaw(t, d.socketmap), []byte(smMsg[:1]))
		dl := send(dialRaw(t, d.delegation), []byte(dlMsg[:1]))
		wg.Add(4)
		go func() { defer wg.Done(); trickle(sm.c, smMsg) }()
		go func() { defer wg.Done(); trickle(dl.c, dlMsg) }()
		// With the partial requests below the socketmap is over its cap of 1000:
		// the slowest senders are evicted for new connections, the rest time out.
		go func() { defer wg.Done(); cutWithin("socketmap slowloris", sm, false) }()
		go func() { defer wg.Done(); cutWithin("delegation slowloris", dl, true) }()
	}
	// Half-open: part of a request, then silence.
	halfSM := send(dialRaw(t, d.socketmap), []byte("27:tlspolicy [192.0"))
	halfDL := send(dialRaw(t, d.delegation), []byte(strings.TrimSuffix(delegationRequest("192.0.2.10", "a@partner.example", false), "\n")))
	wg.Add(2)
	go func() { defer wg.Done(); cutWithin("socketmap half-open", halfSM, false) }()
	go func() { defer wg.Done(); cutWithin("delegation without the blank line", halfDL, true) }()
	// 1000 connections with half of a maximal request each.
	partial := []byte("10000:tlspolicy " + strings.Repeat("p", 5000))
	var partials []net.Conn
	for range 1000 {
		c := dialRaw(t, d.socketmap)
		c.Write(partial)
		partials = append(partials, c)
	}
	// Half-closed after a whole request: still answered.
	hc := dialRaw(t, d.socketmap)
	hc.Write([]byte(netstring("tlspolicy partner.example")))
	hc.(interface{ CloseWrite() error }).CloseWrite()
	hc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := policyd.ReadNetstring(bufio.NewReader(hc), 1000); err != nil || string(got) != answerPartnerA {
		t.Errorf("half-closed client: %q, %v", got, err)
	}
	// Pipelines requests and never reads the answers.
	deaf := dialRaw(t, d.socketmap)
	req := []byte(strings.Repeat(netstring("tlspolicy partner.example"), 1000))
	deafCut := make(chan error, 1)
	go func() {
		for range 1000 {
			if _, err := deaf.Write(req); err != nil {
				deafCut <- err // the server closed it
				return
			}
		}
		deafCut <- nil
	}()
	wg.Wait()
	for _, c := range partials {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("partial request not cut: %v", err)
			break
		}
	}
	// Its writes fail once the server has closed it. (The server's "write
	// error" warning may be one of those the rate limit drops here.)
	select {
	case err := <-deafCut:
		if err == nil {
			t.Error("the client that never reads could write 30 MB of requests")
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the client that never reads was not cut by the write timeout:\n%s", d.logs.tail(20))
	}
	close(stop)
	n := <-rounds
	peak := d.peakMB()
	record("slow clients: 200 slowloris, 2 half-open, 1000 half-sent, 1 deaf", "%d slow or silent connections cut within the read timeout (%d of them evicted earlier at the socketmap cap), peak RSS %.1f MB (%.1f MB before), %d well-behaved rounds meanwhile", cut.Load(), evicted.Load(), peak, baseRSS, n)
	if peak > rssLimitMB(160) {
		t.Errorf("peak RSS %.1f MB", peak)
	}
	// A round is tried every 100 ms for more than the read timeout; on a
	// loaded machine with the race detector far fewer complete, but some must.
	if n < 3 {
		t.Errorf("only %d well-behaved rounds meanwhile", n)
	}
	d.checkServed(t)
}

// TestFloodBeyondFileLimit limits the daemon to 256 open files and floods
// each listener with 300 connections: accept fails with EMFILE. The
// policyd servers and (since milter/guard.go) the milter retry instead of
// stopping tlsgate serve; once the flood is gone the daemon serves again.
func TestFloodBeyondFileLimit(t *testing.T) {
	t.Parallel()
	needFDs(t, 1000)
	d := startDaemon(t, conf{Level: "warn"})
	d.setNofile(256)
	mark := d.logs.mark()
	var conns []net.Conn
	for range 300 {
		for _, s := range []string{d.milter, d.socketmap, d.delegation} {
			c, err := net.Dial("unix", s)
			if err != nil {
				continue // the listen backlog is full
			}
			conns = append(conns, c)
		}
	}
	d.logs.waitFor(t, mark, "too many open files", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	d.alive(t)
	for _, c := range conns {
		c.Close()
	}
	// The persistent clients may have been closed meanwhile; they redial.
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := d.served()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving 20 s after the flood: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	record("flood beyond RLIMIT_NOFILE=256", "%d connections opened, EMFILE logged %d times, daemon alive and serving afterwards", len(conns), d.logs.count(mark, "too many open files"))
	d.checkServed(t)
}
