package policy

import "strconv"

// Outcome is what an inbound decision means for the mail. It is computed
// once, from a Verdict (Verdict.Outcome) or, for an internal fault, given
// by the adapter (OutcomeTempFail); every adapter takes its SMTP reply,
// its log word and its metric label from it, so that the milter, the
// policy-delegation server, the metrics and `tlsgate query` agree.
type Outcome int

// The outcomes, from "nothing to say" to "refused".
const (
	// OutcomeNone: no endpoint covers the session; the MTA goes on with
	// its own rules.
	OutcomeNone Outcome = iota
	// OutcomePass: every covering endpoint is satisfied.
	OutcomePass
	// OutcomeUnchecked: nothing the judging part can see fails, but a
	// covering endpoint has a requirement it cannot see (Verdict.Unchecked:
	// on Postfix the milter sees no fingerprints). The part that sees it
	// (the policy-delegation server, at RCPT TO) decides; its decision is
	// the final word. The mail goes on here.
	OutcomeUnchecked
	// OutcomeMonitor: a covering endpoint in monitor mode failed and no
	// enforcing one did; the mail is accepted (and stamped as failed).
	OutcomeMonitor
	// OutcomeException: the mail is accepted only because an unexpired
	// exception (exception_to) covers the session: the endpoint it
	// relaxes would have refused it. Once the exception expires the same
	// session is refused.
	OutcomeException
	// OutcomeDefer: an enforcing endpoint with action "defer" failed; the
	// client gets 451 4.7.1 and retries.
	OutcomeDefer
	// OutcomeReject: an enforcing endpoint with action "reject" failed;
	// the client gets 550 5.7.1 and bounces the mail.
	OutcomeReject
	// OutcomeTempFail: tlsgate could not decide (no policy loaded, facts
	// the MTA reported that cannot be read, a fault); the client gets
	// 451 4.3.0 and retries. Nothing is accepted unjudged.
	OutcomeTempFail
)

var outcomeWords = [...]string{
	OutcomeNone:      "none",
	OutcomePass:      "pass",
	OutcomeUnchecked: "unchecked",
	OutcomeMonitor:   "monitor",
	OutcomeException: "exception",
	OutcomeDefer:     "defer",
	OutcomeReject:    "reject",
	OutcomeTempFail:  "tempfail",
}

// String returns the outcome's word, which is both its log word (result=)
// and its metric label: none, pass, unchecked, monitor, exception, defer,
// reject or tempfail.
func (o Outcome) String() string {
	if o < 0 || int(o) >= len(outcomeWords) {
		return "tempfail"
	}
	return outcomeWords[o]
}

// Refuses reports whether the outcome refuses the mail (defer, reject,
// tempfail).
func (o Outcome) Refuses() bool { return o >= OutcomeDefer }

// Reply is an SMTP reply: code, enhanced status code and text.
type Reply struct {
	// Code is the basic reply code (451, 550); 0 for an outcome that
	// refuses nothing.
	Code int
	// Status is the enhanced status code (RFC 3463), such as "4.7.1".
	Status string
	// Text is the human-readable text.
	Text string
}

// String returns the reply as the client sees it:
// "451 4.7.1 TLS required by local policy for this peer".
func (r Reply) String() string {
	if r.Code == 0 {
		return ""
	}
	return strconv.Itoa(r.Code) + " " + r.Message()
}

// Message returns the enhanced status code and the text, the form a
// milter hands to the MTA with the code: "4.7.1 TLS required ...".
func (r Reply) Message() string {
	if r.Code == 0 {
		return ""
	}
	return r.Status + " " + r.Text
}

// The replies. The text is deliberately generic; the precise reason
// belongs in the log.
const (
	refusedText  = "TLS required by local policy for this peer"
	tempFailText = "TLS policy check failed temporarily, try again later"

	// DeferCode and DeferText answer an enforced endpoint with action
	// "defer" that failed: the client keeps the mail and retries.
	DeferCode = 451
	DeferText = "4.7.1 " + refusedText
	// RejectCode and RejectText answer an enforced endpoint with action
	// "reject" that failed: the client bounces the mail.
	RejectCode = 550
	RejectText = "5.7.1 " + refusedText
	// TempFailCode and TempFailText answer when tlsgate could not decide
	// (internal fault); nothing is accepted unjudged.
	TempFailCode = 451
	TempFailText = "4.3.0 " + tempFailText
)

// Reply returns the SMTP reply of an outcome that refuses mail; for the
// others (none, pass, unchecked, monitor, exception) the zero Reply: the MTA goes on
// (a milter continues, the delegation server answers DUNNO).
func (o Outcome) Reply() Reply {
	switch o {
	case OutcomeDefer:
		return Reply{Code: DeferCode, Status: "4.7.1", Text: refusedText}
	case OutcomeReject:
		return Reply{Code: RejectCode, Status: "5.7.1", Text: refusedText}
	case OutcomeTempFail:
		return Reply{Code: TempFailCode, Status: "4.3.0", Text: tempFailText}
	}
	return Reply{}
}

// Outcome returns what the verdict means for the mail: defer or reject
// when an enforcing endpoint failed, exception when only an unexpired
// exception let it through, monitor when only monitor-mode endpoints
// failed, unchecked when nothing failed but a requirement was left to
// another part (Unchecked), pass, or none when no endpoint covers the
// session.
func (v *Verdict) Outcome() Outcome {
	switch {
	case len(v.Endpoints) == 0:
		return OutcomeNone
	case v.Refuse && v.Action == Reject:
		return OutcomeReject
	case v.Refuse:
		return OutcomeDefer
	case v.excused:
		return OutcomeException
	case len(v.Failures) > 0:
		return OutcomeMonitor
	case len(v.Unchecked) > 0:
		return OutcomeUnchecked
	}
	return OutcomePass
}

// Reply returns the SMTP reply code and text (with its enhanced status
// code) for a verdict that refuses mail.
func (v *Verdict) Reply() (int, string) {
	r := v.Outcome().Reply()
	if r.Code == 0 {
		r = OutcomeDefer.Reply()
	}
	return r.Code, r.Message()
}
