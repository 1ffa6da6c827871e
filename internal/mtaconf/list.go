package mtaconf

import (
	"fmt"
	"strings"
)

// SplitList splits a Postfix list value the way Postfix reads it
// (mystrtokq() with separators comma and blank, braces grouping): at
// commas and blanks outside braces, so that "{ ... }" stays one element
// with its braces. "check_policy_service { unix:x, { a = b } }" is two
// elements: the restriction and its brace group. It fails on unbalanced
// braces.
func SplitList(s string) ([]string, error) {
	elems, _, err := splitSpans(s)
	return elems, err
}

// splitSpans is SplitList that also returns where each element is in s,
// so that an edit can keep the rest of the value as it is written.
func splitSpans(s string) ([]string, [][2]int, error) {
	var out []string
	var spans [][2]int
	i := 0
	for {
		for i < len(s) && isListSep(s[i]) {
			i++
		}
		if i == len(s) {
			return out, spans, nil
		}
		start, depth := i, 0
		for ; i < len(s) && (depth > 0 || !isListSep(s[i])); i++ {
			switch s[i] {
			case '{':
				depth++
			case '}':
				if depth == 0 {
					return nil, nil, fmt.Errorf("unbalanced } in %q", s)
				}
				depth--
			}
		}
		if depth != 0 {
			return nil, nil, fmt.Errorf("unbalanced { in %q", s)
		}
		out = append(out, s[start:i])
		spans = append(spans, [2]int{start, i})
	}
}

// insertAfter returns the (trimmed) list value s with text inserted after
// its element n, or first when n < 0, separated by ", "; the rest stays
// as written. spans are the elements' positions in s (splitSpans).
func insertAfter(s string, spans [][2]int, n int, text string) string {
	switch {
	case len(spans) == 0:
		return text
	case n < 0:
		return text + ", " + s
	}
	at := spans[n][1]
	return s[:at] + ", " + text + s[at:]
}

func isListSep(c byte) bool { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// braceFirst returns the first item of a "{ item, name=value, ... }"
// group, or the element itself when it is not a group.
func braceFirst(elem string) string {
	inner, ok := strings.CutPrefix(elem, "{")
	if !ok {
		return elem
	}
	inner = strings.TrimSuffix(inner, "}")
	items, err := SplitList(inner)
	if err != nil || len(items) == 0 {
		return ""
	}
	return items[0]
}
