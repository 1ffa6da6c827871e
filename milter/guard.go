package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/tlsgate/tlsgate/internal/listen"
)

// MaxPacketSize is the largest milter packet (command byte and data, without
// the 4-byte length) the milter accepts from an MTA: the 1 MiB − 1 data
// bytes of the largest buffer an MTA can negotiate (SMFIP_MDS_1M) plus the
// command byte. Postfix's longest packets are headers, bounded by its
// header_size_limit (default 102400); Sendmail's are body chunks of at most
// the negotiated size. A longer packet closes the milter connection; the
// MTA then applies its default action (tempfail, as tlsgate requires).
const MaxPacketSize = 1 << 20

// packetChunk is how much packet buffer is added at a time while a packet
// arrives, so that memory grows with the bytes received, not with the
// length the peer announces.
const packetChunk = 16 << 10

// guardListener protects go-milter v0.10.1 from what would end the whole
// process or hold memory it never received:
//
//   - its Serve returns on any Accept error, which would stop tlsgate
//     serve (all of its parts) when file descriptors run out; temporary
//     Accept errors are retried here with a growing delay instead;
//   - its packet reader allocates the announced length (up to 512 MB)
//     before reading, and its parser indexes past the end of some
//     malformed packets (a zero length, a connect, MAIL or RCPT packet
//     without its NUL terminators), a panic in a goroutine that nothing
//     recovers. guardConn hands go-milter only whole packets, read with
//     a buffer that grows as bytes arrive, of at most MaxPacketSize bytes,
//     and closes the connection on a malformed one.
type guardListener struct {
	net.Listener
}

// Accept returns the next connection wrapped in a guardConn, retrying
// temporary errors (see listen.Accept) with a warning each time.
func (l guardListener) Accept() (net.Conn, error) {
	c, err := listen.Accept(l.Listener, func(err error, retryIn time.Duration) {
		gomilter.LogWarning("accept failed, retrying in %v: %v", retryIn, err)
	})
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: c}, nil
}

// guardConn passes the MTA's packets to go-milter one whole, checked
// packet at a time (see guardListener).
type guardConn struct {
	net.Conn
	pkt []byte // the current packet with its length prefix
	off int    // how much of pkt go-milter has read
}

// Read serves the current packet; at a packet boundary it first reads and
// checks the next one.
func (c *guardConn) Read(p []byte) (int, error) {
	if c.off == len(c.pkt) {
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.pkt[c.off:])
	c.off += n
	return n, nil
}

// next reads the next packet into c.pkt. A stream that ends before the
// length prefix is io.EOF (a clean close); one that ends later is
// io.ErrUnexpectedEOF.
func (c *guardConn) next() error {
	if cap(c.pkt) > 4*packetChunk {
		c.pkt = nil // do not keep a rare large buffer
	}
	c.pkt, c.off = c.pkt[:0], 0
	var hdr [4]byte
	if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxPacketSize {
		return fmt.Errorf("milter: packet length %d from the MTA out of range 1..%d", n, MaxPacketSize)
	}
	total := 4 + int(n)
	buf := append(c.pkt, hdr[:]...)
	for len(buf) < total {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), len(buf)+min(total-len(buf), max(packetChunk, len(buf))))
			copy(nb, buf)
			buf = nb
		}
		m, err := c.Conn.Read(buf[len(buf):min(cap(buf), total)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < total {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("milter: reading a %d-byte packet (%d received): %w", n, len(buf)-4, err)
		}
	}
	if err := checkPacket(buf[4:]); err != nil {
		return err
	}
	c.pkt = buf
	return nil
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
