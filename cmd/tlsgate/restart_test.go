package main

import (
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// TestRestartNeeded: each setting the running daemon took at start is
// refused on reload with its name; the ones applied on reload are not.
func TestRestartNeeded(t *testing.T) {
	const base = `mta = "postfix"
[milter]
listen = "unix:/run/tlsgate/milter.sock"
socket_mode = "0660"
[policyd]
listen = "unix:/run/tlsgate/policy.sock"
[log]
level = "info"
`
	parse := func(text string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse("t.toml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cur := parse(base)
	for _, tc := range []struct {
		name, from, to string
		want           string // "" applies on reload
	}{
		{"log level", `level = "info"`, `level = "debug"`, ""},
		{"map name", `[log]`, "map_name = \"other\"\n[log]", ""},
		{"milter listen", `listen = "unix:/run/tlsgate/milter.sock"`, `listen = "unix:/run/tlsgate/m2.sock"`, "[milter] listen"},
		{"milter socket mode", `socket_mode = "0660"`, `socket_mode = "0666"`, "[milter] socket_mode"},
		{"policyd socket group", `[log]`, "socket_group = \"mail\"\n[log]", "[policyd] socket_group"},
		{"delegation added", `[log]`, "delegation_listen = \"unix:/run/tlsgate/d.sock\"\n[log]", "[policyd] delegation_listen"},
		{"socketmap removed", `listen = "unix:/run/tlsgate/policy.sock"`, ``, "[policyd] listen"},
		{"metrics", `[log]`, "[metrics]\nlisten = \"inet:127.0.0.1:9100\"\n[log]", "[metrics] listen"},
		{"syslog", `level = "info"`, "level = \"info\"\nsyslog = \"no\"", "[log] syslog"},
		{"mta", `mta = "postfix"`, `mta = "sendmail"`, "mta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.from) {
				t.Fatalf("%q not in the base file", tc.from)
			}
			next := parse(strings.Replace(base, tc.from, tc.to, 1))
			err := restartNeeded(cur, next)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), "restart needed: "+tc.want+" changed")):
				t.Errorf("err = %v, want restart needed: %s changed", err, tc.want)
			}
		})
	}
	if err := restartNeeded(cur, parse(strings.Replace(strings.Replace(base, `socket_mode = "0660"`, `socket_mode = "0600"`, 1), `level = "info"`, "level = \"info\"\nsyslog = \"no\"", 1))); err == nil || !strings.Contains(err.Error(), "[milter] socket_mode, [log] syslog changed") {
		t.Errorf("two settings: %v", err)
	}
}
