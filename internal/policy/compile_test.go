package policy

import (
	"fmt"
	"strings"
	"testing"
)

// TestAnswerFitsReply: an endpoint whose answer would not fit in a
// socketmap reply (MaxReply, policyd's limit) is refused at its line; one
// that just fits loads, and its answer is within the limit.
func TestAnswerFitsReply(t *testing.T) {
	conf := func(n int) string {
		var b strings.Builder
		b.WriteString("mta = \"postfix\"\n[[endpoint]]\nname = \"pins\"\nhosts = [\"a.example\"]\n  [endpoint.outbound]\n  validate_cert = false\n  fingerprints = [\n")
		for i := range n {
			fmt.Fprintf(&b, "    \"%064X\",\n", i)
		}
		b.WriteString("  ]\n")
		return b.String()
	}
	p := mustParse(t, conf(980))
	a, err := now(p).Outbound("a.example")
	if err != nil || !a.Found || len("OK ")+len(a.Text) > MaxReply || len("OK ")+len(a.Text) < MaxReply-102 {
		t.Fatalf("980 pins: answer of %d bytes, %v", len(a.Text), err)
	}
	_, err = Parse("t.toml", []byte(conf(981)))
	if err == nil || !strings.HasPrefix(err.Error(), "t.toml:2: endpoint \"pins\" outbound: the answer for the MTA would be 100076 bytes") {
		t.Fatalf("981 pins: %v", err)
	}
	// Sendmail: a cn is xtext-encoded into the answer.
	long := strings.Repeat("a b ", 20000)
	_, err = Parse("t.toml", []byte("mta = \"sendmail\"\n[[endpoint]]\nname = \"cn\"\nhosts = [\"a.example\"]\n  [endpoint.outbound]\n  cn = \""+long+"\"\n"))
	if err == nil || !strings.Contains(err.Error(), "t.toml:2: endpoint \"cn\" outbound: the answer for the MTA would be") || !strings.Contains(err.Error(), "use a shorter cn") {
		t.Fatalf("long cn: %v", err)
	}
	// Monitor mode answers nothing, but is refused as well: switching it to
	// enforce must not break lookups.
	if _, err := Parse("t.toml", []byte(strings.Replace(conf(981), "hosts =", "mode = \"monitor\"\nhosts =", 1))); err == nil {
		t.Fatal("monitor endpoint with 981 pins loaded")
	}
}
