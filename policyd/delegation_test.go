package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// postfixRequest is a request as Postfix 3.7 sends it at RCPT after STARTTLS with an
// untrusted client certificate (attribute list from PF37 check_policy_service()).
const postfixRequest = "request=smtpd_access_policy\n" +
	"protocol_state=RCPT\n" +
	"protocol_name=ESMTP\n" +
	"client_address=127.0.0.1\n" +
	"client_name=localhost\n" +
	"client_port=41234\n" +
	"reverse_client_name=localhost\n" +
	"server_address=127.0.0.1\n" +
	"server_port=10025\n" +
	"helo_name=client.lab.test\n" +
	"sender=sender@lab.test\n" +
	"recipient=user@partner.test\n" +
	"recipient_count=0\n" +
	"queue_id=\n" +
	"instance=1f2e.6745a1b2.8c3d4.0\n" +
	"size=0\n" +
	"etrn_domain=\n" +
	"stress=\n" +
	"sasl_method=\n" +
	"sasl_username=\n" +
	"sasl_sender=\n" +
	"ccert_subject=\n" +
	"ccert_issuer=\n" +
	"ccert_fingerprint=9E:4B:0A:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD\n" +
	"ccert_pubkey_fingerprint=01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF\n" +
	"encryption_protocol=TLSv1.3\n" +
	"encryption_cipher=TLS_AES_256_GCM_SHA384\n" +
	"encryption_keysize=256\n" +
	"policy_context=\n" +
	"\n"

func TestParseDelegation(t *testing.T) {
	manyAttrs := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "attr%d=v\n", i)
		}
		return b.String() + "\n"
	}
	tests := []struct {
		name    string
		in      string
		lim     DelegationLimits
		want    Request // checked when wantErr is nil
		nattrs  int     // if want is nil: expected attribute count
		wantErr error
	}{
		{name: "postfix 3.7 request", in: postfixRequest, nattrs: 29},
		{name: "single", in: "request=smtpd_access_policy\n\n", want: Request{"request": "smtpd_access_policy"}},
		{name: "empty value", in: "a=\nb=x\n\n", want: Request{"a": "", "b": "x"}},
		{name: "value with equals", in: "policy_context=a=b=c\n\n", want: Request{"policy_context": "a=b=c"}},
		{name: "xtext value kept encoded", in: "ccert_subject=Lab+20CA\n\n", want: Request{"ccert_subject": "Lab+20CA"}},
		{name: "CR kept verbatim", in: "a=b\r\n\n", want: Request{"a": "b\r"}},
		{name: "non-UTF-8 value", in: "helo_name=\xff\xfe\n\n", want: Request{"helo_name": "\xff\xfe"}},
		{name: "line exactly at limit", in: "a=" + strings.Repeat("x", 4094) + "\n\n", want: Request{"a": strings.Repeat("x", 4094)}},
		{name: "long line beyond bufio buffer", in: "a=" + strings.Repeat("y", 6000) + "\n\n", lim: DelegationLimits{MaxLine: 8192}, want: Request{"a": strings.Repeat("y", 6000)}},
		{name: "100 attributes", in: manyAttrs(100), nattrs: 100},

		{name: "clean EOF", in: "", wantErr: io.EOF},
		{name: "missing blank line at EOF", in: "request=smtpd_access_policy\nprotocol_state=RCPT\n", wantErr: ErrUnterminated},
		{name: "EOF inside a line", in: "request=smtpd_access", wantErr: ErrUnterminated},
		{name: "duplicate attribute", in: "a=1\nb=2\na=3\n\n", wantErr: ErrDuplicateAttr},
		{name: "duplicate with same value", in: "a=1\na=1\n\n", wantErr: ErrDuplicateAttr},
		{name: "huge attribute", in: "ccert_subject=" + strings.Repeat("A", 1<<20) + "\n\n", wantErr: ErrLineTooLong},
		{name: "line one over limit", in: "a=" + strings.Repeat("x", 4095) + "\n\n", wantErr: ErrLineTooLong},
		{name: "huge line without newline", in: strings.Repeat("A", 100000), wantErr: ErrLineTooLong},
		{name: "no equals", in: "request\n\n", wantErr: ErrMissingEquals},
		{name: "empty name", in: "=value\n\n", wantErr: ErrEmptyName},
		{name: "NUL in value", in: "a=b\x00c\n\n", wantErr: ErrNULByte},
		{name: "NUL in name", in: "a\x00=b\n\n", wantErr: ErrNULByte},
		{name: "many attributes", in: manyAttrs(101), wantErr: ErrTooManyAttrs},
		{name: "10000 attributes", in: manyAttrs(10000), wantErr: ErrTooManyAttrs},
		{name: "request too large", in: manyAttrs(50), lim: DelegationLimits{MaxRequest: 200}, wantErr: ErrRequestTooLarge},
		{name: "empty request", in: "\n", wantErr: ErrEmptyRequest},
		{name: "CRLF blank line is not a blank line", in: "a=b\r\n\r\n", wantErr: ErrMissingEquals},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, wrap := range []struct {
				name string
				r    func(io.Reader) io.Reader
			}{{"whole", func(r io.Reader) io.Reader { return r }}, {"onebyte", iotest.OneByteReader}} {
				got, err := ParseDelegation(bufio.NewReader(wrap.r(strings.NewReader(tc.in))), tc.lim)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("%s: error %v, want %v", wrap.name, err, tc.wantErr)
					}
					if tc.wantErr == io.EOF && err != io.EOF {
						t.Fatalf("%s: clean EOF must be io.EOF itself, got %#v", wrap.name, err)
					}
					if tc.wantErr != io.EOF && !strings.HasPrefix(err.Error(), "policyd: delegation: ") {
						t.Fatalf("%s: error %q lacks the prefix", wrap.name, err)
					}
					if got != nil {
						t.Fatalf("%s: request %v returned with error", wrap.name, got)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", wrap.name, err)
				}
				if tc.want != nil && !maps.Equal(got, tc.want) {
					t.Fatalf("%s: got %v, want %v", wrap.name, got, tc.want)
				}
				if tc.want == nil && len(got) != tc.nattrs {
					t.Fatalf("%s: %d attributes, want %d", wrap.name, len(got), tc.nattrs)
				}
			}
		})
	}
}

