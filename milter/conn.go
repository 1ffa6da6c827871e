package milter

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"time"
)

// flushTimeout bounds how long a flush may wait for the MTA to read.
const flushTimeout = 10 * time.Second

// bufConn batches system calls for go-milter, which writes every packet
// with two writes and reads it with two reads. The milter protocol is
// strictly command/answer from our side: after writing answers (and
// header changes) the session always reads the next command or closes.
// So writes are collected and sent in one system call just before a read
// that would wait for the MTA (nothing buffered), or at close; reads go
// through a buffer, so that packets the MTA sends without waiting for an
// answer (headers, with SMFIP_NR_HDR) arrive in one read. Nothing waits in
// the buffer while we wait for the MTA.
type bufConn struct {
	net.Conn
	r *bufio.Reader

	mu  sync.Mutex // guards w against Close from another goroutine
	w   []byte
	err error // sticky write error
}

// readBufferSize is the read buffer of an MTA connection: room for the
// dozens of small packets the MTA sends without waiting (header lines,
// macros), allocated once per connection. Larger packets (body chunks
// up to 64 KB) are read past it into guardConn's packet buffer.
const readBufferSize = 4 << 10

func newBufConn(c net.Conn) *bufConn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}
}

// Buffered returns how many bytes can be read without waiting.
func (c *bufConn) Buffered() int { return c.r.Buffered() }

// Read flushes pending writes before it could block, then reads.
func (c *bufConn) Read(p []byte) (int, error) {
	if c.r.Buffered() == 0 {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return c.r.Read(p)
}

// Write queues p; it is sent before the next blocking read or at Close.
func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.w = append(c.w, p...)
	return len(p), nil
}

// SetWriteDeadline is ignored: writes only queue; flush sets its own.
func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline applies to reads only, for the same reason.
func (c *bufConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

func (c *bufConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *bufConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.w) == 0 {
		return nil
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(flushTimeout))
	_, err := c.Conn.Write(c.w)
	_ = c.Conn.SetWriteDeadline(time.Time{})
	c.w = c.w[:0]
	if cap(c.w) > 64<<10 {
		c.w = nil
	}
	if err != nil {
		c.err = err
	}
	return err
}

// Close sends what is pending, then closes. Called from another goroutine
// while the session is busy writing (go-milter's forced shutdown) it does
// not wait for the flush: closing unblocks the session.
func (c *bufConn) Close() error {
	var ferr error
	if c.mu.TryLock() {
		ferr = c.flushLocked()
		c.mu.Unlock()
	}
	cerr := c.Conn.Close()
	if cerr != nil {
		return cerr
	}
	if ferr != nil && !errors.Is(ferr, net.ErrClosed) {
		return ferr
	}
	return nil
}
