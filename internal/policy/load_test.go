package policy

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBadConfigs loads every testdata/bad file and checks that each
// "# want: LINE: text" comment is reported at that line.
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.toml")
	if len(files) < 20 {
		t.Fatalf("only %d bad configs found", len(files))
	}
	wantRE := regexp.MustCompile(`(?m)^# want: (\d+): (.*)$`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			wants := wantRE.FindAllStringSubmatch(string(data), -1)
			if len(wants) == 0 {
				t.Fatal("no '# want:' line")
			}
			_, err = Load(f)
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Load = %v, want *LoadError", err)
			}
			for _, w := range wants {
				line, _ := strconv.Atoi(w[1])
				found := false
				for _, p := range le.Problems {
					if p.Line == line && strings.Contains(p.Msg, w[2]) && p.File == f {
						found = true
					}
				}
				if !found {
					t.Errorf("want line %d: %q; got:\n%v", line, w[2], err)
				}
			}
		})
	}
}

func TestGoodConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.toml")
	// The shipped examples, as admins copy them.
	examples, _ := filepath.Glob("../../deploy/*.toml")
	if len(examples) < 2 {
		t.Fatalf("deploy/*.toml: %d examples, want the Postfix and the Sendmail one", len(examples))
	}
	for _, f := range append(files, examples...) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			p, err := Load(f)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if p.File != f {
				t.Errorf("File = %q", p.File)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.toml")
	if err == nil || !strings.Contains(err.Error(), "testdata/does-not-exist.toml: cannot read") {
		t.Fatalf("err = %v", err)
	}
}

func TestImplications(t *testing.T) {
	p := mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.inbound]
  cn = "x.a.example"
  [endpoint.outbound]
  issuer_dn = "C=DE, CN=CA"
`)
	in, out := p.Endpoints[0].Inbound, p.Endpoints[0].Outbound
	if !in.MatchCN || !in.ValidateCert || !in.RequestCert || !in.Encryption {
		t.Errorf("inbound cn should imply match_cn, validate_cert, request_cert, encryption: %+v", in)
	}
	if !out.ValidateCert || !out.Encryption || out.RequestCert {
		t.Errorf("outbound issuer_dn should imply validate_cert and encryption only: %+v", out)
	}
	if p.Endpoints[0].Mode != Enforce || p.Endpoints[0].Action != Defer {
		t.Errorf("defaults: mode %q action %q", p.Endpoints[0].Mode, p.Endpoints[0].Action)
	}
	p = mustParse(t, `mta = "sendmail"
