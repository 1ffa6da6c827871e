package maillog

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"time"
)

// DefaultMaxLine is the longest line the reader keeps; longer lines are
// skipped and counted (Postfix's own lines stay under 2 KB; syslog
// daemons cut at 8 KB by default).
const DefaultMaxLine = 64 << 10

// Line is one syslog line, split into its header and message. The byte
// slices point into the reader's buffer and are valid until the next call
// of [Reader.Next].
type Line struct {
	// Time is the line's timestamp.
	Time time.Time
	// Host is the host name the syslog header names.
	Host []byte
	// Program is the syslog tag without the PID: "postfix/smtpd",
	// "postfix-out/smtp", "sendmail", "sm-mta", "tlsgate".
	Program []byte
	// PID is the process ID from "program[pid]:", 0 if none.
	PID int
	// Msg is the text after "program[pid]: ".
	Msg []byte
}

// Stats count what the reader did with its input.
type Stats struct {
	// Lines is the number of lines read, good or bad.
	Lines int64
	// Bytes is the number of (uncompressed) bytes read.
	Bytes int64
	// TooLong counts lines over the length limit (skipped).
	TooLong int64
	// Malformed counts lines that are not syslog lines: no timestamp, no
	// tag, binary data, a truncated line (skipped).
	Malformed int64
	// Meta counts journalctl's own lines ("-- Journal begins ...",
	// "-- Boot ... --", "-- No entries --") and empty lines (skipped).
	Meta int64
	// Corrupt counts compressed inputs that ended in a truncated or
	// corrupt stream (read up to the break).
	Corrupt int64
}

// Add adds o to s.
func (s *Stats) Add(o Stats) {
	s.Lines += o.Lines
	s.Bytes += o.Bytes
	s.TooLong += o.TooLong
	s.Malformed += o.Malformed
	s.Meta += o.Meta
	s.Corrupt += o.Corrupt
}

// Options configure [NewReader].
type Options struct {
	// Ref is the reference time for classic timestamps without a year:
	// dates after Ref (plus a day of clock skew) belong to the year before
	// Ref's. Default: now. Pass the file's modification time.
	Ref time.Time
	// Location is the time zone of classic timestamps (syslog writes local
	// time). Default: time.Local.
	Location *time.Location
	// MaxLine is the longest line kept. Default: DefaultMaxLine.
	MaxLine int
}

// Reader reads syslog lines from one input.
type Reader struct {
	br    *bufio.Reader
	gzip  bool
	opts  Options
	line  Line
	stats Stats
	err   error
	// The year inference's reference, and a cache of the last classic
	// timestamp (lines come in bursts within one second).
	refYear  int
	refMonth time.Month
	refDay   int
	lastTS   [15]byte
	lastTime time.Time
	skip     bool // inside an over-long line
}

// NewReader returns a reader of r. Gzip-compressed input is recognised by
// its first two bytes and decompressed.
func NewReader(r io.Reader, opts Options) (*Reader, error) {
	if opts.Ref.IsZero() {
		opts.Ref = time.Now()
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = DefaultMaxLine
	}
	size := max(64<<10, opts.MaxLine+1)
	br := bufio.NewReaderSize(r, size)
	gz := false
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("maillog: gzip: %w", err)
		}
		br = bufio.NewReaderSize(zr, size)
		gz = true
	}
	ref := opts.Ref.In(opts.Location).Add(24 * time.Hour)
	return &Reader{br: br, gzip: gz, opts: opts, refYear: ref.Year(), refMonth: ref.Month(), refDay: ref.Day()}, nil
}

// Next reads the next syslog line, skipping (and counting) anything that
// is not one. It returns false at the end of the input or on a read
// error ([Reader.Err]). A compressed stream that is truncated or corrupt
// ends the input where it breaks: the lines before are kept, and
// Stats.Corrupt says so.
func (r *Reader) Next() bool {
	for {
		raw, err := r.br.ReadSlice('\n')
		r.stats.Bytes += int64(len(raw))
		if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
			if r.gzip {
				// gzip: unexpected EOF, checksum or header errors.
				r.stats.Corrupt++
			} else {
				r.err = err
			}
			return false
		}
		if r.skip {
			// The tail of an over-long line.
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			r.skip = false
			if err == io.EOF {
				return false
			}
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) || len(raw) > r.opts.MaxLine+1 {
			r.stats.Lines++
			r.stats.TooLong++
			r.skip = err != nil
			if err == io.EOF {
				return false
			}
			continue
		}
		if len(raw) == 0 {
			return false
		}
		r.stats.Lines++
		if r.parse(bytes.TrimRight(raw, "\r\n")) {
			return true
		}
		if err == io.EOF {
			return false
		}
	}
}

// Line returns the current line; valid until the next call of Next.
func (r *Reader) Line() *Line { return &r.line }

// Err returns the read error that ended Next, nil at the end of input.
func (r *Reader) Err() error { return r.err }

// Stats returns the counts so far.
func (r *Reader) Stats() Stats { return r.stats }

