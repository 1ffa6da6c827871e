package policy

import (
	"fmt"
	"strings"
)

// Problem is one mistake in a configuration file, with its place.
type Problem struct {
	// File is the configuration file's path as given to Load.
	File string
	// Line is the 1-based line of the offending key, or 0 if unknown.
	Line int
	// Msg says what is wrong and how to fix it.
	Msg string
}

// Error formats the problem as "FILE:LINE: message".
func (p *Problem) Error() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Msg)
}

// LoadError lists every problem found in a configuration file.
type LoadError struct {
	Problems []*Problem
}

// Error returns all problems, one per line.
func (e *LoadError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Error())
	}
	return b.String()
}
