package policy

import "fmt"

// Shape limits checked before the TOML decoder runs. The decoder's time and
// memory grow with the square of the nesting depth (a 400 KB file of nested
// inline tables x = {a={a={...}}} takes hours and gigabytes, and every level
// becomes an "unknown key" problem as long as the path), and a reload runs
// in the daemon's signal loop. A tlsgate file nests at most three levels
// ([[endpoint]], [endpoint.inbound], an array of strings) and has no float
// settings, so these limits only ever refuse files that could not be valid.
const (
	// MaxNesting is the most '[' and '{' open at once outside strings.
	MaxNesting = 16
	// MaxLineDots is the most '.' outside strings and comments on one line:
	// dotted keys and table names ([endpoint.inbound] has one).
	MaxLineDots = 16
)

// checkShape reports, as a *LoadError, the first place where data nests
// deeper than MaxNesting or has a line with more than MaxLineDots dots
// outside strings and comments. It follows TOML's four string forms and
// comments; it does not validate anything else (the decoder does).
func checkShape(name string, data []byte) error {
	fail := func(line int, format string, args ...any) error {
		return &LoadError{Problems: []*Problem{{File: name, Line: line, Msg: fmt.Sprintf(format, args...)}}}
	}
	var lx tomlLexer
	dots, line := 0, 1
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\n' {
			line++
			if lx.endsAtNewline() {
				dots = 0
			}
		}
		var inCode bool
		if i, inCode = lx.step(data, i); !inCode {
			continue
		}
		switch c {
		case '[', '{':
			if lx.depth > MaxNesting {
				return fail(line, "nesting deeper than %d levels of '[' and '{' (no tlsgate setting nests more than 3)", MaxNesting)
			}
		case '.':
			if dots++; dots > MaxLineDots {
				return fail(line, "more than %d dots outside strings on one line (no tlsgate key has more than 3 parts; put host names in quotes)", MaxLineDots)
			}
		}
	}
	return nil
}

// Lexer states of tomlLexer.
const (
	lexCode = iota
	lexComment
	lexBasic     // "..."
	lexLiteral   // '...'
	lexMLBasic   // """..."""
	lexMLLiteral // '''...'''
)

// tomlLexer follows TOML's comments and four string forms, and the nesting
// of '[' and '{' outside them, one byte at a time. It validates nothing
// (the decoder does): an unterminated one-line string ends at the newline.
type tomlLexer struct {
	state int // lexCode, lexComment, ...
	depth int // '[' and '{' open outside strings and comments
}

// endsAtNewline reports whether a newline in the current state returns
// to code: it ends a comment and an (unterminated) one-line string.
func (l *tomlLexer) endsAtNewline() bool { return l.state <= lexLiteral }

// step consumes data[i] and returns the index of the last byte it consumed
// (past i after an escape or the quotes that open or close a multi-line
// string) and whether data[i] was code: outside strings and comments, and
// not a newline.
func (l *tomlLexer) step(data []byte, i int) (int, bool) {
	has := func(s string) bool {
		return len(data)-i >= len(s) && string(data[i:i+len(s)]) == s
	}
	c := data[i]
	if c == '\n' && l.endsAtNewline() {
		l.state = lexCode
		return i, false
	}
	switch l.state {
	case lexCode:
		switch c {
		case '#':
			l.state = lexComment
		case '"':
			if has(`"""`) {
				l.state, i = lexMLBasic, i+2
			} else {
				l.state = lexBasic
			}
		case '\'':
			if has(`'''`) {
				l.state, i = lexMLLiteral, i+2
			} else {
				l.state = lexLiteral
			}
		case '[', '{':
			l.depth++
		case ']', '}':
			if l.depth > 0 {
				l.depth--
			}
		}
		return i, true
	case lexBasic:
		switch c {
		case '\\':
			i = skipEscaped(data, i)
		case '"':
			l.state = lexCode
		}
	case lexLiteral:
		if c == '\'' {
			l.state = lexCode
		}
	case lexMLBasic:
		switch {
		case c == '\\':
			i = skipEscaped(data, i)
		case has(`"""`):
			for i+3 < len(data) && data[i+3] == '"' { // up to two quotes end the content
				i++
			}
			l.state, i = lexCode, i+2
		}
	case lexMLLiteral:
		if has(`'''`) {
			for i+3 < len(data) && data[i+3] == '\'' {
				i++
			}
			l.state, i = lexCode, i+2
		}
	}
	return i, false
}

// skipEscaped returns the index of the byte escaped by the backslash at i,
// or i if that byte is a newline (a line-ending backslash), so that lines
// are still counted.
func skipEscaped(data []byte, i int) int {
	if i+1 < len(data) && data[i+1] != '\n' {
		return i + 1
	}
	return i
}
