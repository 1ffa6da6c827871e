package hostile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/milter"
	"github.com/tlsgate/tlsgate/policyd"
)

// Bounds of TestMilterStalledPacketFlood, without the race detector: the
// peak RSS while 1000 connections each hold all but 100 bytes of a 1 MiB
// packet (rssLimitMB scales it for the race detector), and how far above
// its level before the flood the RSS may stay once they are cut (not
// checked with the race detector, whose shadow memory is not returned).
// The peak is the milter's 32 MiB budget for unfinished packets, garbage
// not yet collected, and some 30 KB per connection.
const (
	stalledFloodPeakMB  = 200
	stalledFloodAfterMB = 30
)

// TestMilterStalledPacketFlood: 1000 milter connections each announce a
// 1 MiB packet, send all of it but 100 bytes, and stall. Before the
// milter had a byte budget and a packet timeout this took the daemon's RSS
// from 40 MB to 1.41 GB, for good. Now the milter holds at most 32 MiB of
// unfinished packets (the connections stalled the longest are closed to
// make room), cuts every stalled connection within the packet timeout
// (30 s), and gives the memory back; the socketmap, the delegation server
// and the milter itself answer well-behaved clients throughout.
func TestMilterStalledPacketFlood(t *testing.T) {
	t.Parallel()
	const flood = 1000
	needFDs(t, flood+100)
	d := startDaemon(t, conf{Level: "warn", Metrics: true})
	d.checkServed(t)
	time.Sleep(500 * time.Millisecond)
	before := d.rssMB()
	d.resetPeak()
	stop := make(chan struct{})
	rounds := d.servedWhile(t, stop, 100*time.Millisecond)

	packet := append(binary.BigEndian.AppendUint32(nil, 1<<20), 'L')
	packet = append(packet, strings.Repeat("x", 1<<20-1-100)...)
	conns := make([]net.Conn, flood)
	readers := make([]*bufio.Reader, flood)
	start := time.Now()
	var sent, refused atomic.Int32
	parallel(flood, 50, func(i int) {
		// Dialled just before negotiating: go-milter gives a peer 1 s.
		c, err := net.Dial("unix", d.milter)
		if err != nil {
			t.Errorf("milter connection %d: %v", i, err)
			return
		}
		conns[i], readers[i] = c, bufio.NewReader(c)
		if err := negotiateErr(conns[i], readers[i]); err != nil {
			refused.Add(1)
			return
		}
		conns[i].SetWriteDeadline(time.Now().Add(time.Minute))
		if _, err := conns[i].Write(packet); err == nil {
			sent.Add(1)
		}
	})
	sentIn := time.Since(start)
	peak := d.peakMB()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})

	// Every stalled connection is cut: evicted for the budget, or by the
	// packet timeout counted from its first byte.
	var cut atomic.Int32
	parallel(flood, 50, func(i int) {
		if conns[i] == nil {
			return
		}
		conns[i].SetReadDeadline(start.Add(milter.DefaultPacketTimeout + sentIn + 30*time.Second))
		if _, err := io.Copy(io.Discard, readers[i]); err == nil || errors.Is(err, syscall.ECONNRESET) {
			cut.Add(1)
		}
	})
	cutIn := time.Since(start)
	close(stop)
	n := <-rounds
	if int(cut.Load()) != flood-int(refused.Load()) {
		t.Errorf("%d of %d stalled connections cut within the packet timeout", cut.Load(), flood-int(refused.Load()))
	}

	// The memory goes back to the system: the Go heap keeps no more than
	// 16 MiB it does not use, and (without the race detector, whose shadow
	// memory stays) the RSS comes back near its level before the flood.
	var after, kept float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		after = d.rssMB()
		kept = (d.metric(t, "go_memstats_heap_idle_bytes") - d.metric(t, "go_memstats_heap_released_bytes")) / (1 << 20)
		if (raceEnabled || after <= before+stalledFloodAfterMB) && kept < 16 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	record("milter: 1000 stalled 1 MiB packets", "%d sent whole but 100 bytes (%d not negotiated), sent in %v, all cut after %v; RSS %.1f MB before, peak %.1f MB, %.1f MB after (Go heap keeps %.1f MB unused); %d well-behaved rounds meanwhile",
		sent.Load(), refused.Load(), sentIn.Round(time.Millisecond), cutIn.Round(time.Second), before, peak, after, kept, n)
	if kept >= 16 {
		t.Errorf("the Go heap keeps %.1f MB it does not use 20 s after the stalled connections were cut", kept)
	}
	if refused.Load() > flood/10 {
		t.Errorf("%d of %d milter connections failed to negotiate", refused.Load(), flood)
	}
	if peak > rssLimitMB(stalledFloodPeakMB) {
		t.Errorf("peak RSS %.1f MB under 1000 stalled 1 MiB packets, bound %.0f MB", peak, rssLimitMB(stalledFloodPeakMB))
	}
	if !raceEnabled && after > before+stalledFloodAfterMB {
		t.Errorf("RSS %.1f MB 20 s after the stalled connections were cut, %.1f MB before them", after, before)
	}
	if n < 3 {
		t.Errorf("only %d well-behaved rounds during the flood", n)
	}
	d.checkServed(t)
}

