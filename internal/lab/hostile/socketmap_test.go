package hostile

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/policyd"
)

// TestSocketmapHostile sends malformed and abusive netstrings to the
// daemon's socketmap listener, each on a fresh connection: bad length
// digits, leading zeros, overflowing lengths, a missing comma, a 1 MB key,
// NUL bytes and non-UTF-8 in keys and map names, garbage from other
// protocols. Each gets the reply or the close the catalogue names, the
// daemon's peak RSS stays bounded, and the daemon keeps answering
// well-behaved clients on all listeners.
func TestSocketmapHostile(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{})
	mbKey := "tlspolicy " + strings.Repeat("k", 1<<20-len("tlspolicy "))
	// The socketmap's warnings are rate-limited (20 at once, then one per
	// second): the cases whose warning is checked come first.
	tests := []struct {
		name  string
		send  string
		reply string // "": the connection is closed without a reply
		keep  bool   // the connection stays usable after the reply
		log   string // logged by the daemon
	}{
		{name: "bad length digits", send: "1x2:abc,", log: "bad length"},
		{name: "letters as length", send: "abc:def,", log: "bad length"},
		{name: "hex length", send: "0x5:hello,", log: "bad length"},
		{name: "leading zeros", send: "0005:hello,", log: "leading zero"},
		{name: "negative length", send: "-5:hello,", log: "bad length"},
		{name: "empty length", send: ":,", log: "empty length"},
		{name: "NUL in length", send: "1\x00:a,", log: "0x00"},
		{name: "overflowing length", send: "99999999999999999999999999999:", reply: "TEMP request too long", log: "request too long"},
		{name: "length one over the limit", send: "10001:", reply: "TEMP request too long"},
		{name: "endless digits", send: strings.Repeat("9", 100000), reply: "TEMP request too long"},
		{name: "1 MB key", send: netstring(mbKey), reply: "TEMP request too long"},
		{name: "missing comma", send: "25:tlspolicy partner.exampleX", log: "missing ','"},
		{name: "CRLF instead of comma", send: "25:tlspolicy partner.example\r\n", log: "missing ','"},
		{name: "length too short", send: "24:tlspolicy partner.example,", log: "missing ','"},
		{name: "truncated then EOF", send: "40:tlspolicy partner", log: "truncated"},
		{name: "EOF in length", send: "12", log: "truncated"},
		{name: "HTTP request", send: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", log: "bad length"},
		{name: "TLS ClientHello", send: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", log: "bad length"},
		{name: "request without space", send: netstring("tlspolicy"), reply: "PERM bad request", keep: true},
		{name: "empty request", send: "0:,", reply: "PERM bad request", keep: true},
		{name: "empty map name", send: netstring(" partner.example"), reply: "PERM bad request", keep: true},
		{name: "unknown map name", send: netstring("access partner.example"), reply: "TEMP unknown map access; this tlsgate serves tlspolicy", keep: true},
		{name: "NUL in map name", send: netstring("tlspolicy\x00 partner.example"), reply: "TEMP unknown map tlspolicy\x00; this tlsgate serves tlspolicy", keep: true},
		{name: "NUL in key", send: netstring("tlspolicy partner.example\x00.evil"), reply: "TEMP", keep: true},
		{name: "NUL-only key", send: netstring("tlspolicy \x00\x00\x00"), reply: "TEMP", keep: true},
		{name: "non-UTF-8 key", send: netstring("tlspolicy \xff\xfe\xc3\x28.example"), reply: "TEMP", keep: true},
		{name: "non-UTF-8 suffix on a covered name", send: netstring("tlspolicy partner.example\xff"), reply: "NOTFOUND ", keep: true},
		{name: "upper-case covered name", send: netstring("tlspolicy PARTNER.EXAMPLE."), reply: answerPartnerA, keep: true},
		{name: "key at the limit", send: netstring("tlspolicy " + strings.Repeat("a", 10000-len("tlspolicy "))), reply: "TEMP", keep: true},
		{name: "key with CR LF", send: netstring("tlspolicy partner.example\r\nOK none"), reply: "TEMP", keep: true},
	}
	var peak float64
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mark := d.logs.mark()
			d.resetPeak()
			defer func() {
				p := d.peakMB()
				peak = max(peak, p)
				if p > rssLimitMB(64) {
					t.Errorf("peak RSS %.1f MB", p)
				}
			}()
			c := dialRaw(t, d.socketmap)
			br := bufio.NewReader(c)
			go c.Write([]byte(tc.send)) // the server may close before reading it all
			if tc.name == "truncated then EOF" || tc.name == "EOF in length" {
				time.Sleep(50 * time.Millisecond)
				c.(interface{ CloseWrite() error }).CloseWrite()
			}
			if tc.reply != "" {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				got, err := policyd.ReadNetstring(br, policyd.MaxReply)
				if err != nil || !strings.HasPrefix(string(got), tc.reply) {
					t.Fatalf("reply %q, %v; want %q", truncate(string(got)), err, tc.reply)
				}
				if tc.keep {
					c.Write([]byte(netstring("tlspolicy partner.example")))
					got, err := policyd.ReadNetstring(br, policyd.MaxReply)
					if err != nil || string(got) != answerPartnerA {
						t.Fatalf("same connection afterwards: %q, %v", got, err)
					}
					d.checkServed(t)
					return
				}
			}
			if rest := readUntilClosed(t, c, 1<<20, 10*time.Second); rest != "" {
				t.Fatalf("unexpected bytes before the close: %q", truncate(rest))
			}
			if tc.log != "" {
				d.logs.waitFor(t, mark, tc.log, 5*time.Second)
			}
			d.checkServed(t)
		})
	}
	record("socketmap hostile: peak RSS per case", "%.1f MB (%d cases)", peak, len(tests))
	d.checkServed(t)
}

