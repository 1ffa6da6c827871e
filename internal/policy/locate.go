package policy

import (
	"slices"
	"strconv"
	"strings"
)

// locator finds the line on which a key was written, so that semantic
// errors can name "FILE:LINE" like TOML syntax errors do. It follows the
// plain layout used in tlsgate files (tables, arrays of tables, key = value
// lines); anything it cannot place is reported at the enclosing table.
type locator struct {
	base  int // lines of the file before data (a piece; see split)
	lines []string
	keys  map[string]int   // "endpoint.2.inbound.min_bits" → line (1-based)
	used  map[int]bool     // lines already reported by undecoded
	byKey map[string][]int // key path without array indexes → its lines, ascending (built by undecoded)
}

// newLocator reads data, which starts on line base+1 of its file. Only
// lines that start outside strings, comments and brackets can hold a
// table header or a key (scanLines): a multi-line string may hold a line
// like "[certs]" that is no table.
func newLocator(data []byte, base int) *locator {
	lines := strings.Split(string(data), "\n")
	l := &locator{base: base, lines: lines, keys: make(map[string]int, len(lines)), used: map[int]bool{}}
	eligible := make([]bool, len(lines)+1)
	scanLines(data, func(_, line int, _ []byte) bool {
		eligible[line-1] = true
		return true
	})
	counts := map[string]int{}
	table := ""
	for i, line := range l.lines {
		if !eligible[i] {
			continue
		}
		n := base + i + 1
		if name, ok := matchHeader(line, true); ok {
			name = cleanKey(name)
			counts[name]++
			table = name + "." + strconv.Itoa(counts[name]-1)
			l.keys[table] = n
			continue
		}
		if name, ok := matchHeader(line, false); ok {
			name = cleanKey(name)
			// [endpoint.inbound] belongs to the latest [[endpoint]].
			if dot := strings.IndexByte(name, '.'); dot > 0 {
				if c := counts[name[:dot]]; c > 0 {
					name = name[:dot] + "." + strconv.Itoa(c-1) + name[dot:]
				}
			}
			table = name
			l.keys[table] = n
			continue
		}
		if k, ok := matchKey(line); ok {
			k = cleanKey(k)
			if table != "" {
				k = table + "." + k
			}
			if _, dup := l.keys[k]; !dup {
				l.keys[k] = n
			}
		}
	}
	return l
}

// The matchers below do exactly what these regular expressions do (the
// tests compare them on many lines), without a regular expression: the
// locator reads every line of the file, and with 100,000 endpoints (a
// million lines) the regular expressions took about a quarter of the load.
//
//	array of tables  ^\s*\[\[\s*([A-Za-z0-9_.\- "]+?)\s*\]\]\s*(#.*)?$
//	table            ^\s*\[\s*([A-Za-z0-9_.\- "]+?)\s*\]\s*(#.*)?$
//	key              ^\s*([A-Za-z0-9_.\-"]+)\s*=

// isSpace is RE2's \s: [\t\n\f\r ].
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }

// isKeyByte is the key class [A-Za-z0-9_.\-"].
func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' || c == '"'
}

// isNameByte is the table-name class [A-Za-z0-9_.\- "].
func isNameByte(c byte) bool { return isKeyByte(c) || c == ' ' }

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// matchKey is the key expression: leading white space, a run of key bytes, white space
// and '='. It returns the run.
func matchKey(line string) (string, bool) {
	i := skipSpace(line, 0)
	start := i
	for i < len(line) && isKeyByte(line[i]) {
		i++
	}
	if i == start {
		return "", false
	}
	key := line[start:i]
	if i = skipSpace(line, i); i == len(line) || line[i] != '=' {
		return "", false
	}
	return key, true
}

// matchHeader is the table expression ("[name]") or, with array, the array
// of tables expression ("[[name]]"), each optionally followed by white space
// and a comment. It returns the name as the regular expression captures it:
// the leading white space belongs to the "\s*" before the lazy capture, the
// trailing white space to the "\s*" after it, and a name of white space
// only is one space.
func matchHeader(line string, array bool) (string, bool) {
	open, closing := "[", "]"
	if array {
		open, closing = "[[", "]]"
	}
	i := skipSpace(line, 0)
	if !strings.HasPrefix(line[i:], open) {
		return "", false
	}
	i += len(open)
	// Neither the name class nor \s contains ']': the header ends at the
	// first ']' after the opening bracket(s).
	end := strings.IndexByte(line[i:], ']')
	if end < 0 {
		return "", false
	}
	content, rest := line[i:i+end], line[i+end:]
	if !strings.HasPrefix(rest, closing) {
		return "", false
	}
	rest = rest[len(closing):]
	if r := rest[skipSpace(rest, 0):]; r != "" && r[0] != '#' {
		return "", false
	}
	// content must be \s* name+ \s*, with name bytes from the name class.
	lo, hi := skipSpace(content, 0), len(content)
	for hi > lo && isSpace(content[hi-1]) {
		hi--
	}
	if lo == hi {
		// White space only: the capture is one space, if there is one.
		if strings.IndexByte(content, ' ') >= 0 {
			return " ", true
		}
		return "", false
	}
	name := content[lo:hi]
	for j := 0; j < len(name); j++ {
		if !isNameByte(name[j]) {
			return "", false
		}
	}
	return name, true
}

