package demo

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// envelope is one message a demo client sends.
type envelope struct {
	From, To string
	Subject  string
}

// smtpSession describes how a demo client connects.
type smtpSession struct {
	// LocalIP is the source address (a 127.0.0.x loopback address that
	// stands for the partner's server).
	LocalIP string
	// Server is "127.0.0.1:PORT".
	Server string
	// Helo is the EHLO name.
	Helo string
	// TLS, if set, makes the client issue STARTTLS with this
	// configuration (and fail if the server does not offer it).
	TLS *tls.Config
}

// smtpOutcome is what happened to one message.
type smtpOutcome struct {
	// Transcript holds the commands sent ("C: ...") and the replies
	// received ("S: ..."), the message data left out.
	Transcript []string
	// Accepted is set when the server answered 250 to the message data.
	Accepted bool
	// Code is the last reply's code; Reply the last reply's text (first
	// line, with the enhanced status code), for example
	// "4.7.1 TLS required by local policy for this peer".
	Code  int
	Reply string
	// Stage is the command whose reply ended the transaction: "MAIL",
	// "RCPT", "DATA" or "." (end of data).
	Stage string
	// QueueID is the server's queue ID from "250 2.0.0 Ok: queued as ID".
	QueueID string
	// TLS is the session's TLS state, nil for plaintext.
	TLS *tls.ConnectionState
}

// sendMail runs one SMTP session with one message and reports what the
// server said. An error means the session failed for a reason other than
// a refusal (connection, TLS handshake, protocol).
func sendMail(s smtpSession, env envelope) (*smtpOutcome, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(s.LocalIP)}}
	nc, err := d.Dial("tcp4", s.Server)
	if err != nil {
		return nil, fmt.Errorf("connect from %s to %s: %w", s.LocalIP, s.Server, err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	c := &client{conn: textproto.NewConn(nc), out: &smtpOutcome{}}
	if _, _, err := c.expect("", 220); err != nil {
		return c.out, err
	}
	ext, err := c.ehlo(s.Helo)
	if err != nil {
		return c.out, err
	}
	if s.TLS != nil {
		if !strings.Contains(ext, "\nSTARTTLS") {
			return c.out, errors.New("the server does not offer STARTTLS")
		}
		if _, _, err := c.cmd("STARTTLS", 220); err != nil {
			return c.out, err
		}
		tc := tls.Client(nc, s.TLS)
		if err := tc.Handshake(); err != nil {
			return c.out, fmt.Errorf("TLS handshake: %w", err)
		}
		st := tc.ConnectionState()
		c.out.TLS = &st
		c.note(fmt.Sprintf("(TLS handshake done: %s, %s)", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)))
		c.conn = textproto.NewConn(tc)
		if _, err := c.ehlo(s.Helo); err != nil {
			return c.out, err
		}
	}
	defer c.cmd("QUIT", 221)
	refused := func(stage string, code int, msg string) (*smtpOutcome, error) {
		c.out.Stage, c.out.Code, c.out.Reply = stage, code, firstLine(msg)
		return c.out, nil
	}
	if code, msg, err := c.cmd("MAIL FROM:<"+env.From+">", 250); err != nil {
		if code >= 400 {
			return refused("MAIL", code, msg)
		}
		return c.out, err
	}
	if code, msg, err := c.cmd("RCPT TO:<"+env.To+">", 250); err != nil {
		if code >= 400 {
			return refused("RCPT", code, msg)
		}
		return c.out, err
	}
	if code, msg, err := c.cmd("DATA", 354); err != nil {
		if code >= 400 {
			return refused("DATA", code, msg)
		}
		return c.out, err
	}
	w := c.conn.DotWriter()
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@%s>\r\n\r\n%s\r\n",
		env.From, env.To, env.Subject, time.Now().Format(time.RFC1123Z), time.Now().UnixNano(), s.Helo,
		"This message was written by the tlsgate demo.")
	if err := w.Close(); err != nil {
		return c.out, err
	}
	c.out.Transcript = append(c.out.Transcript, "C: (message data) .")
	code, msg, err := c.expect(".", 250)
	if err != nil {
		if code >= 400 {
			return refused(".", code, msg)
		}
		return c.out, err
	}
	c.out.Accepted, c.out.Stage, c.out.Code, c.out.Reply = true, ".", code, firstLine(msg)
	if _, id, ok := strings.Cut(msg, "queued as "); ok {
		c.out.QueueID = strings.Fields(id)[0]
	}
	return c.out, nil
}

// client is a minimal SMTP client that records a transcript.
type client struct {
	conn *textproto.Conn
	out  *smtpOutcome
}

func (c *client) note(s string) { c.out.Transcript = append(c.out.Transcript, s) }

// cmd sends line and reads the reply, expecting code.
func (c *client) cmd(line string, want int) (int, string, error) {
	c.note("C: " + line)
	if err := c.conn.PrintfLine("%s", line); err != nil {
		return 0, "", err
	}
	verb, _, _ := strings.Cut(line, ":")
	verb, _, _ = strings.Cut(verb, " ")
	return c.expect(verb, want)
}

// expect reads a reply and records it; a code other than want is an
// error (a *textproto.Error for well-formed replies).
func (c *client) expect(what string, want int) (int, string, error) {
	code, msg, err := c.conn.ReadResponse(want)
	lines := strings.Split(msg, "\n")
	if what == "EHLO" && len(lines) > 1 {
		// One line for the extension list keeps the transcript short.
		lines = []string{lines[0] + " (" + strings.Join(lines[1:], ", ") + ")"}
	}
	for _, l := range lines {
		if code != 0 {
			c.note(fmt.Sprintf("S: %d %s", code, l))
		}
	}
	if err != nil && what != "" {
		err = fmt.Errorf("%s: %w", what, err)
	}
	return code, msg, err
}

// ehlo sends EHLO and returns the extension lines, each after "\n".
func (c *client) ehlo(name string) (string, error) {
	_, msg, err := c.cmd("EHLO "+name, 250)
	return "\n" + msg, err
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
