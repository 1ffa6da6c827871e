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
	// Warning marks something to look at that does not stop the file
	// from loading (Policy.Warnings).
	Warning bool
}

// Error formats the problem as "FILE:LINE: message", or as "FILE:LINE:
// warning: message" for a warning.
func (p *Problem) Error() string {
	msg := p.Msg
	if p.Warning {
		msg = "warning: " + msg
	}
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, msg)
	}
	return fmt.Sprintf("%s: %s", p.File, msg)
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

// Line returns the line of the file on which the setting at key (a path
// outside [[endpoint]], such as "certs.ca_store") was written, else the
// line of its table, else 0.
func (p *Policy) Line(key string) int { return lineOf(p.lines, key) }

// SettingProblem describes err, found while using the setting at key (such
// as "certs.ca_store" when the CA store cannot be read), as a problem at
// the setting's line: "FILE:LINE: [certs] ca_store: message". A leading
// "certs: " in err (a package prefix repeating the table's name) is
// dropped.
func (p *Policy) SettingProblem(key string, err error) *Problem {
	table, name, ok := strings.Cut(key, ".")
	msg := err.Error()
	where := key
	if ok {
		where = "[" + table + "] " + name
		msg = strings.TrimPrefix(msg, table+": ")
	}
	return &Problem{File: p.File, Line: p.Line(key), Msg: where + ": " + msg}
}

// SettingError is SettingProblem as a *LoadError, printed like the
// problems Load reports.
func (p *Policy) SettingError(key string, err error) error {
	return &LoadError{Problems: []*Problem{p.SettingProblem(key, err)}}
}