// TestParseDelegationSequence reads two requests back to back from one stream.
func TestParseDelegationSequence(t *testing.T) {
	br := bufio.NewReader(strings.NewReader(postfixRequest + "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\n\n"))
	r1, err := ParseDelegation(br, DelegationLimits{})
	if err != nil || r1["protocol_state"] != "RCPT" || r1["ccert_fingerprint"] == "" {
		t.Fatalf("first: %v, %v", r1, err)
	}
	r2, err := ParseDelegation(br, DelegationLimits{})
	if err != nil || !maps.Equal(r2, Request{"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE"}) {
		t.Fatalf("second: %v, %v", r2, err)
	}
	if _, err := ParseDelegation(br, DelegationLimits{}); err != io.EOF {
		t.Fatalf("third: %v, want io.EOF", err)
	}
}

// TestParseDelegationBoundedMemory: a request made of one endless line does not make the
// parser buffer more than the line limit.
func TestParseDelegationBoundedMemory(t *testing.T) {
	var scratch []byte
	_, scratch, err := parseDelegation(bufio.NewReader(strings.NewReader(strings.Repeat("A", 10<<20))), DelegationLimits{}.withDefaults(), scratch)
	if !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("got %v", err)
	}
	if cap(scratch) > 4*DefaultDelegationMaxLine {
		t.Fatalf("scratch grew to %d bytes", cap(scratch))
	}
}

func FuzzParseDelegation(f *testing.F) {
	for _, s := range []string{postfixRequest, "a=b\n\n", "a=b\n", "a=1\na=2\n\n", "=x\n\n", "x\n\n", "\n", "a=b\x00\n\n", "a=b\r\n\r\n", "a=\n\na=\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := DelegationLimits{MaxLine: 64, MaxAttrs: 8, MaxRequest: 256}
		br := bufio.NewReader(bytes.NewReader(data))
		for {
			req, err := ParseDelegation(br, lim)
			if err == io.EOF {
				return
			}
			if err != nil {
				for _, e := range []error{ErrLineTooLong, ErrTooManyAttrs, ErrRequestTooLarge, ErrDuplicateAttr, ErrMissingEquals, ErrEmptyName, ErrNULByte, ErrEmptyRequest, ErrUnterminated} {
					if errors.Is(err, e) {
						return
					}
				}
				t.Fatalf("unexpected error kind: %v", err)
			}
			if len(req) == 0 || len(req) > lim.MaxAttrs {
				t.Fatalf("%d attributes", len(req))
			}
			// Re-encode and parse again: the same request.
			var enc strings.Builder
			for _, k := range slices.Sorted(maps.Keys(req)) {
				v := req[k]
				if k == "" || strings.ContainsAny(k, "=\n\x00") || strings.ContainsAny(v, "\n\x00") || len(k)+1+len(v) > lim.MaxLine {
					t.Fatalf("accepted bad attribute %q=%q", k, v)
				}
				enc.WriteString(k + "=" + v + "\n")
			}
			enc.WriteString("\n")
			again, err := ParseDelegation(bufio.NewReader(strings.NewReader(enc.String())), lim)
			if err != nil || !maps.Equal(req, again) {
				t.Fatalf("re-parse of %q: %v, %v", enc.String(), again, err)
			}
		}
	})
}

