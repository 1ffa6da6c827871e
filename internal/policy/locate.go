package policy

import (
	"regexp"
	"strconv"
	"strings"
)

// locator finds the line on which a key was written, so that semantic
// errors can name "FILE:LINE" like TOML syntax errors do. It follows the
// plain layout used in tlsgate files (tables, arrays of tables, key = value
// lines); anything it cannot place is reported at the enclosing table.
type locator struct {
	lines []string
	keys  map[string]int // "endpoint.2.inbound.min_bits" → line (1-based)
	used  map[int]bool   // lines already reported by undecoded
}

var (
	tableRE = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_.\- "]+?)\s*\]\s*(#.*)?$`)
	arrayRE = regexp.MustCompile(`^\s*\[\[\s*([A-Za-z0-9_.\- "]+?)\s*\]\]\s*(#.*)?$`)
	keyRE   = regexp.MustCompile(`^\s*([A-Za-z0-9_.\-"]+)\s*=`)
)

func newLocator(data []byte) *locator {
	l := &locator{lines: strings.Split(string(data), "\n"), keys: map[string]int{}, used: map[int]bool{}}
	counts := map[string]int{}
	table := ""
	for i, line := range l.lines {
		n := i + 1
		if m := arrayRE.FindStringSubmatch(line); m != nil {
			name := cleanKey(m[1])
			counts[name]++
			table = name + "." + strconv.Itoa(counts[name]-1)
			l.keys[table] = n
			continue
		}
		if m := tableRE.FindStringSubmatch(line); m != nil {
			name := cleanKey(m[1])
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
		if m := keyRE.FindStringSubmatch(line); m != nil {
			k := cleanKey(m[1])
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

func cleanKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"`)
	}
	return strings.Join(parts, ".")
}

// line returns the line of path, falling back to its closest parent.
func (l *locator) line(path string) int {
	for p := path; p != ""; {
		if n, ok := l.keys[p]; ok {
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

// valueLine returns the line at or after the key's line that contains the
// quoted string v (used to point at one entry of a multi-line array).
func (l *locator) valueLine(path, v string) int {
	start := l.line(path)
	if start == 0 {
		return 0
	}
	q := strconv.Quote(v)
	for i := start - 1; i < len(l.lines) && i < start-1+1000; i++ {
		if strings.Contains(l.lines[i], q) || strings.Contains(l.lines[i], "'"+v+"'") {
			return i + 1
		}
	}
	return start
}

// undecoded places a key reported by toml's MetaData.Undecoded, which
// carries no array index: it returns the first not yet reported line whose
// path equals k once array indexes are removed.
func (l *locator) undecoded(k []string) int {
	want := strings.Join(k, ".")
	best := 0
	for path, n := range l.keys {
		if l.used[n] || stripIndexes(path) != want {
			continue
		}
		if best == 0 || n < best {
			best = n
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