// parse splits a line into header and message; false skips it.
func (r *Reader) parse(b []byte) bool {
	if len(b) == 0 || (len(b) > 1 && b[0] == '-' && b[1] == '-') {
		r.stats.Meta++
		return false
	}
	// A raw syslog priority "<22>" (lines captured from the socket).
	if b[0] == '<' {
		if i := bytes.IndexByte(b[:min(len(b), 5)], '>'); i > 1 {
			b = b[i+1:]
		}
	}
	var rest []byte
	var ok bool
	if len(b) > 10 && b[4] == '-' && isDigit(b[0]) {
		r.line.Time, rest, ok = parseISO(b)
	} else {
		r.line.Time, rest, ok = r.parseClassic(b)
	}
	if !ok {
		r.stats.Malformed++
		return false
	}
	// HOST SP TAG[PID]: SP MSG
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		r.stats.Malformed++
		return false
	}
	r.line.Host = rest[:sp]
	rest = rest[sp+1:]
	colon := bytes.Index(rest, []byte(": "))
	if colon <= 0 {
		// "tag:" at the end of the line: an empty message.
		if len(rest) > 1 && rest[len(rest)-1] == ':' {
			colon = len(rest) - 1
		} else {
			r.stats.Malformed++
			return false
		}
	}
	tag := rest[:colon]
	r.line.PID = 0
	if n := len(tag); n > 2 && tag[n-1] == ']' {
		if open := bytes.LastIndexByte(tag, '['); open > 0 {
			pid, ok := atoi(tag[open+1 : n-1])
			if !ok {
				r.stats.Malformed++
				return false
			}
			r.line.PID = pid
			tag = tag[:open]
		}
	}
	if !validTag(tag) {
		r.stats.Malformed++
		return false
	}
	r.line.Program = tag
	if colon+2 <= len(rest) {
		r.line.Msg = rest[colon+2:]
	} else {
		r.line.Msg = rest[len(rest):]
	}
	return true
}

// validTag accepts printable ASCII without spaces: anything else is binary
// or a line that is not a syslog line.
func validTag(t []byte) bool {
	for _, c := range t {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseClassic reads "Mmm dd hh:mm:ss " (day space- or zero-padded) and
// infers the year; it returns the rest after the following space. Lines
// with the same timestamp as the one before reuse its result.
func (r *Reader) parseClassic(b []byte) (time.Time, []byte, bool) {
	if len(b) < 16 || b[3] != ' ' || b[6] != ' ' || b[9] != ':' || b[12] != ':' {
		return time.Time{}, nil, false
	}
	rest := b[15:]
	// rsyslog may add fractional seconds; RFC 3164 allows none, but be
	// lenient with ".123456".
	if len(rest) > 0 && rest[0] == '.' {
		i := 1
		for i < len(rest) && isDigit(rest[i]) {
			i++
		}
		rest = rest[i:]
	}
	if len(rest) == 0 || rest[0] != ' ' {
		return time.Time{}, nil, false
	}
	rest = rest[1:]
	if bytes.Equal(b[:15], r.lastTS[:]) {
		return r.lastTime, rest, true
	}
	mon := 0
	for i, m := range months {
		if b[0] == m[0] && b[1] == m[1] && b[2] == m[2] {
			mon = i + 1
			break
		}
	}
	if mon == 0 {
		return time.Time{}, nil, false
	}
	d0 := b[4]
	if d0 == ' ' {
		d0 = '0'
	}
	day, ok1 := two(d0, b[5])
	hh, ok2 := two(b[7], b[8])
	mm, ok3 := two(b[10], b[11])
	ss, ok4 := two(b[13], b[14])
	if !ok1 || !ok2 || !ok3 || !ok4 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, nil, false
	}
	year := r.refYear
	if time.Month(mon) > r.refMonth || (time.Month(mon) == r.refMonth && day > r.refDay) {
		year--
	}
	t := time.Date(year, time.Month(mon), day, hh, mm, ss, 0, r.opts.Location)
	copy(r.lastTS[:], b[:15])
	r.lastTime = t
	return t, rest, true
}

// parseISO reads "2026-12-07T19:41:19[.frac](Z|+0000|+00:00) " and
// returns the rest after the space.
func parseISO(b []byte) (time.Time, []byte, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != ' ') || b[13] != ':' || b[16] != ':' {
		return time.Time{}, nil, false
	}
	y1, ok1 := two(b[0], b[1])
	y2, ok2 := two(b[2], b[3])
	mon, ok3 := two(b[5], b[6])
	day, ok4 := two(b[8], b[9])
	hh, ok5 := two(b[11], b[12])
	mm, ok6 := two(b[14], b[15])
	ss, ok7 := two(b[17], b[18])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || !ok7 || mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 {
		return time.Time{}, nil, false
	}
	i := 19
	nsec := 0
	if i < len(b) && (b[i] == '.' || b[i] == ',') {
		i++
		scale := 100000000
		for i < len(b) && isDigit(b[i]) {
			nsec += int(b[i]-'0') * scale
			scale /= 10
			i++
		}
	}
	offset := 0
	switch {
	case i < len(b) && b[i] == 'Z':
		i++
	case i+5 <= len(b) && (b[i] == '+' || b[i] == '-'):
		oh, okh := two(b[i+1], b[i+2])
		j := i + 3
		if j < len(b) && b[j] == ':' {
			j++
		}
		if j+2 > len(b) {
			return time.Time{}, nil, false
		}
		om, okm := two(b[j], b[j+1])
		if !okh || !okm {
			return time.Time{}, nil, false
		}
		offset = (oh*60 + om) * 60
		if b[i] == '-' {
			offset = -offset
		}
		i = j + 2
	default:
		return time.Time{}, nil, false
	}
	if i >= len(b) || b[i] != ' ' {
		return time.Time{}, nil, false
	}
	// Compute in UTC and shift: no time.FixedZone allocation per line.
	t := time.Date(y1*100+y2, time.Month(mon), day, hh, mm, ss, nsec, time.UTC).Add(-time.Duration(offset) * time.Second)
	return t, b[i+1:], true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func two(a, b byte) (int, bool) {
	if !isDigit(a) || !isDigit(b) {
		return 0, false
	}
	return int(a-'0')*10 + int(b-'0'), true
}

// atoi parses a small non-negative decimal number.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
