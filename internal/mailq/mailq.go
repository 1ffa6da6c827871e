// Package mailq reads the MTA's queue: Postfix's "postqueue -j" (one JSON
// object per message, Postfix 3.1 and later) and Sendmail's "mailq"
// ("sendmail -bp") listing. Reading is one command run with a time limit,
// never a walk of the queue directory: the MTA's own tool knows its
// locking and file formats.
package mailq

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Message is one queued message.
type Message struct {
	// ID is the queue ID.
	ID string
	// Queue is Postfix's queue name (active, deferred, hold, incoming,
	// maildrop); Sendmail: "" (or "hold" for quarantined mail).
	Queue string
	// Sender is the envelope sender ("" for the null sender).
	Sender string
	// Arrival is when the message was queued (zero if not known).
	Arrival time.Time
	// Size is the message size in bytes.
	Size int64
	// Recipients are the undelivered recipients.
	Recipients []Recipient
}

// Recipient is one undelivered recipient.
type Recipient struct {
	Address string
	// Reason is the delay reason of the last attempt ("" if none yet).
	Reason string
}

// Domain returns the recipient's domain in lower case.
func (r Recipient) Domain() string {
	at := strings.LastIndexByte(r.Address, '@')
	if at < 0 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(r.Address[at+1:]), ".")
}

// ParsePostqueueJSON reads "postqueue -j" output. A line that is not a
// message object is an error naming the line.
func ParsePostqueueJSON(r io.Reader) ([]Message, error) {
	var out []Message
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m struct {
			QueueName   string `json:"queue_name"`
			QueueID     string `json:"queue_id"`
			ArrivalTime int64  `json:"arrival_time"`
			MessageSize int64  `json:"message_size"`
			Sender      string `json:"sender"`
			Recipients  []struct {
				Address     string `json:"address"`
				DelayReason string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("mailq: postqueue -j line %d: %v", n, err)
		}
		if m.QueueID == "" {
			return nil, fmt.Errorf("mailq: postqueue -j line %d: no queue_id", n)
		}
		msg := Message{ID: m.QueueID, Queue: m.QueueName, Sender: m.Sender, Size: m.MessageSize}
		if m.ArrivalTime > 0 {
			msg.Arrival = time.Unix(m.ArrivalTime, 0).UTC()
		}
		for _, rc := range m.Recipients {
			msg.Recipients = append(msg.Recipients, Recipient{Address: rc.Address, Reason: rc.DelayReason})
		}
		out = append(out, msg)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mailq: postqueue -j: %w", err)
	}
	return out, nil
}

// ParseMailq reads Sendmail's mailq listing:
//
//	/var/spool/mqueue (1 request)
//	-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------
//	6B7JfVnp031297       95 Mon Dec  7 19:41 <alice@trusted.test>
//	                 (Deferred: Connection refused by [127.0.0.1])
//	                                         <user@sm-out.test>
//	                Total requests: 1
//
// The year of Q-Time is not shown; arrival times are placed in the year
// that makes them not later than now.
func ParseMailq(r io.Reader, now time.Time) ([]Message, error) {
	var out []Message
	var cur *Message
	reason := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trim := strings.TrimSpace(line)
		switch {
		case trim == "" || strings.HasPrefix(trim, "-----Q-ID") || strings.HasPrefix(trim, "Total requests") ||
			strings.HasSuffix(trim, "is empty") || strings.Contains(trim, " request") && strings.HasPrefix(trim, "/"):
			continue
		case line[0] != ' ' && line[0] != '\t':
			f := strings.Fields(line)
			if len(f) < 3 {
				return nil, fmt.Errorf("mailq: cannot read %q", line)
			}
			id := strings.TrimRight(f[0], "*X-")
			size, _ := strconv.ParseInt(f[1], 10, 64)
			cur = &Message{ID: id, Size: size}
			if len(f) >= 7 {
				if t, err := time.ParseInLocation("Jan 2 15:04", strings.Join(f[3:6], " "), now.Location()); err == nil {
					t = t.AddDate(now.Year(), 0, 0)
					if t.After(now.Add(24 * time.Hour)) {
						t = t.AddDate(-1, 0, 0)
					}
					cur.Arrival = t
				}
			}
			cur.Sender = strings.Trim(f[len(f)-1], "<>")
			reason = ""
			out = append(out, *cur)
			cur = &out[len(out)-1]
		case statusLine(trim):
			reason = strings.TrimSuffix(trim[strings.IndexByte(trim, '(')+1:], ")")
			if strings.HasPrefix(reason, "quarantined") || strings.HasPrefix(reason, "Quarantine") {
				if cur != nil {
					cur.Queue = "hold"
				}
			}
		case strings.HasPrefix(trim, "<") || strings.Contains(trim, "@"):
			if cur == nil {
				return nil, fmt.Errorf("mailq: recipient %q before any message", trim)
			}
			cur.Recipients = append(cur.Recipients, Recipient{Address: strings.Trim(trim, "<>"), Reason: reason})
		}
	}
	return out, sc.Err()
}

// statusLine reports whether a mailq line (trimmed) is a message's status:
// "(Deferred: 451 4.3.0 try again later)", or after the body type
// "7BIT   (CN a.example does not match b.example)".
func statusLine(trim string) bool {
	if !strings.HasSuffix(trim, ")") {
		return false
	}
	if strings.HasPrefix(trim, "(") {
		return true
	}
	body, rest, ok := strings.Cut(trim, " ")
	if !ok || strings.TrimLeft(body, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
		return false
	}
	return strings.HasPrefix(strings.TrimLeft(rest, " "), "(")
}

// Source runs a queue listing command.
type Source struct {
	// Argv is the command and its arguments.
	Argv []string
	// Sendmail selects the mailq parser (else postqueue -j).
	Sendmail bool
	// Timeout limits the command (default 30 s).
	Timeout time.Duration
}

// Postfix returns the source "postqueue [-c DIR] -j".
func Postfix(postqueue, configDir string) Source {
	if postqueue == "" {
		postqueue = "postqueue"
	}
	argv := []string{postqueue}
	if configDir != "" {
		argv = append(argv, "-c", configDir)
	}
	return Source{Argv: append(argv, "-j")}
}

// Sendmail returns the source "mailq" (or the given command, e.g.
// "sendmail -C /etc/mail/sendmail.cf -bp").
func Sendmail(argv []string) Source {
	if len(argv) == 0 {
		argv = []string{"mailq"}
	}
	return Source{Argv: argv, Sendmail: true}
}

// Read runs the command and parses its output.
func (s Source) Read(ctx context.Context, now time.Time) ([]Message, error) {
	if len(s.Argv) == 0 {
		return nil, fmt.Errorf("mailq: no command")
	}
	t := s.Timeout
	if t == 0 {
		t = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Argv[0], s.Argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("mailq: %s: no answer within %v", strings.Join(s.Argv, " "), t)
		}
		return nil, fmt.Errorf("mailq: %s: %v: %s", strings.Join(s.Argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	if s.Sendmail {
		return ParseMailq(&stdout, now)
	}
	return ParsePostqueueJSON(&stdout)
}
