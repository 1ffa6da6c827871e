package bench

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// DiscardSink is a minimal SMTP server on 127.0.0.1 for end-to-end load: it
// offers STARTTLS (when given a certificate) and PIPELINING, accepts every
// message, throws the data away and only counts completed messages per
// recipient domain. Unlike mtalab's Sink it keeps nothing, so that thousands
// of 100 KB messages cost no memory.
type DiscardSink struct {
	ln   net.Listener
	tcfg *tls.Config
	name string

	mu     sync.Mutex
	cond   *sync.Cond
	counts map[string]int
	last   map[string]time.Time
	tlsN   int
	closed bool
	wg     sync.WaitGroup
	conns  map[net.Conn]struct{}
}

// NewDiscardSink listens on a free port of 127.0.0.1. cert, if not nil,
// enables STARTTLS; hostname is the greeting name.
func NewDiscardSink(hostname string, cert *tls.Certificate) (*DiscardSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &DiscardSink{ln: ln, name: hostname, counts: map[string]int{}, last: map[string]time.Time{}, conns: map[net.Conn]struct{}{}}
	s.cond = sync.NewCond(&s.mu)
	if cert != nil {
		s.tcfg = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Port is the TCP port the sink listens on.
func (s *DiscardSink) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Count returns how many messages were completed for recipients in domain,
// the time the last of them completed, and how many sessions used TLS.
func (s *DiscardSink) Count(domain string) (n int, last time.Time, tlsSessions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[domain], s.last[domain], s.tlsN
}

// WaitCount waits until n messages for domain have completed and returns
// the completion time of the n-th.
func (s *DiscardSink) WaitCount(domain string, n int, timeout time.Duration) (time.Time, error) {
	t := time.AfterFunc(timeout, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer t.Stop()
	deadline := time.Now().Add(timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.counts[domain] < n {
		if time.Now().After(deadline) || s.closed {
			return time.Time{}, fmt.Errorf("bench: sink: %d of %d messages for %s after %v", s.counts[domain], n, domain, timeout)
		}
		s.cond.Wait()
	}
	return s.last[domain], nil
}

// Close stops the sink and its connections.
func (s *DiscardSink) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *DiscardSink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(newQuickAckConn(c))
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// sinkSession is one SMTP connection.
type sinkSession struct {
	c   net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	tls bool
}

func (x *sinkSession) reply(s string) error {
	x.bw.WriteString(s)
	x.bw.WriteString("\r\n")
	if x.br.Buffered() > 0 {
		return nil // more pipelined commands are waiting: answer them together
	}
	return x.bw.Flush()
}

func (x *sinkSession) setConn(c net.Conn) {
	x.c = c
	x.br = bufio.NewReaderSize(c, 16<<10)
	x.bw = bufio.NewWriter(c)
}

func (s *DiscardSink) handle(c net.Conn) {
	x := &sinkSession{}
	x.setConn(c)
	var rcptDomains []string
	if x.reply("220 "+s.name+" ESMTP discard sink") != nil {
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := x.br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			ext := "250-" + s.name + "\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
			if s.tcfg != nil && !x.tls {
				ext += "250-STARTTLS\r\n"
			}
			err = x.reply(ext + "250 SIZE 104857600")
		case "HELO":
			err = x.reply("250 " + s.name)
		case "STARTTLS":
			if s.tcfg == nil || x.tls {
				err = x.reply("454 4.7.0 TLS not available")
				break
			}
			if err = x.reply("220 2.0.0 ready to start TLS"); err != nil {
				return
			}
			tc := tls.Server(c, s.tcfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			x.setConn(tc)
			x.tls = true
			rcptDomains = nil
			s.mu.Lock()
			s.tlsN++
			s.mu.Unlock()
		case "MAIL":
			rcptDomains = rcptDomains[:0]
			err = x.reply("250 2.1.0 ok")
		case "RCPT":
			addr := strings.Trim(strings.TrimPrefix(strings.TrimPrefix(arg, "TO:"), "to:"), "<> ")
			if at := strings.LastIndexByte(addr, '@'); at >= 0 {
				addr = addr[at+1:]
			}
			rcptDomains = append(rcptDomains, strings.ToLower(addr))
			err = x.reply("250 2.1.5 ok")
		case "DATA":
			if len(rcptDomains) == 0 {
				err = x.reply("503 5.5.1 no recipients")
				break
			}
			if err = x.reply("354 go ahead"); err != nil {
				return
			}
			if err = discardData(x.br); err != nil {
				return
			}
			now := time.Now()
			s.mu.Lock()
			for _, d := range rcptDomains {
				s.counts[d]++
				s.last[d] = now
			}
			s.cond.Broadcast()
			s.mu.Unlock()
			rcptDomains = rcptDomains[:0]
			err = x.reply("250 2.0.0 ok discarded")
		case "RSET":
			rcptDomains = rcptDomains[:0]
			err = x.reply("250 2.0.0 ok")
		case "NOOP":
			err = x.reply("250 2.0.0 ok")
		case "QUIT":
			x.reply("221 2.0.0 bye")
			return
		default:
			err = x.reply("502 5.5.2 command not implemented")
		}
		if err != nil {
			return
		}
	}
}

// discardData reads message data up to the line ".".
func discardData(br *bufio.Reader) error {
	bol := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if bol && err == nil && (bytes.Equal(line, []byte(".\r\n")) || bytes.Equal(line, []byte(".\n"))) {
			return nil
		}
		bol = err == nil
	}
}