[[endpoint]]
name = "a"
hosts = ["a.example"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints = ["000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"]
`)
	in = p.Endpoints[0].Inbound
	if in.ValidateCert || !in.RequestCert || !in.Encryption {
		t.Errorf("pin without validation: %+v", in)
	}
}

func TestSettingsDefaults(t *testing.T) {
	p := mustParse(t, `mta = "postfix"`)
	s := p.Settings
	if s.MapName != "tlspolicy" || s.LogLevel != "info" || s.Syslog != "auto" || s.Milter.Mode != 0o660 || p.PostfixVersion != "3.7" {
		t.Errorf("defaults: %+v version %q", s, p.PostfixVersion)
	}
}

// testNow is the instant the tests look at policies without exceptions.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// now returns p as it applies at testNow.
func now(p *Policy) View { return p.At(testNow) }

func mustParse(t testing.TB, src string) *Policy {
	t.Helper()
	p, err := Parse("test.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return p
}

// TestUnknownKeySuggestions: an unknown key is answered with where a key
// of that name belongs, or with a close key name and, if it is not in
// the key's own table, where that one belongs; never with itself.
func TestUnknownKeySuggestions(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"[[endpoint]]\nmin_bits = 128\n", `unknown key "endpoint.min_bits" (it belongs in [endpoint.inbound] or [endpoint.outbound])`},
		{"[[endpoint]]\n[endpoint.inbound]\nhosts = []\n", `unknown key "endpoint.inbound.hosts" (it belongs in [[endpoint]])`},
		{"listen = \"unix:/x\"\n", `unknown key "listen" (it belongs in [milter], [policyd] or [metrics])`},
		{"[certs]\nmta = \"postfix\"\n", `unknown key "certs.mta" (it belongs at the top of the file, before any table)`},
		{"[log]\nca_store = \"/x\"\n", `unknown key "log.ca_store" (it belongs in [certs])`},
		{"[[endpoint]]\n[endpoint.inbound]\nmin_bitz = 1\n", `unknown key "endpoint.inbound.min_bitz" (did you mean "min_bits"?)`},
		{"[[endpoint]]\nmin_bitz = 1\n", `unknown key "endpoint.min_bitz" (did you mean "min_bits" in [endpoint.inbound] or [endpoint.outbound]?)`},
		{"[policyd]\nlistn = \"unix:/x\"\n", `unknown key "policyd.listn" (did you mean "listen"?)`},
		{"[[endpoint]]\n[endpoint.inbond]\n", `unknown key "endpoint.inbond" (did you mean "inbound"?)`},
		{"[milter]\nMap_Name = \"x\"\n", `unknown key "milter.Map_Name" (did you mean "map_name" in [policyd]?)`},
		{"[milter]\nzzzzzzzz = 1\n", `unknown key "milter.zzzzzzzz"`},
	} {
		_, err := Parse("t.toml", []byte("mta = \"postfix\"\n"+tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %s", tc.src, err, tc.want)
		}
		if err != nil && !strings.Contains(tc.want, "(") && strings.Contains(err.Error(), "(") {
			t.Errorf("%q: unexpected suggestion in %v", tc.src, err)
		}
	}
	// The layout is read from the raw structs' tags.
	if len(layout) != 11 {
		t.Errorf("layout has %d tables: %v", len(layout), layout)
	}
}

// TestTypeErrors: the decoder's type errors are said in the file's words,
// at the key's line.
func TestTypeErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"mta = 1", "t.toml:2: mta: want a string, got an integer"},
		{"[[endpoint]]\nhosts = 4", "t.toml:3: endpoint.hosts: want an array of strings, got an integer"},
		{"[[endpoint]]\nhosts = [\"a\",\n  4]", "t.toml:3: endpoint.hosts: want an array of strings, got an integer in the array"},
		{"[[endpoint]]\ninbound = { min_bits = \"128\" }", "t.toml:3: endpoint.inbound.min_bits: want an integer, got a string"},
		{"[[endpoint]]\n[endpoint.inbound]\nmin_bits = 1.5", "t.toml:4: endpoint.inbound.min_bits: want an integer, got a float"},
		{"[[endpoint]]\n[endpoint.outbound]\nencryption = \"yes\"", "t.toml:4: endpoint.outbound.encryption: want a boolean, got a string"},
		{"[[endpoint]]\ninbound = 5", "t.toml:3: endpoint.inbound: want a table ([endpoint.inbound]), got an integer"},
		{"endpoint = 5", "t.toml:2: endpoint: want an array of tables ([[endpoint]]), got an integer"},
		{"endpoint = [1]", "t.toml:2: endpoint: want an array of tables ([[endpoint]]), got an integer in the array"},
		{"certs = \"x\"", "t.toml:2: certs: want a table ([certs]), got a string"},
		{"[milter]\nlisten = { a = 1 }", "t.toml:3: milter.listen: want a string, got a table"},
		{"[milter]\nlisten = [\"a\"]", "t.toml:3: milter.listen: want a string, got an array"},
		{"[milter]\nlisten = 2024-01-01", "t.toml:3: milter.listen: want a string, got a date or time"},
		{"[log]\nlevel = true", "t.toml:3: log.level: want a string, got a boolean"},
	} {
		_, err := Parse("t.toml", []byte("\n"+tc.src))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.src, err, tc.want)
		}
	}
	// What typeError does not know stays as the decoder says it.
	for _, s := range []string{
		`toml: line 3 (last key "x.y"): incompatible types: TOML value has type int64; destination has type string`,
		`toml: line 3 (last key "mta"): expected array length 1; got TOML array of length 3`,
		`toml: (last key "mta"): something else`,
	} {
		if _, _, ok := typeError(s); ok {
			t.Errorf("typeError(%q) rephrased it", s)
		}
	}
}
