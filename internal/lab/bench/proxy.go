package bench

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TLSProxy accepts plaintext connections on 127.0.0.1 and relays each over a
// new TLS connection to a TLS-wrapped SMTP listener (Postfix smtpd with
// smtpd_tls_wrappermode = yes), presenting a client certificate. It gives
// smtp-source, which cannot speak TLS, a TLS session with Postfix, so that
// Postfix reports TLS macros to the milters.
type TLSProxy struct {
	ln     net.Listener
	target string
	cfg    *tls.Config

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	errs   int
}

// NewTLSProxy listens on a free port of 127.0.0.1 and relays to target
// ("127.0.0.1:PORT") with cfg.
func NewTLSProxy(target string, cfg *tls.Config) (*TLSProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &TLSProxy{ln: ln, target: target, cfg: cfg, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's "127.0.0.1:PORT".
func (p *TLSProxy) Addr() string { return p.ln.Addr().String() }

// Errors counts connections whose TLS dial failed.
func (p *TLSProxy) Errors() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs
}

func (p *TLSProxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.closed {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *TLSProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c, true) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.track(c, false)
			defer c.Close()
			up, err := p.dial()
			if err != nil {
				p.mu.Lock()
				p.errs++
				p.mu.Unlock()
				return
			}
			if !p.track(up, true) {
				up.Close()
				return
			}
			defer p.track(up, false)
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); done <- struct{}{} }()
			go func() { io.Copy(c, up); done <- struct{}{} }()
			<-done
			up.Close()
			c.Close()
			<-done
		}()
	}
}

func (p *TLSProxy) dial() (net.Conn, error) {
	raw, err := net.DialTimeout("tcp", p.target, 30*time.Second)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(newQuickAckConn(raw), p.cfg)
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// Close stops the proxy and its connections.
func (p *TLSProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// quickAckConn sets TCP_QUICKACK before every read, so the kernel
// acknowledges at once instead of delaying the ACK by up to 40 ms. On
// loopback, a delayed ACK meeting the peer's Nagle algorithm (Postfix does
// not set TCP_NODELAY) stalls the small TLS records of a handshake and the
// end of a message for 40 ms each, and a run would measure those stalls
// rather than CPU. Over a real network the round trip hides them.
type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
}

func newQuickAckConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{Conn: c, raw: raw}
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	c.raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
	return c.Conn.Read(p)
}
