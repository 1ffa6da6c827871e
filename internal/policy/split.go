package policy

import "bytes"

// Large files are compiled in pieces. The TOML decoder builds a tree of
// the whole document before it fills in the structs, so decoding a file
// of 100,000 endpoints at once takes a gigabyte for a moment; cut at
// [[endpoint]] tables, the pieces are decoded one after another (and in
// parallel), each piece's garbage is gone before long, and a reload
// compiles again only the pieces whose content changed. A piece holds
// whole [[endpoint]] tables (with their [endpoint.inbound] and
// [endpoint.outbound]), so it means in a document of its own exactly
// what it means in the file.
const (
	// pieceSize is about how many bytes of [[endpoint]] tables a piece
	// holds.
	pieceSize = 256 << 10
	// splitAbove is the size from which a file is cut into pieces.
	splitAbove = 2 * pieceSize
)

// piece is a part of a file: its bytes and the line it starts on.
type piece struct {
	data []byte
	line int
}

// split cuts data into a head (what comes before the first [[endpoint]]
// table: the main file's settings) and pieces of whole [[endpoint]]
// tables of about pieceSize bytes. It returns ok false, and the file is
// then decoded whole, when the cut could change the meaning or the
// problems reported: a table header after the first [[endpoint]] other
// than [[endpoint]], [endpoint.inbound] and [endpoint.outbound] as
// documented (a misspelt one, or a settings table among the endpoints),
// or a head that is not blank in an included file (blank: comments and
// white space only).
func split(data []byte, main bool) (head []byte, pieces []piece, ok bool) {
	var starts []int // offsets of the [[endpoint]] lines
	var lines []int  // their line numbers
	headBlank := true
	ok = true
	scanLines(data, func(off, line int, text []byte) bool {
		t := bytes.TrimSpace(text)
		if len(t) == 0 || t[0] == '#' {
			return true
		}
		if t[0] != '[' {
			if len(starts) == 0 {
				headBlank = false
			}
			return true
		}
		hdr := string(text)
		if name, isArray := matchHeader(hdr, true); isArray {
			if cleanKey(name) != "endpoint" {
				ok = false
				return false
			}
			starts = append(starts, off)
			lines = append(lines, line)
			return true
		}
		name, isTable := matchHeader(hdr, false)
		if len(starts) == 0 {
			headBlank = headBlank && !isTable
			return true
		}
		if !isTable {
			ok = false // not a header the locator reads: decode whole
			return false
		}
		if n := cleanKey(name); n != "endpoint.inbound" && n != "endpoint.outbound" {
			ok = false
			return false
		}
		return true
	})
	if !ok || len(starts) == 0 || (!main && !headBlank) {
		return nil, nil, false
	}
	head = data[:starts[0]]
	from := 0
	for i := 1; i <= len(starts); i++ {
		end := len(data)
		if i < len(starts) {
			end = starts[i]
			if end-starts[from] < pieceSize {
				continue
			}
		}
		pieces = append(pieces, piece{data: data[starts[from]:end], line: lines[from]})
		from = i
	}
	return head, pieces, true
}

// scanLines calls f with the offset, number and text of each line that
// starts outside a string, a comment and any '[' or '{', until f returns
// false: the lines on which a table header or a top-level key can be. It
// follows TOML's four string forms with tomlLexer, as checkShape does.
func scanLines(data []byte, f func(off, line int, text []byte) bool) {
	var lx tomlLexer
	line, lineStart := 1, 0
	atLineStart := true
	for i := 0; i <= len(data); i++ {
		if atLineStart {
			atLineStart = false
			if lx.state == lexCode && lx.depth == 0 {
				end := bytes.IndexByte(data[lineStart:], '\n')
				if end < 0 {
					end = len(data) - lineStart
				}
				if !f(lineStart, line, data[lineStart:lineStart+end]) {
					return
				}
			}
		}
		if i == len(data) {
			return
		}
		if data[i] == '\n' {
			line++
			lineStart, atLineStart = i+1, true
		}
		i, _ = lx.step(data, i)
	}
}
