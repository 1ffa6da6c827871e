package main

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/listen"
	"github.com/tlsgate/tlsgate/policyd"
)

const sendmailExample = "../../deploy/tlsgate.sendmail.example.toml"

// TestQueryOutboundSendmailKeys checks which access-map keys the file
// answers: the tag in any case; for tls_rcpt the address by its domain,
// no user@ key, and a domain key by the subdomain patterns above it (the
// exact name company-b.example is decided by the address key Sendmail
// asks first).
func TestQueryOutboundSendmailKeys(t *testing.T) {
	const companyB = "OK TEMP+VERIFY:256+CN:mx1.company-b.example++CI:/C=US/O=Example+20CA/CN=Example+20Issuing+20CA+202\n"
	for _, tc := range []struct {
		key, want string
		code      int
	}{
		{"tls_rcpt:a@company-b.example", companyB, 0},
		{"TLS_Rcpt:A@Company-B.example", companyB, 0},
		{"TLS_SRV:MX1.Company-B.example", companyB, 0},
		{"tls_rcpt:a@", "NOTFOUND \n", 1},
		{"tls_rcpt:company-b.example", "NOTFOUND \n", 1},
		{"tls_rcpt:sub.company-b.example", companyB, 0},
		{"TLS_Rcpt:.company-b.example", companyB, 0},
		{"To:a@company-b.example", "NOTFOUND \n", 1},
	} {
		out, errs, code := runCLI(t, "query", "-c", sendmailExample, "outbound", tc.key)
		if out != tc.want || code != tc.code {
			t.Errorf("query %q = %q (%d), want %q (%d); stderr %q", tc.key, out, code, tc.want, tc.code, errs)
		}
	}
	_, errs, code := runCLI(t, "query", "-c", example, "outbound", "TLS_Rcpt:a@company-b.example")
	if code != exitUsage || !strings.Contains(errs, `is a Sendmail access-map key, but `+example+` has mta = "postfix"`) {
		t.Errorf("Sendmail key against a Postfix file: code %d, stderr %q", code, errs)
	}
}

// TestQueryOutboundSocketMap checks the map name and key that
// query --socket sends.
func TestQueryOutboundSocketMap(t *testing.T) {
	type asked struct{ name, key string }
	var mu sync.Mutex
	var got []asked
	srv, err := policyd.NewSocketmapServer(policyd.SocketmapOptions{Lookuper: policyd.LookupFunc(func(_ context.Context, name, key string) policyd.Reply {
		mu.Lock()
		got = append(got, asked{name, key})
		mu.Unlock()
		return policyd.Reply{Status: policyd.StatusOK, Data: "x"}
	})})
	if err != nil {
		t.Fatal(err)
	}
	spec := "unix:" + filepath.Join(t.TempDir(), "s.sock")
	ln, err := listen.Open(spec, 0o600, "")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()

	for _, tc := range []struct {
		args []string
		want asked
	}{
		{[]string{"TLS_Rcpt:A@Company-B.example"}, asked{"access", "tls_rcpt:a@company-b.example"}},
		{[]string{"tls_srv:mx1.company-b.example"}, asked{"access", "tls_srv:mx1.company-b.example"}},
		{[]string{"SRV_Features:192.0.2.10"}, asked{"access", "srv_features:192.0.2.10"}},
		{[]string{"[MX1.Company-B.example]:25"}, asked{"tlspolicy", "[MX1.Company-B.example]:25"}},
		{[]string{"--map", "other", "TLS_Srv:x.example"}, asked{"other", "tls_srv:x.example"}},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		args := append([]string{"query", "--socket", spec, "outbound"}, tc.args...)
		out, errs, code := runCLI(t, args...)
		if code != exitOK || out != "OK x\n" {
			t.Errorf("%v: code %d, stdout %q, stderr %q", tc.args, code, out, errs)
		}
		mu.Lock()
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%v: daemon was asked %v, want %v", tc.args, got, tc.want)
		}
		mu.Unlock()
	}
}

func TestQueryInboundNeedsClientAddr(t *testing.T) {
	for _, args := range [][]string{{}, {"--sender", "a@company-b.example"}, {"--client-name", "mx1.company-b.example", "--tls-version", "TLSv1.3"}} {
		out, errs, code := runCLI(t, append([]string{"query", "-c", example, "inbound"}, args...)...)
		if code != exitUsage || out != "" || !strings.Contains(errs, "--client-addr is missing") {
			t.Errorf("%v: code %d, stdout %q, stderr %q; want exit 2 naming --client-addr", args, code, out, errs)
		}
	}
}