// TestSocketmapPipelinedBurst: 20000 requests written in one go, without
// waiting for answers, are all answered, in order.
func TestSocketmapPipelinedBurst(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{Level: "warn"})
	const n = 20000
	keys := []string{"partner.example", "verified.example", "other.example", "[192.0.2.10]:25"}
	want := []string{answerPartnerA, answerVerified, answerNotFound, answerPartnerA}
	var req strings.Builder
	for i := range n {
		req.WriteString(netstring("tlspolicy " + keys[i%len(keys)]))
	}
	c := dialRaw(t, d.socketmap)
	go c.Write([]byte(req.String()))
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for i := range n {
		got, err := policyd.ReadNetstring(br, policyd.MaxReply)
		if err != nil || string(got) != want[i%len(want)] {
			t.Fatalf("answer %d: %q, %v; want %q", i, got, err, want[i%len(want)])
		}
	}
	d.checkServed(t)
	record("socketmap pipelined burst", "%d requests in one write, all answered in order", n)
}

// TestSocketmapLogFlood: four clients send 10 KB keys of control bytes as
// fast as they can for 4 s, first all the same key, then every request a
// different one. Before the keys were cut and the warnings limited, each
// request logged about 240 KB (the key escaped four times over in key=,
// reason= and answer=) and got an 80 KB TEMP reply: four clients wrote
// 400 MB of log in 4 s. Now each reply stays under 300 bytes, each line
// under 2 KB, an identical warning is logged once a minute, others at
// most 20 at once and then one per second, and a log-limit line counts
// the rest; the whole flood logs less than 64 KB.
func TestSocketmapLogFlood(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, conf{})
	ctrl := make([]byte, 9950) // the request limit is 10000 with "tlspolicy [" and a counter
	for i := range ctrl {
		ctrl[i] = byte(1 + i%31)
	}
	for _, variant := range []string{"same key", "different keys"} {
		t.Run(variant, func(t *testing.T) {
			mark, size := d.logs.mark(), d.logs.size()
			var requests, longest atomic.Int64
			var wg sync.WaitGroup
			stop := time.Now().Add(4 * time.Second)
			for client := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("unix", d.socketmap)
					if err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
					br := bufio.NewReader(c)
					for i := 0; time.Now().Before(stop); i++ {
						key := "[" + string(ctrl)
						if variant == "different keys" {
							key = fmt.Sprintf("[%d.%d", client, i) + string(ctrl)
						}
						c.SetDeadline(time.Now().Add(10 * time.Second))
						if _, err := c.Write([]byte(netstring("tlspolicy " + key))); err != nil {
							t.Error(err)
							return
						}
						got, err := policyd.ReadNetstring(br, policyd.MaxReply)
						if err != nil || !strings.HasPrefix(string(got), "TEMP cannot decide key") {
							t.Errorf("reply %.80q, %v", got, err)
							return
						}
						requests.Add(1)
						if n := int64(len(got)); n > longest.Load() {
							longest.Store(n)
						}
					}
				}()
			}
			wg.Wait()
			// The count of dropped warnings comes within 10 s.
			d.logs.waitFor(t, mark, "log-limit source=socketmap", 15*time.Second)
			logged := d.logs.size() - size
			lines := d.logs.since(mark)
			record("socketmap log flood: "+variant, "4 clients, 4 s, %d requests with 10 KB control-byte keys: %d log lines, %d bytes logged; longest reply %d bytes",
				requests.Load(), len(lines), logged, longest.Load())
			if requests.Load() < 100 {
				t.Errorf("only %d requests in 4 s", requests.Load())
			}
			if longest.Load() > 300 {
				t.Errorf("a TEMP reply of %d bytes", longest.Load())
			}
			for _, l := range lines {
				if len(l) > 2000 {
					t.Errorf("a log line of %d bytes: %.200q", len(l), l)
					break
				}
			}
			if logged > 64<<10 {
				t.Errorf("%d bytes logged for the flood, want under 64 KB", logged)
			}
		})
	}
	d.checkServed(t)
}