func TestNewDelegationServerOptions(t *testing.T) {
	dec := DecideFunc(func(context.Context, Request) string { return "DUNNO" })
	if _, err := NewDelegationServer(DelegationOptions{}); err == nil || !strings.Contains(err.Error(), "Decider is nil") {
		t.Fatalf("nil Decider: %v", err)
	}
	if _, err := NewDelegationServer(DelegationOptions{Decider: dec, MaxConns: -1}); err == nil {
		t.Fatal("negative MaxConns accepted")
	}
	if _, err := NewDelegationServer(DelegationOptions{Decider: dec, Limits: DelegationLimits{MaxLine: -1}}); err == nil {
		t.Fatal("negative MaxLine accepted")
	}
	s, err := NewDelegationServer(DelegationOptions{Decider: dec})
	if err != nil {
		t.Fatal(err)
	}
	if s.limits != (DelegationLimits{DefaultDelegationMaxLine, DefaultDelegationMaxAttrs, DefaultDelegationMaxRequest}) || s.srv.maxConns != DefaultMaxConns || s.srv.idleTimeout != DefaultIdleTimeout {
		t.Fatalf("defaults not applied: %+v %+v", s.limits, s.srv.serverConfig)
	}
}

// testDecider answers from the request: it is the Decider of the server tests.
type testDecider struct {
	mu   sync.Mutex
	seen []Request
}

func (d *testDecider) Decide(ctx context.Context, req Request) string {
	d.mu.Lock()
	d.seen = append(d.seen, req)
	d.mu.Unlock()
	switch req["sender"] {
	case "panic@lab.test":
		panic("decider boom")
	case "empty@lab.test":
		return ""
	case "inject@lab.test":
		return "DUNNO\n\naction=OK"
	case "long@lab.test":
		return "450 4.7.1 " + strings.Repeat("x", 5000)
	}
	if req["ccert_fingerprint"] != "" {
		return "DUNNO"
	}
	return "450 4.7.1 TLS client certificate required"
}

func startDelegation(t *testing.T, kind string, opts DelegationOptions) (*DelegationServer, string) {
	t.Helper()
	s, err := NewDelegationServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, spec := listenTest(t, kind)
	serveTest(t, s.Serve, s.Close, l)
	return s, spec
}

// readAction reads one "action=...\n\n" reply.
func readAction(c net.Conn, br *bufio.Reader) (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	blank, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if blank != "\n" {
		return "", fmt.Errorf("reply not ended by an empty line: %q %q", line, blank)
	}
	return line, nil
}

// TestDelegationServer sends requests on one persistent connection, as Postfix does, and
// checks replies and what the Decider saw.
func TestDelegationServer(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var logs logBuf
			dec := &testDecider{}
			_, spec := startDelegation(t, kind, DelegationOptions{Decider: dec, Logger: logs.logger()})
			c := dialSpec(t, spec)
			br := bufio.NewReader(c)
			steps := []struct{ send, want string }{
				{postfixRequest, "action=DUNNO\n"},
				{"request=smtpd_access_policy\nprotocol_state=RCPT\nccert_fingerprint=\n\n", "action=450 4.7.1 TLS client certificate required\n"},
				{"request=smtpd_access_policy\nsender=panic@lab.test\nqueue_id=ABC123\n\n", "action=" + ActionTempFail + "\n"},
				{"request=smtpd_access_policy\nsender=empty@lab.test\n\n", "action=" + ActionTempFail + "\n"},
				{"request=smtpd_access_policy\nsender=inject@lab.test\n\n", "action=" + ActionTempFail + "\n"},
				{"request=smtpd_access_policy\nsender=long@lab.test\n\n", "action=" + ActionTempFail + "\n"},
				{postfixRequest, "action=DUNNO\n"},
			}
			for i, st := range steps {
				if _, err := c.Write([]byte(st.send)); err != nil {
					t.Fatal(err)
				}
				got, err := readAction(c, br)
				if err != nil || got != st.want {
					t.Fatalf("step %d: %q, %v; want %q", i, got, err, st.want)
				}
			}
			dec.mu.Lock()
			first := dec.seen[0]
			dec.mu.Unlock()
			if first["ccert_pubkey_fingerprint"] != "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF" || first["encryption_protocol"] != "TLSv1.3" {
				t.Fatalf("Decider saw %v", first)
			}
			for _, want := range []string{"Decider panicked", "queue_id=ABC123", "empty action", "CR, LF or NUL", "over-long action"} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
		})
	}
}

