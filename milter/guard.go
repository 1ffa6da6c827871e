package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/internal/listen"
)

// maxPacketSize is the largest milter packet (command byte and data, without
// the 4-byte length) the milter accepts from an MTA: the 1 MiB − 1 data
// bytes of the largest buffer an MTA can negotiate (SMFIP_MDS_1M) plus the
// command byte. Postfix's longest packets are headers, bounded by its
// header_size_limit (default 102400); Sendmail's are body chunks of at most
// the negotiated size. A longer packet closes the milter connection; the
// MTA then applies its default action (tempfail, as tlsgate requires).
const maxPacketSize = 1 << 20

// packetChunk is how much packet buffer is added at a time while a packet
// arrives, so that memory grows with the bytes received, not with the
// length the peer announces. A buffer up to this size is kept for the
// connection's next packet; larger ones are freed after use.
const packetChunk = 16 << 10

// Limits on the MTA's connections.
const (
	// DefaultMaxConns is the default cap on MTA connections
	// (Options.MaxConns): far above one connection per Postfix smtpd(8)
	// process (default_process_limit is 100).
	DefaultMaxConns = 1000
	// DefaultIdleTimeout is how long a connection may wait for the MTA's
	// next packet (Options.IdleTimeout). An MTA keeps its milter
	// connection for a whole SMTP session and sends a packet per SMTP
	// command it reports, so the milter waits as long as the MTA waits for
	// its client: Postfix up to smtpd_timeout (300 s) per command,
	// Sendmail up to Timeout.command (1 h). 65 minutes is Sendmail's
	// default with a margin; a connection idle for longer carries no live
	// session.
	DefaultIdleTimeout = 65 * time.Minute
	// DefaultPacketTimeout is how long the rest of a packet may take once
	// its first byte has arrived (Options.PacketTimeout): MTAs write each
	// packet at once, and Postfix itself waits at most
	// milter_command_timeout (30 s) for our answer.
	DefaultPacketTimeout = 30 * time.Second
	// maxBuffered caps the memory of all unfinished packets together.
	// Each MTA connection has at most one; legitimate ones are headers of
	// at most header_size_limit (100 KB) that arrive at once, so 32 MiB
	// fits hundreds. Over it, the connection whose packet has been
	// arriving the longest is closed.
	maxBuffered = 32 << 20
)

// guardListener protects go-milter v0.10.1 from what would end the whole
// process or hold resources without bound:
//
//   - its Serve returns on any Accept error, which would stop tlsgate
//     serve (all of its parts) when file descriptors run out; temporary
//     Accept errors are retried instead (listen.Accept);
//   - it has no connection cap: conns (if not nil) caps the connections,
//     making room as package listen describes;
//   - its packet reader allocates the announced length (up to 512 MB)
//     before reading, and its parser indexes past the end of some
//     malformed packets (a zero length, a connect, MAIL or RCPT packet
//     without its NUL terminators), a panic in a goroutine that nothing
//     recovers; after the negotiation it sets no read deadline. guardConn
//     hands go-milter only whole packets, read with a buffer that grows as
//     bytes arrive, of at most maxPacketSize bytes, within the idle and
//     packet timeouts, and closes the connection on a malformed one.
type guardListener struct {
	net.Listener
	conns *listen.Conns // nil: not tracked
	lim   limits
	log   *slog.Logger // nil: slog.Default()
}

// limits are the timeouts of one connection; zero or negative means none.
type limits struct {
	idle, packet time.Duration
}

// Accept returns the next admitted connection, buffered (bufConn) and
// wrapped in a guardConn.
func (l guardListener) Accept() (net.Conn, error) {
	log := l.log
	if log == nil {
		log = slog.Default()
	}
	for {
		c, err := listen.Accept(l.Listener, func(err error, retryIn time.Duration) {
			log.Warn("milter: accept failed, retrying", "listener", l.Addr().String(), "err", err, "retry_in", retryIn)
		})
		if err != nil {
			return nil, err
		}
		if l.conns == nil {
			return &guardConn{Conn: c, lim: l.lim, log: l.log}, nil
		}
		tc := l.conns.Admit(c)
		if tc == nil {
			continue // refused at the cap, and closed
		}
		return &guardConn{Conn: newBufConn(tc), tc: tc, lim: l.lim, log: l.log}, nil
	}
}

// guardConn passes the MTA's packets to go-milter one whole, checked
// packet at a time (see guardListener).
type guardConn struct {
	net.Conn
	tc  *listen.Conn // the tracked connection under Conn; nil if untracked
	lim limits
	log *slog.Logger // nil: no debug lines

	pkt  []byte    // the current packet with its length prefix
	off  int       // how much of pkt go-milter has read
	held int       // bytes of pkt's capacity counted against maxBuffered
	ext  time.Time // the read deadline go-milter asked for; zero: none
	dl   time.Time // the read deadline set on Conn
}

// errIdle ends a connection that waited for the MTA longer than the idle
// timeout: go-milter treats it as a clean close.
var errIdle = io.EOF

// Read serves the current packet; at a packet boundary it first reads and
// checks the next one.
func (c *guardConn) Read(p []byte) (int, error) {
	if c.off == len(c.pkt) {
		if err := c.next(); err != nil {
			c.drop(true)
			return 0, err
		}
	}
	n := copy(p, c.pkt[c.off:])
	c.off += n
	return n, nil
}

// SetReadDeadline records the deadline go-milter asks for (1 s for the
// negotiation); next combines it with its own.
func (c *guardConn) SetReadDeadline(t time.Time) error {
	c.ext = t
	return nil
}

// SetDeadline is SetReadDeadline and SetWriteDeadline.
func (c *guardConn) SetDeadline(t time.Time) error {
	c.ext = t
	return c.Conn.SetWriteDeadline(t)
}

