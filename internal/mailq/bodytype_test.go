package mailq

import (
	"strings"
	"testing"
	"time"
)

// TestParseMailqBodyType: Sendmail 8.17 writes a message's body type
// before its status when the message has one, as in this listing of a
// real Sendmail (two messages held by its tls_rcpt check); the status is
// still the recipients' reason.
func TestParseMailqBodyType(t *testing.T) {
	listing := "\t\t/tmp/mtalab-sm-3642879606/queue (2 requests)\n" +
		"-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n" +
		"6B7LGJh4026695       17 Mon Dec  7 21:16 <sender@lab.test>\n" +
		"          7BIT   (CN wrong.partner.test does not match sink.partner.test)\n" +
		"\t\t\t\t\t <a@swap.sm.test>\n" +
		"6B7LGJS7026698       17 Mon Dec  7 21:16 <sender@lab.test>\n" +
		"          8BITMIME (Deferred: 451 4.3.0 try again later)\n" +
		"\t\t\t\t\t <b@swap.sm.test>\n" +
		"\t\tTotal requests: 2\n"
	q, err := ParseMailq(strings.NewReader(listing), time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2 || q[0].Recipients[0].Reason != "CN wrong.partner.test does not match sink.partner.test" ||
		q[1].Recipients[0].Reason != "Deferred: 451 4.3.0 try again later" || q[1].Recipients[0].Address != "b@swap.sm.test" {
		t.Errorf("%+v", q)
	}
	for line, want := range map[string]bool{
		"(Deferred: x)": true, "7BIT   (x)": true, "8BITMIME (x)": true,
		"<a@b.example>": false, "7bit (x)": false, "Total requests: 2": false, "(open": false,
	} {
		if got := statusLine(line); got != want {
			t.Errorf("statusLine(%q) = %v", line, got)
		}
	}
}
