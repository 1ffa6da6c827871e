package policy

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The regular expressions the locator's matchers replace; the matchers must
// agree with them on every line.
var (
	refTableRE = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_.\- "]+?)\s*\]\s*(#.*)?$`)
	refArrayRE = regexp.MustCompile(`^\s*\[\[\s*([A-Za-z0-9_.\- "]+?)\s*\]\]\s*(#.*)?$`)
	refKeyRE   = regexp.MustCompile(`^\s*([A-Za-z0-9_.\-"]+)\s*=`)
)

func checkMatchers(t *testing.T, line string) {
	t.Helper()
	for _, c := range []struct {
		name  string
		re    *regexp.Regexp
		match func(string) (string, bool)
	}{
		{"table", refTableRE, func(s string) (string, bool) { return matchHeader(s, false) }},
		{"array", refArrayRE, func(s string) (string, bool) { return matchHeader(s, true) }},
		{"key", refKeyRE, matchKey},
	} {
		want, wantOK := "", false
		if m := c.re.FindStringSubmatch(line); m != nil {
			want, wantOK = m[1], true
		}
		got, ok := c.match(line)
		if ok != wantOK || got != want {
			t.Errorf("%s matcher on %q = %q, %v; the regular expression says %q, %v", c.name, line, got, ok, want, wantOK)
		}
	}
}

func TestLocatorMatchersAgreeWithRegexps(t *testing.T) {
	lines := []string{
		"", " ", "\t", "[", "]", "[]", "[ ]", "[\t]", "[ \t ]", "[\t \t]", "[[]]", "[[ ]]", "[[\t]]",
		"[endpoint]", "[[endpoint]]", " [[ endpoint ]] # c", "[endpoint.inbound]", "[ endpoint . inbound ]",
		`["endpoint"]`, `[[ "a b" ]]`, "[a b]", "[a\tb]", "[a \t]", "[\ta]", "[a]#", "[a] #x", "[a] x", "[a]]", "[[a]", "[[a]]]",
		"[[a] ]", "[ [a]]", "[a]\r", "[a] # c\r", "[[a]]\r", "[a-b_c.d]", "[a=b]", "[a#]", "[#a]", "[a]\f", "\f[a]",
		"x=1", "x = 1", " x=", "\tx\t=\t1", "x", "x y = 1", `"quoted key" = 1`, `"a.b".c = 1`, "a.b.c=1", "=1", " = 1",
		"x =", "-x=1", "x\r=1", "x\f= 1", "[x] = 1", "x[0] = 1", `hosts = ["a", "b"]`, `  "a.example",`, "# x = 1", "ÿ = 1", "x\u00a0= 1",
	}
	for _, l := range lines {
		checkMatchers(t, l)
	}
	// Every line of the test configurations.
	files, _ := filepath.Glob("testdata/*/*.toml")
	files = append(files, "../../deploy/tlsgate.example.toml", "../../deploy/tlsgate.sendmail.example.toml")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			checkMatchers(t, l)
		}
	}
	// Random lines over the characters that matter.
	const alphabet = "[[]] \t\r\f=#.\"-_aZ09x\\'{,"
	rng := rand.New(rand.NewPCG(7, 11))
	for range 200000 {
		n := rng.IntN(12)
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		checkMatchers(t, string(b))
		if t.Failed() {
			return
		}
	}
}

func TestLocatorLines(t *testing.T) {
	src := `mta = "postfix"
# comment
[milter]
listen = "unix:/run/m.sock"

[[endpoint]]
name = "a"
hosts = ["a.example",
         "b.example"]
  [endpoint.inbound]
  encryption = true

[[ endpoint ]]  # second
"name" = "b"
  [ endpoint . outbound ]
  min_bits = 128
`
	l := newLocator([]byte(src), 0)
	for path, want := range map[string]int{
		"mta": 1, "milter": 3, "milter.listen": 4, "endpoint.0": 6, "endpoint.0.name": 7, "endpoint.0.hosts": 8,
		"endpoint.0.inbound": 10, "endpoint.0.inbound.encryption": 11, "endpoint.1": 13, "endpoint.1.name": 14,
		"endpoint.1.outbound": 15, "endpoint.1.outbound.min_bits": 16, "endpoint.1.outbound.cn": 15, "endpoint.7": 0,
	} {
		if got := l.line(path); got != want {
			t.Errorf("line(%q) = %d, want %d", path, got, want)
		}
	}
	if got := l.valueLine("endpoint.0.hosts", "b.example"); got != 9 {
		t.Errorf("valueLine = %d, want 9", got)
	}
}

func BenchmarkLocator(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("mta = \"postfix\"\n")
	for i := range 1000 {
		sb.WriteString("[[endpoint]]\nname = \"e")
		sb.WriteString(strings.Repeat("x", i%7))
		sb.WriteString("\"\nhosts = [\"a.example\", \".a.example\"]\n  [endpoint.outbound]\n  encryption = true\n  min_bits = 128\n\n")
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		newLocator(data, 0)
	}
}

// TestSettingProblem: problems found after loading (a missing CA store,
// an unreadable server certificate) are placed at their setting's line,
// without the package prefix that repeats the table's name.
func TestSettingProblem(t *testing.T) {
	const f = "../../deploy/tlsgate.example.toml" // the shipped example
	p, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f)
	lineOf := func(prefix string) int {
		for i, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line starts with %q", prefix)
		return 0
	}
	store, table := lineOf("ca_store"), lineOf("[certs]")
	for _, tc := range []struct {
		key  string
		err  string
		want string
	}{
		{"certs.ca_store", "certs: CA store /etc/tlsgate/ca does not exist (create it)",
			f + ":" + strconv.Itoa(store) + ": [certs] ca_store: CA store /etc/tlsgate/ca does not exist (create it)"},
		{"certs.trust_anchor_dir", "certs: write /etc/tlsgate/tafiles/a.pem: permission denied",
			f + ":" + strconv.Itoa(lineOf("trust_anchor_dir")) + ": [certs] trust_anchor_dir: write /etc/tlsgate/tafiles/a.pem: permission denied"},
		// Not written: the table's line.
		{"certs.no_such_key", "x", f + ":" + strconv.Itoa(table) + ": [certs] no_such_key: x"},
		// Nothing to point at.
		{"nowhere.key", "x", f + ": [nowhere] key: x"},
	} {
		if got := p.SettingProblem(tc.key, errors.New(tc.err)).Error(); got != tc.want {
			t.Errorf("SettingProblem(%q, %q) = %q, want %q", tc.key, tc.err, got, tc.want)
		}
	}
	var le *LoadError
	if err := p.SettingError("certs.ca_store", errors.New("certs: gone")); !errors.As(err, &le) || le.Problems[0].Line != store {
		t.Errorf("SettingError = %#v", err)
	}
	// Endpoint keys are not kept (a large file has millions).
	for k := range p.lines {
		if strings.HasPrefix(k, "endpoint") {
			t.Errorf("lines keeps %q", k)
		}
	}
}
