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
	const (
		code = iota
		comment
		basic     // "..."
		literal   // '...'
		mlBasic   // """..."""
		mlLiteral // '''...'''
	)
	state, depth, dots, line := code, 0, 0, 1
	has := func(i int, s string) bool {
		return len(data)-i >= len(s) && string(data[i:i+len(s)]) == s
	}
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\n' {
			line++
			if state == code || state == comment {
				state, dots = code, 0
				continue
			}
			if state == basic || state == literal {
				state, dots = code, 0 // unterminated: the decoder reports it
				continue
			}
		}
		switch state {
		case code:
			switch c {
			case '#':
				state = comment
			case '"':
				if has(i, `"""`) {
					state, i = mlBasic, i+2
				} else {
					state = basic
				}
			case '\'':
				if has(i, `'''`) {
					state, i = mlLiteral, i+2
				} else {
					state = literal
				}
			case '[', '{':
				if depth++; depth > MaxNesting {
					return fail(line, "nesting deeper than %d levels of '[' and '{' (no tlsgate setting nests more than 3)", MaxNesting)
				}
			case ']', '}':
				if depth > 0 {
					depth--
				}
			case '.':
				if dots++; dots > MaxLineDots {
					return fail(line, "more than %d dots outside strings on one line (no tlsgate key has more than 3 parts; put host names in quotes)", MaxLineDots)
				}
			}
		case basic:
			switch c {
			case '\\':
				i = skipEscaped(data, i)
			case '"':
				state = code
			}
		case literal:
			if c == '\'' {
				state = code
			}
		case mlBasic:
			switch {
			case c == '\\':
				i = skipEscaped(data, i)
			case has(i, `"""`):
				for i+3 < len(data) && data[i+3] == '"' { // up to two quotes end the content
					i++
				}
				state, i = code, i+2
			}
		case mlLiteral:
			if has(i, `'''`) {
				for i+3 < len(data) && data[i+3] == '\'' {
					i++
				}
				state, i = code, i+2
			}
		}
	}
	return nil
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