// next reads the next packet into c.pkt. A stream that ends before the
// length prefix is io.EOF (a clean close); one that ends later is
// io.ErrUnexpectedEOF.
func (c *guardConn) next() error {
	c.drop(false)
	c.pkt, c.off = c.pkt[:0], 0
	if c.tc != nil && !c.tc.Wait() {
		return net.ErrClosed
	}
	var hdr [4]byte
	c.arm(c.lim.idle)
	if _, err := io.ReadFull(c.Conn, hdr[:1]); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && (c.ext.IsZero() || time.Now().Before(c.ext)) {
			if c.log != nil {
				c.log.Debug("milter: idle timeout, closing connection", "timeout", c.lim.idle, "remote", listen.RemoteString(c))
			}
			return errIdle
		}
		return err
	}
	if c.tc != nil && !c.tc.Begin(false) {
		return net.ErrClosed
	}
	if c.buffered() < len(hdr)-1 {
		c.arm(c.lim.packet)
	}
	if _, err := io.ReadFull(c.Conn, hdr[1:]); err != nil {
		return c.packetError(err, 0, 0)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxPacketSize {
		return fmt.Errorf("milter: packet length %d from the MTA out of range 1..%d", n, maxPacketSize)
	}
	total := 4 + int(n)
	if c.buffered() < int(n) {
		c.arm(c.lim.packet)
	}
	buf := append(c.pkt, hdr[:]...)
	for len(buf) < total {
		if len(buf) == cap(buf) {
			size := len(buf) + min(total-len(buf), max(packetChunk, len(buf)))
			if !c.hold(size) {
				return fmt.Errorf("milter: a %d-byte packet from the MTA (%d received) dropped: unfinished packets of all MTA connections hold more than %d bytes, and this one has been arriving the longest",
					n, len(buf)-4, maxBuffered)
			}
			nb := make([]byte, len(buf), size)
			copy(nb, buf)
			buf = nb
		}
		m, err := c.Conn.Read(buf[len(buf):min(cap(buf), total)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < total {
			return c.packetError(err, n, len(buf)-4)
		}
	}
	if c.tc != nil && !c.tc.Done() {
		return net.ErrClosed
	}
	if err := checkPacket(buf[4:]); err != nil {
		return err
	}
	c.pkt = buf
	return nil
}

// packetError describes a packet that did not arrive whole.
func (c *guardConn) packetError(err error, n uint32, got int) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("not received within %v: %w", c.lim.packet, err)
	}
	if n == 0 {
		return fmt.Errorf("milter: reading a packet length: %w", err)
	}
	return fmt.Errorf("milter: reading a %d-byte packet (%d received): %w", n, got, err)
}

// buffered returns how many bytes can be read without waiting.
func (c *guardConn) buffered() int {
	if b, ok := c.Conn.(interface{ Buffered() int }); ok {
		return b.Buffered()
	}
	return 0
}

// arm sets the read deadline to now+d (none if d <= 0), or go-milter's if
// that is earlier. A deadline already set is kept if it is at most d/16
// earlier, to save timer work on every packet.
func (c *guardConn) arm(d time.Duration) {
	var want time.Time
	if d > 0 {
		want = time.Now().Add(d)
	}
	if !c.ext.IsZero() && (want.IsZero() || c.ext.Before(want)) {
		want = c.ext
	}
	if c.dl.Equal(want) || !c.dl.IsZero() && !want.IsZero() && !c.dl.After(want) && want.Sub(c.dl) <= d/16 {
		return
	}
	c.Conn.SetReadDeadline(want)
	c.dl = want
}

// hold counts a packet buffer of size bytes against maxBuffered, if it is
// larger than a chunk. It returns false if this connection had to give
// way.
func (c *guardConn) hold(size int) bool {
	if size <= packetChunk || c.tc == nil {
		return true
	}
	ok := c.tc.Hold(int64(size - c.held))
	c.held = size
	return ok
}

// drop forgets a packet buffer larger than a chunk (or any, if all), and
// returns its bytes to the budget.
func (c *guardConn) drop(all bool) {
	if all || cap(c.pkt) > packetChunk {
		c.pkt, c.off = nil, 0
	}
	if c.held > 0 {
		c.tc.Release()
		c.held = 0
	}
}

// checkPacket rejects the packets go-milter v0.10.1 cannot parse without
// indexing out of range. data is the command byte and the command's data.
func checkPacket(data []byte) error {
	switch data[0] {
	case 'C': // SMFIC_CONNECT: host name, NUL, family, [port, address]
		if i := bytes.IndexByte(data[1:], 0); i < 0 || 1+i+1 >= len(data) {
			return errors.New("milter: malformed connect packet from the MTA (no NUL-terminated host name followed by a family)")
		}
	case 'M', 'R': // SMFIC_MAIL, SMFIC_RCPT: address, NUL, [arguments]
		if bytes.IndexByte(data[1:], 0) < 0 {
			return fmt.Errorf("milter: malformed %q packet from the MTA (address not NUL-terminated)", data[0])
		}
	}
	return nil
}

// libraryLog receives go-milter's own warnings (malformed packets,
// negotiation failures, read errors), which it would otherwise print with
// the standard log package: without severity, past syslog. go-milter
// offers one hook for the whole process, so the milter server created
// last receives them (tlsgate serve runs one).
var libraryLog = func() func(*slog.Logger) {
	var cur atomic.Pointer[slog.Logger]
	gomilter.LogWarning = func(format string, v ...any) {
		if l := cur.Load(); l != nil {
			l.Warn("milter: connection problem", "detail", fmt.Sprintf(format, v...))
		}
	}
	return cur.Store
}()
