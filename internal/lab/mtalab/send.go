package mtalab

import (
	"net/smtp"
)

// SendPlain submits one message to the SMTP server at addr without
// STARTTLS (a test about the server's outbound side need not trust its
// certificate): EHLO client.lab.test, MAIL FROM, one RCPT TO, DATA, QUIT.
// msg is the message with its header and CRLF line ends.
func SendPlain(addr, from, rcpt string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.lab.test"); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}