// TestMilterFloodUnderSmallFileLimit: with RLIMIT_NOFILE at 256 from the
// start, 300 milter connections that negotiate and wait cannot take the
// descriptors the socketmap and the delegation server need: each listener
// is capped at its share ((256 - 64) / 3 = 64), new milter connections
// make room by closing the longest-idle ones, the daemon never runs out of
// descriptors, and new socketmap connections are answered meanwhile.
func TestMilterFloodUnderSmallFileLimit(t *testing.T) {
	t.Parallel()
	needFDs(t, 400)
	d := startDaemon(t, conf{Level: "warn", Nofile: 256})
	mark := d.logs.mark()
	var conns []net.Conn
	var readers []*bufio.Reader
	for range 300 {
		c, err := net.Dial("unix", d.milter)
		if err != nil {
			t.Fatalf("milter connection: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		br := bufio.NewReader(c)
		if err := negotiateErr(c, br); err != nil {
			t.Fatalf("negotiation of a new milter connection at the cap: %v", err)
		}
		conns, readers = append(conns, c), append(readers, br)
	}
	// Fresh socketmap and delegation connections while the milter is full.
	for i := range 20 {
		sm, err := net.Dial("unix", d.socketmap)
		if err != nil {
			t.Fatalf("socketmap connection %d: %v", i, err)
		}
		sm.SetDeadline(time.Now().Add(10 * time.Second))
		sm.Write([]byte(netstring("tlspolicy partner.example")))
		if got, err := policyd.ReadNetstring(bufio.NewReader(sm), policyd.MaxReply); err != nil || string(got) != answerPartnerA {
			t.Fatalf("new socketmap connection %d during the milter flood: %q, %v", i, got, err)
		}
		sm.Close()
	}
	if err := d.served(); err != nil {
		t.Fatalf("during the milter flood: %v", err)
	}
	open := 0
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := readers[i].Peek(1); isTimeout(err) {
			open++
		}
	}
	if n := d.logs.count(mark, "too many open files"); n > 0 {
		t.Errorf("the daemon ran out of descriptors %d times:\n%s", n, d.logs.tail(20))
	}
	record("milter flood under RLIMIT_NOFILE=256", "300 milter connections, %d kept open (cap 64), 20 new socketmap connections answered, no EMFILE", open)
	if open > 64 {
		t.Errorf("%d milter connections kept open, over the share of 64", open)
	}
	d.checkServed(t)
}

// parallel runs f(0) to f(n-1), at most limit at a time, and waits for all.
func parallel(n, limit int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, limit)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
