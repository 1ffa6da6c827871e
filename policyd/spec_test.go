package policyd

import (
	"os"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		spec, network, addr string
		errSub              string
	}{
		{spec: "unix:/run/tlsgate/policy.sock", network: "unix", addr: "/run/tlsgate/policy.sock"},
		{spec: "unix:/run//tlsgate/./policy.sock", network: "unix", addr: "/run/tlsgate/policy.sock"},
		{spec: "inet:127.0.0.1:10031", network: "tcp", addr: "127.0.0.1:10031"},
		{spec: "inet:127.0.0.2:0", network: "tcp", addr: "127.0.0.2:0"},
		{spec: "inet:[::1]:10031", network: "tcp", addr: "[::1]:10031"},
		{spec: "unix:relative.sock", errSub: "absolute"},
		{spec: "unix:", errSub: "absolute"},
		{spec: "unix:/a\x00b", errSub: "NUL"},
		{spec: "inet:0.0.0.0:10031", errSub: "not a loopback"},
		{spec: "inet:192.0.2.1:10031", errSub: "not a loopback"},
		{spec: "inet:[::]:10031", errSub: "not a loopback"},
		{spec: "inet:localhost:10031", errSub: "not an IP address"},
		{spec: "inet:[fe80::1%lo]:10031", errSub: "not an IP address"},
		{spec: "inet:127.0.0.1", errSub: "want inet:"},
		{spec: "inet:::1:10031", errSub: "want inet:"},
		{spec: "inet:127.0.0.1:70000", errSub: "bad port"},
		{spec: "inet:127.0.0.1:-1", errSub: "bad port"},
		{spec: "inet:127.0.0.1:010", errSub: "bad port"},
		{spec: "inet:127.0.0.1:", errSub: "bad port"},
		{spec: "inet:10031@127.0.0.1", errSub: "want inet:"},
		{spec: "local:/run/x.sock", errSub: "want unix:/path"},
		{spec: "tcp:127.0.0.1:1", errSub: "want unix:/path"},
		{spec: "/run/x.sock", errSub: "want unix:/path"},
		{spec: "", errSub: "want unix:/path"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			network, addr, err := parseSpec(tc.spec)
			if tc.errSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSub) || !strings.HasPrefix(err.Error(), "policyd: ") {
					t.Fatalf("parseSpec(%q) = %q, %q, %v; want error containing %q", tc.spec, network, addr, err, tc.errSub)
				}
				return
			}
			if err != nil || network != tc.network || addr != tc.addr {
				t.Fatalf("parseSpec(%q) = %q, %q, %v; want %q, %q", tc.spec, network, addr, err, tc.network, tc.addr)
			}
		})
	}
}

// shortTempDir returns a temporary directory with a short path, so that unix socket paths
// stay below the 108-byte sun_path limit whatever the test name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
