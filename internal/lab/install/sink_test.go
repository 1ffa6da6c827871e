package install

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// sink is a minimal SMTP server for the install tests: it accepts every
// envelope, offers STARTTLS when it has a certificate, and records per
// connection whether TLS was up, every MAIL FROM and every message.
type sink struct {
	name string
	ln   net.Listener
	tcfg *tls.Config

	mu    sync.Mutex
	conns []*sinkConn
}

// sinkConn is what one connection to a sink did.
type sinkConn struct {
	TLS   bool     // a STARTTLS handshake completed
	Mails []string // MAIL FROM arguments, in order
	Data  []string // completed messages
}

// sinkSpec is a sink to start with startSinkSpecs: its address, its
// STARTTLS configuration (nil: no STARTTLS) and where to put it.
type sinkSpec struct {
	addr string
	cfg  *tls.Config
	dst  **sink
}

// startSinkSpecs starts the sinks on the system's loopback; they stop at
// the test's end.
func startSinkSpecs(t *testing.T, sys *system, specs []sinkSpec) {
	t.Helper()
	lns := make([]net.Listener, len(specs))
	if err := sys.InNetNS(func() error {
		for i, sp := range specs {
			ln, err := net.Listen("tcp4", sp.addr)
			if err != nil {
				return err
			}
			lns[i] = ln
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, sp := range specs {
		*sp.dst = newSink(lns[i], "sink.partner.test", sp.cfg)
		t.Cleanup(func() { lns[i].Close() })
	}
}

// sinkTLS is a STARTTLS configuration with c's certificate and chain.
func sinkTLS(t *testing.T, c *testpki.Cert) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(c.ChainFile, c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}
}

// newSink serves on ln (made in the system's network namespace) as name,
// with STARTTLS as cfg says (nil: no STARTTLS).
func newSink(ln net.Listener, name string, cfg *tls.Config) *sink {
	s := &sink{name: name, ln: ln, tcfg: cfg}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	rec := &sinkConn{}
	s.mu.Lock()
	s.conns = append(s.conns, rec)
	s.mu.Unlock()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(lines ...string) bool {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		return w.Flush() == nil
	}
	if !reply("220 " + s.name + " ESMTP install-test sink") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(line)
		if i := strings.IndexByte(verb, ' '); i >= 0 {
			verb = verb[:i]
		}
		switch verb {
		case "EHLO":
			ext := []string{"250-" + s.name, "250-8BITMIME"}
			if s.tcfg != nil && !rec.TLS {
				ext = append(ext, "250-STARTTLS")
			}
			ext = append(ext, "250 SMTPUTF8")
			reply(ext...)
		case "HELO":
			reply("250 " + s.name)
		case "STARTTLS":
			if s.tcfg == nil || rec.TLS {
				reply("502 5.5.1 no STARTTLS here")
				continue
			}
			reply("220 2.0.0 go ahead")
			tc := tls.Server(c, s.tcfg)
			if err := tc.Handshake(); err != nil {
				return
			}
			s.mu.Lock()
			rec.TLS = true
			s.mu.Unlock()
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
		case "MAIL":
			s.mu.Lock()
			rec.Mails = append(rec.Mails, line[len("MAIL "):])
			s.mu.Unlock()
			reply("250 2.1.0 ok")
		case "RCPT", "RSET", "NOOP":
			reply("250 2.0.0 ok")
		case "DATA":
			reply("354 go ahead")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			rec.Data = append(rec.Data, b.String())
			s.mu.Unlock()
			reply("250 2.0.0 queued as sink")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			reply("500 5.5.2 what?")
		}
	}
}

// snapshot returns copies of the connections so far.
func (s *sink) snapshot() []sinkConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sinkConn, len(s.conns))
	for i, c := range s.conns {
		out[i] = sinkConn{TLS: c.TLS, Mails: append([]string(nil), c.Mails...), Data: append([]string(nil), c.Data...)}
	}
	return out
}

// messages returns every completed message with its connection's TLS.
func (s *sink) messages() (msgs []string, tlsOK []bool) {
	for _, c := range s.snapshot() {
		for _, d := range c.Data {
			msgs = append(msgs, d)
			tlsOK = append(tlsOK, c.TLS)
		}
	}
	return
}

// mails counts MAIL FROM commands the sink has seen.
func (s *sink) mails() int {
	n := 0
	for _, c := range s.snapshot() {
		n += len(c.Mails)
	}
	return n
}

func (s *sink) String() string { return fmt.Sprintf("sink %s on %s", s.name, s.ln.Addr()) }
