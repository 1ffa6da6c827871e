// Package mangen turns tlsgate's man page sources (a small Markdown
// subset, deploy/man/*.md) into troff for man(7), so that the pages are
// written once and shipped generated (deploy/man/tlsgate.8,
// tlsgate.toml.5) without a generator on the packager's machine.
//
// The subset: a first line "% NAME SECTION DATE", "# HEADING", "## SUB",
// paragraphs, "- " list items, indented or fenced code blocks, `code` and
// **bold** spans.
package mangen

import (
	"bufio"
	"fmt"
	"regexp"
	"strings"
)

var (
	boldRE = regexp.MustCompile(`\*\*([^*]+)\*\*`)
	codeRE = regexp.MustCompile("`([^`]+)`")
)

// escape protects troff's special characters in running text.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func inline(s string) string {
	s = escape(s)
	s = boldRE.ReplaceAllString(s, `\fB$1\fR`)
	s = codeRE.ReplaceAllString(s, `\fB$1\fR`)
	return s
}

// Convert renders one page.
func Convert(src string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(src))
	var b strings.Builder
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "% ") {
		return "", fmt.Errorf("mangen: first line must be %% NAME SECTION DATE")
	}
	head := strings.Fields(strings.TrimPrefix(sc.Text(), "% "))
	if len(head) < 3 {
		return "", fmt.Errorf("mangen: first line must be %% NAME SECTION DATE")
	}
	fmt.Fprintf(&b, ".TH %s %s %s \"tlsgate\" \"tlsgate manual\"\n", strings.ToUpper(head[0]), head[1], head[2])
	b.WriteString(".\\\" Generated from deploy/man/" + head[0] + "." + head[1] + ".md by internal/mangen; do not edit.\n")
	inCode, inPara := false, false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```"):
			if inCode {
				b.WriteString(".fi\n.RE\n")
			} else {
				b.WriteString(".RS 4\n.nf\n")
			}
			inCode, inPara = !inCode, false
		case inCode:
			b.WriteString(escapeCode(line) + "\n")
		case strings.HasPrefix(line, "## "):
			fmt.Fprintf(&b, ".SS %s\n", escape(line[3:]))
			inPara = false
		case strings.HasPrefix(line, "# "):
			fmt.Fprintf(&b, ".SH %s\n", escape(strings.ToUpper(line[2:])))
			inPara = false
		case strings.TrimSpace(line) == "":
			inPara = false
		case strings.HasPrefix(line, "- "):
			fmt.Fprintf(&b, ".IP \\(bu 2\n%s\n", inline(line[2:]))
			inPara = true
		case strings.HasPrefix(line, "    "):
			fmt.Fprintf(&b, ".RS 4\n.nf\n%s\n.fi\n.RE\n", escapeCode(strings.TrimPrefix(line, "    ")))
		case strings.HasPrefix(line, ": "):
			fmt.Fprintf(&b, ".RS 4\n%s\n.RE\n", inline(line[2:]))
		default:
			if !inPara {
				b.WriteString(".PP\n")
				inPara = true
			}
			b.WriteString(inline(line) + "\n")
		}
	}
	if inCode {
		return "", fmt.Errorf("mangen: unterminated code block")
	}
	return b.String(), sc.Err()
}

func escapeCode(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