// TestDelegationProtocolErrors: a malformed request is logged and the connection closed
// without a reply; other clients are unaffected.
func TestDelegationProtocolErrors(t *testing.T) {
	tests := []struct {
		name, send, log string
		closeWrite      bool
	}{
		{name: "no equals", send: "request=smtpd_access_policy\ngarbage\n\n", log: "without '='"},
		{name: "duplicate", send: "a=1\na=2\n\n", log: "duplicate attribute"},
		{name: "huge attribute", send: "ccert_subject=" + strings.Repeat("A", 1<<20) + "\n\n", log: "line too long"},
		{name: "too many attributes", send: strings.Repeat("x=1\n", 1) + func() string {
			var b strings.Builder
			for i := range 200 {
				fmt.Fprintf(&b, "a%d=1\n", i)
			}
			return b.String()
		}() + "\n", log: "too many attributes"},
		{name: "NUL", send: "a=\x00\n\n", log: "NUL byte"},
		{name: "missing blank line at EOF", send: "request=smtpd_access_policy\n", closeWrite: true, log: "not terminated"},
		{name: "empty request", send: "\n", log: "empty request"},
	}
	var logs logBuf
	s, spec := startDelegation(t, "tcp", DelegationOptions{Decider: &testDecider{}, Logger: logs.logger()})
	good := dialSpec(t, spec)
	goodBr := bufio.NewReader(good)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSpec(t, spec)
			go func() {
				c.Write([]byte(tc.send))
				if tc.closeWrite {
					c.(interface{ CloseWrite() error }).CloseWrite()
				}
			}()
			expectClosed(t, c, bufio.NewReader(c), 5*time.Second)
			logs.waitFor(t, tc.log)
			good.Write([]byte(postfixRequest))
			if got, err := readAction(good, goodBr); err != nil || got != "action=DUNNO\n" {
				t.Fatalf("other client: %q, %v", got, err)
			}
		})
	}
	waitConns(t, s.srv, 1)
}

// TestDelegationSlowloris: a request trickled byte by byte is cut after ReadTimeout.
func TestDelegationSlowloris(t *testing.T) {
	var logs logBuf
	_, spec := startDelegation(t, "unix", DelegationOptions{Decider: &testDecider{}, ReadTimeout: 200 * time.Millisecond, Logger: logs.logger()})
	c := dialSpec(t, spec)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; i < len(postfixRequest); i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := c.Write([]byte{postfixRequest[i]}); err != nil {
				return
			}
		}
	}()
	expectClosed(t, c, bufio.NewReader(c), 5*time.Second)
	logs.waitFor(t, "request not received in time")
}

// TestDelegationShutdown: the request in flight is answered, then the connection closes.
func TestDelegationShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	dec := DecideFunc(func(ctx context.Context, req Request) string {
		close(started)
		<-release
		return "DUNNO"
	})
	s, spec := startDelegation(t, "unix", DelegationOptions{Decider: dec, Logger: discardLogger()})
	c := dialSpec(t, spec)
	br := bufio.NewReader(c)
	c.Write([]byte(postfixRequest))
	<-started
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if got, err := readAction(c, br); err != nil || got != "action=DUNNO\n" {
		t.Fatalf("in-flight reply %q, %v", got, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, br, 5*time.Second)
}

func TestDelegationComplete(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", false},
		{"\n", true},
		{"a=b\n", false},
		{"a=b\n\n", true},
		{"a=b\nc=d\n\nx", true},
		{"a=b\r\n\r\n", false},
	}
	for _, tc := range tests {
		if got := delegationComplete([]byte(tc.in)); got != tc.want {
			t.Errorf("delegationComplete(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
