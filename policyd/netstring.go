package policyd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Netstring errors. ReadNetstring wraps them with the offending byte or length, so test
// them with errors.Is.
var (
	// ErrBadLength reports a length prefix that is empty, contains a byte other than an
	// ASCII digit before the ':' separator, or has a leading zero.
	ErrBadLength = errors.New("policyd: netstring: bad length")
	// ErrTooLong reports a length prefix larger than the caller's limit. It is detected
	// from the digits alone, before any payload byte is read or any memory is allocated.
	ErrTooLong = errors.New("policyd: netstring: length exceeds limit")
	// ErrMissingComma reports a payload that is not followed by the ',' terminator.
	ErrMissingComma = errors.New("policyd: netstring: missing ',' after payload")
	// ErrTruncated reports an end of stream inside a netstring (after its first byte).
	// It wraps io.ErrUnexpectedEOF.
	ErrTruncated = fmt.Errorf("policyd: netstring: truncated: %w", io.ErrUnexpectedEOF)
)

// netstringChunk is how much payload buffer is added at a time while a payload arrives, so
// that memory grows with the bytes actually received, not with the length a peer claims.
const netstringChunk = 4096

// ReadNetstring reads one netstring ("<decimal length>:<payload>,", D. J. Bernstein's
// format as used by Postfix socketmap_table(5) and Sendmail socket maps) from r and returns
// its payload in a newly allocated slice that the caller may keep.
//
// The parser is strict: the length is one or more ASCII digits without a leading zero
// (a lone "0" is allowed), immediately followed by ':'; the payload is arbitrary bytes
// (NUL and non-UTF-8 included) and must be followed by ','. A length larger than limit is
// rejected with ErrTooLong as soon as its digits show it, so a peer cannot make the reader
// allocate or wait for more than limit bytes. Memory for the payload grows as bytes arrive.
//
// ReadNetstring returns io.EOF, unwrapped, only when the stream ends before the first byte
// of a netstring (a clean close between requests); an end of stream later is ErrTruncated.
// Format errors wrap ErrBadLength, ErrTooLong or ErrMissingComma; I/O errors (for example a
// read deadline) are wrapped and remain visible to errors.Is / errors.As.
func ReadNetstring(r *bufio.Reader, limit int) ([]byte, error) {
	return readNetstring(r, limit, nil)
}

// readNetstring is ReadNetstring appending the payload to buf[:0], so that a server can
// reuse one buffer per connection and read without allocating.
func readNetstring(r *bufio.Reader, limit int, buf []byte) ([]byte, error) {
	maxDigits := decimalDigits(limit)
	n, digits := 0, 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF {
				if digits == 0 {
					return buf[:0], io.EOF
				}
				return buf[:0], fmt.Errorf("%w (in length, after %d digits)", ErrTruncated, digits)
			}
			return buf[:0], fmt.Errorf("policyd: netstring: reading length: %w", err)
		}
		if c == ':' {
			if digits == 0 {
				return buf[:0], fmt.Errorf("%w: empty length before ':'", ErrBadLength)
			}
			break
		}
		if c < '0' || c > '9' {
			return buf[:0], fmt.Errorf("%w: byte %s at offset %d of the length", ErrBadLength, quoteByte(c), digits)
		}
		if digits == 1 && n == 0 {
			return buf[:0], fmt.Errorf("%w: leading zero", ErrBadLength)
		}
		digits++
		if digits > maxDigits {
			return buf[:0], fmt.Errorf("%w: more than %d digits (limit %d bytes)", ErrTooLong, maxDigits, limit)
		}
		n = n*10 + int(c-'0')
	}
	if n > limit {
		return buf[:0], fmt.Errorf("%w: length %d, limit %d bytes", ErrTooLong, n, limit)
	}
	buf = buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			// Grow by what is missing, at most one chunk (or doubling) at a time.
			grow := min(n-len(buf), max(netstringChunk, len(buf)))
			nb := make([]byte, len(buf), len(buf)+grow)
			copy(nb, buf)
			buf = nb
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < n {
			if err == io.EOF {
				return buf[:0], fmt.Errorf("%w (payload: %d of %d bytes)", ErrTruncated, len(buf), n)
			}
			return buf[:0], fmt.Errorf("policyd: netstring: reading payload (%d of %d bytes): %w", len(buf), n, err)
		}
	}
	c, err := r.ReadByte()
	if err != nil {
		if err == io.EOF {
			return buf[:0], fmt.Errorf("%w (before ',')", ErrTruncated)
		}
		return buf[:0], fmt.Errorf("policyd: netstring: reading ',': %w", err)
	}
	if c != ',' {
		return buf[:0], fmt.Errorf("%w: got %s after %d payload bytes", ErrMissingComma, quoteByte(c), n)
	}
	return buf, nil
}

// AppendNetstring appends payload encoded as a netstring ("<len>:<payload>,") to dst and
// returns the extended slice. It does not allocate when dst has room.
func AppendNetstring(dst, payload []byte) []byte {
	dst = strconv.AppendInt(dst, int64(len(payload)), 10)
	dst = append(dst, ':')
	dst = append(dst, payload...)
	return append(dst, ',')
}

// appendNetstring2 appends the netstring whose payload is a followed by b, without
// concatenating them first.
func appendNetstring2(dst []byte, a, b string) []byte {
	dst = strconv.AppendInt(dst, int64(len(a)+len(b)), 10)
	dst = append(dst, ':')
	dst = append(dst, a...)
	dst = append(dst, b...)
	return append(dst, ',')
}

// decimalDigits returns the number of decimal digits of n (1 for n <= 9, including
// negative n, which then rejects every length through the n > limit check).
func decimalDigits(n int) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

// quoteByte formats c for an error message: printable ASCII quoted, anything else in hex.
func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("0x%02x", c)
}

// netstringComplete reports whether buf holds a whole netstring, or enough of one for
// readNetstring to fail on it, with any limit up to MaxRequestLimit, without reading more.
func netstringComplete(buf []byte) bool {
	const maxDigits = 7 // of MaxRequestLimit: readNetstring fails by the 8th digit
	n := 0
	for i, c := range buf {
		switch {
		case c == ':':
			return i == 0 || len(buf) >= i+1+n+1
		case c < '0' || c > '9', i >= maxDigits:
			return true
		}
		n = n*10 + int(c-'0')
	}
	return false
}
