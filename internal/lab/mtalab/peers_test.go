package mtalab

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// recorder collects what a test peer received.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.seen = append(r.seen, s)
	r.mu.Unlock()
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func (r *recorder) has(sub string) bool {
	for _, s := range r.all() {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// serveTCP listens on 127.0.0.1 and runs handle per connection until the
// test ends.
func serveTCP(t *testing.T, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// startSocketmap is a socketmap server (netstrings, as Postfix and
// Sendmail speak it) that records each request and answers "NOTFOUND ".
func startSocketmap(t *testing.T) (net.Listener, *recorder) {
	rec := &recorder{}
	ln := serveTCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			lenStr, err := r.ReadString(':')
			if err != nil {
				return
			}
			n, err := strconv.Atoi(strings.TrimSuffix(lenStr, ":"))
			if err != nil || n > 100000 {
				return
			}
			buf := make([]byte, n+1)
			if _, err := io.ReadFull(r, buf); err != nil || buf[n] != ',' {
				return
			}
			rec.add(string(buf[:n]))
			if _, err := fmt.Fprintf(c, "%d:%s,", len("NOTFOUND "), "NOTFOUND "); err != nil {
				return
			}
		}
	})
	return ln, rec
}

// startPolicy is a Postfix policy delegation server that records each
// request (attributes joined by spaces) and answers DUNNO.
func startPolicy(t *testing.T) (net.Listener, *recorder) {
	rec := &recorder{}
	ln := serveTCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		var attrs []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			if line != "" {
				attrs = append(attrs, line)
				continue
			}
			rec.add(strings.Join(attrs, " "))
			attrs = nil
			if _, err := io.WriteString(c, "action=DUNNO\n\n"); err != nil {
				return
			}
		}
	})
	return ln, rec
}

// startBrokenMilter accepts milter connections, records the command
// letter of the first packet (SMFIC_OPTNEG is "O") and hangs up, so the
// MTA applies its "filter unavailable" action.
func startBrokenMilter(t *testing.T) (net.Listener, *recorder) {
	rec := &recorder{}
	ln := serveTCP(t, func(c net.Conn) {
		var hdr [5]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		rec.add(fmt.Sprintf("cmd=%c len=%d", hdr[4], n))
	})
	return ln, rec
}