func cleanKey(k string) string {
	if strings.IndexByte(k, '.') < 0 && strings.IndexByte(k, '"') < 0 && strings.TrimSpace(k) == k {
		return k // nothing to clean: a plain key, no allocation
	}
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"`)
	}
	return strings.Join(parts, ".")
}

// line returns the line of path, falling back to its closest parent.
func (l *locator) line(path string) int { return lineOf(l.keys, path) }

// lineOf returns the line keys gives for path or, failing that, for its
// closest parent ("certs.ca_store", then "certs"), else 0.
func lineOf(keys map[string]int, path string) int {
	for p := path; p != ""; {
		if n, ok := keys[p]; ok {
			return n
		}
		dot := strings.LastIndexByte(p, '.')
		if dot < 0 {
			break
		}
		p = p[:dot]
	}
	return 0
}

// value returns the text after '=' on the line of path, without a
// trailing comment (for messages that quote what was written).
func (l *locator) value(path string) string {
	n := l.line(path) - l.base
	if n <= 0 || n > len(l.lines) {
		return ""
	}
	_, v, _ := strings.Cut(l.lines[n-1], "=")
	if i := strings.IndexByte(v, '#'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// valueLine returns the line at or after the key's line that contains the
// quoted string v (used to point at one entry of a multi-line array).
func (l *locator) valueLine(path, v string) int {
	start := l.line(path)
	if start == 0 {
		return 0
	}
	q := strconv.Quote(v)
	for i := start - 1 - l.base; i < len(l.lines) && i < start-1-l.base+1000; i++ {
		if strings.Contains(l.lines[i], q) || strings.Contains(l.lines[i], "'"+v+"'") {
			return l.base + i + 1
		}
	}
	return start
}

// valueLines returns, for each string of the array at path (an
// endpoint's hosts), the line it is written on, as valueLine does for
// one, in one pass: each is looked for from where the one before was
// found, in the lines the array can span, so that a million hosts on one
// line cost one pass over it. A string not found (written with escapes)
// gets the line of the key; after maxMisses of them the rest are not
// looked for.
func (l *locator) valueLines(path string, vs []string) []int32 {
	const maxMisses = 16
	out := make([]int32, len(vs))
	start := l.line(path)
	if start == 0 {
		return out
	}
	end := min(len(l.lines), start-1-l.base+1000)
	j, off := start-1-l.base, 0 // where the search goes on: line and offset in it
	misses := 0
	for k, v := range vs {
		out[k] = int32(start)
		if misses >= maxMisses {
			continue
		}
		found := false
		for jj, o := j, off; jj < end; jj, o = jj+1, 0 {
			if at := indexQuoted(l.lines[jj][o:], v); at >= 0 {
				out[k], j, off, found = int32(l.base+jj+1), jj, o+at+len(v), true
				break
			}
		}
		if !found {
			misses++
		}
	}
	return out
}

// indexQuoted returns the index of v in line where it stands in double or
// single quotes (v without characters that need escaping, as host
// patterns are), or -1.
func indexQuoted(line, v string) int {
	for off := 0; off <= len(line); {
		i := strings.Index(line[off:], v)
		if i < 0 {
			return -1
		}
		i += off
		if i > 0 && i+len(v) < len(line) {
			if q := line[i-1]; (q == '"' || q == '\'') && line[i+len(v)] == q {
				return i
			}
		}
		off = i + 1
	}
	return -1
}

// undecoded places a key reported by toml's MetaData.Undecoded, which
// carries no array index: it returns the first not yet reported line whose
// path equals k once array indexes are removed.
func (l *locator) undecoded(k []string) int {
	if l.byKey == nil {
		// Index once: scanning every key for every unknown key made a file
		// of many unknown keys quadratic.
		l.byKey = map[string][]int{}
		for path, n := range l.keys {
			s := stripIndexes(path)
			l.byKey[s] = append(l.byKey[s], n)
		}
		for _, lines := range l.byKey {
			slices.Sort(lines)
		}
	}
	best := 0
	for _, n := range l.byKey[strings.Join(k, ".")] {
		if !l.used[n] {
			best = n
			break
		}
	}
	l.used[best] = true
	return best
}

func stripIndexes(path string) string {
	parts := strings.Split(path, ".")
	out := parts[:0]
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}

// settingLines returns the lines of the keys and tables outside
// [[endpoint]] (a handful, kept by the Policy for Line).
func (l *locator) settingLines() map[string]int {
	m := map[string]int{}
	for k, n := range l.keys {
		if k != "endpoint" && !strings.HasPrefix(k, "endpoint.") {
			// A copy: k may share memory with the whole file's text,
			// which the policy must not keep alive.
			m[strings.Clone(k)] = n
		}
	}
	return m
}
