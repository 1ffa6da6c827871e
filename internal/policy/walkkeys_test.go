package policy

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestWalkKeys: with nothing found, each walk asks exactly the keys its
// Keys function lists, in that order (what tlsgate query --socket asks
// the running daemon one by one).
func TestWalkKeys(t *testing.T) {
	v := mustParse(t, "mta = \"sendmail\"\n").At(time.Now())
	keys := func(w Walk) []string {
		out := make([]string, len(w.Steps))
		for i, s := range w.Steps {
			out[i] = s.Key
		}
		return out
	}
	addr := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name      string
		walk      Walk
		list, has []string
	}{
		{"postfix", v.PostfixWalk("mx1.sub.example.com"), PostfixKeys("mx1.sub.example.com"),
			[]string{"mx1.sub.example.com", ".sub.example.com", ".example.com", ".com"}},
		{"postfix bracketed", v.PostfixWalk("[mx.example.com]:submission"), PostfixKeys("[mx.example.com]:submission"),
			[]string{"[mx.example.com]:submission"}},
		{"rcpt", v.SendmailRcptWalk("User+x@Sub.Example.com"), SendmailRcptKeys("User+x@Sub.Example.com"),
			[]string{"tls_rcpt:user+x@sub.example.com", "tls_rcpt:sub.example.com", "tls_rcpt:com", "tls_rcpt:"}},
		{"server", v.SendmailServerWalk("mx.example.com", addr), SendmailServerKeys("mx.example.com", addr),
			[]string{"tls_srv:mx.example.com", "tls_srv:192.0.2.1", "tls_srv:192", "tls_srv:"}},
		{"srv_features", v.SrvFeaturesWalk("client.example.com", addr), SrvFeaturesKeys("client.example.com", addr),
			[]string{"srv_features:client.example.com", "srv_features:192.0.2", "srv_features:"}},
	} {
		got := keys(tc.walk)
		if !slices.Equal(got, tc.list) {
			t.Errorf("%s: walk asked %q, Keys lists %q", tc.name, got, tc.list)
		}
		for _, k := range tc.has {
			if !slices.Contains(tc.list, k) {
				t.Errorf("%s: %q lacks %q", tc.name, tc.list, k)
			}
		}
	}
}
