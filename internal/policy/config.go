package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// MTA names the mail server whose facts and policy grammar tlsgate uses.
type MTA string

// The supported MTAs.
const (
	Postfix  MTA = "postfix"
	Sendmail MTA = "sendmail"
)

// Mode says whether an endpoint refuses mail or only reports.
type Mode string

// Endpoint modes.
const (
	// Enforce refuses mail that misses the requirements.
	Enforce Mode = "enforce"
	// Monitor judges, logs and stamps, but never refuses.
	Monitor Mode = "monitor"
)

// Direction is the side of a mail exchange an endpoint's requirements
// apply to.
type Direction int

// The two directions.
const (
	// Inbound: the peer connects to us ([endpoint.inbound]).
	Inbound Direction = iota
	// Outbound: we connect to the peer ([endpoint.outbound]).
	Outbound
)

// String returns "inbound" or "outbound".
func (d Direction) String() string {
	if d == Outbound {
		return "outbound"
	}
	return "inbound"
}

// directions lists both, in the order messages name them.
var directions = [2]Direction{Inbound, Outbound}

// Action is what an enforced inbound failure answers.
type Action string

// Inbound failure actions.
const (
	// Defer answers 4xx: the sender keeps the mail and retries.
	Defer Action = "defer"
	// Reject answers 5xx: the sender bounces the mail.
	Reject Action = "reject"
)

// Requirements are the TLS demands on one direction of an endpoint.
// A zero value demands nothing.
type Requirements struct {
	// Encryption requires TLS.
	Encryption bool
	// MinBits is the minimum cipher strength actually used (0: any).
	MinBits int
	// RequestCert asks the client for a certificate (inbound only). It is
	// a request to the MTA; absence of a certificate fails only through
	// ValidateCert or Fingerprints.
	RequestCert bool
	// ValidateCert requires a certificate that chains to the trust store.
	ValidateCert bool
	// MatchCN requires the certificate's subject CN to equal CN, or if CN
	// is empty the peer's host name (inbound: the client's verified host
	// name; outbound: the host name the MTA connects to).
	MatchCN bool
	// CN is the expected subject common name, if given.
	CN string
	// SubjectDN is the expected subject, or nil.
	SubjectDN DN
	// IssuerDN is the expected issuer, or nil.
	IssuerDN DN
	// IssuerCN is the expected issuer common name, or "".
	IssuerCN string
	// Fingerprints pins certificates or public keys; any one must match.
	Fingerprints []Fingerprint
	// TrustAnchorFile is the file of CA certificates used for issuer
	// pinning on Postfix outbound (tafile=), or "".
	TrustAnchorFile string
}

// Active reports whether any requirement is set.
func (r *Requirements) Active() bool {
	return r != nil && (r.Encryption || r.RequestCert || r.ValidateCert || len(r.Fingerprints) > 0)
}

// Endpoint is one named partner with its hosts and requirements.
type Endpoint struct {
	// Name identifies the endpoint in logs, headers and metrics.
	Name string
	// Notes is free text for the administrator.
	Notes string
	// Hosts are the compiled host patterns.
	Hosts []Pattern
	// Mode is Enforce (default) or Monitor.
	Mode Mode
	// Action is Defer (default) or Reject, for inbound failures.
	Action Action
	// Inbound holds the requirements when they connect to us. Never nil:
	// without an [endpoint.inbound] table it demands nothing (Defines).
	// Endpoints that demand the same share one Requirements; a compiled
	// policy is never changed.
	Inbound *Requirements
	// Outbound holds the requirements when we connect to them, as
	// Inbound.
	Outbound *Requirements
	// Exception is set when the endpoint temporarily relaxes an endpoint
	// it is nested in (exception_to, reason, expires); nil otherwise.
	Exception *Exception
	// File is the file the endpoint is written in: the main file or one
	// it includes.
	File string
	// Line is where the endpoint starts in File.
	Line int

	// out is the outbound answer in the grammar of the configured MTA
	// (a Postfix TLS policy table entry, a Sendmail access-map RHS), ""
	// if none; kept in the endpoint, so that an answer touches no other
	// block of memory.
	out string
}

// outFor returns ep's outbound answer if the policy is for mta, else "".
func (p *Policy) outFor(ep *Endpoint, mta MTA) string {
	if p.MTA != mta {
		return ""
	}
	return ep.out
}

// noRequirements is what Inbound or Outbound points to for a direction
// the endpoint does not define.
var noRequirements Requirements

// Defines reports whether the endpoint has a table for direction d
// ([endpoint.inbound], [endpoint.outbound]). Only endpoints that define a
// direction take part in it: an endpoint with only an outbound table
// never decides who may connect to us.
func (ep *Endpoint) Defines(d Direction) bool { return ep.Requirements(d) != &noRequirements }

// defines says which directions the endpoint defines.
func (ep *Endpoint) defines() [2]bool { return [2]bool{ep.Defines(Inbound), ep.Defines(Outbound)} }

// Requirements returns the endpoint's requirements in direction d.
func (ep *Endpoint) Requirements(d Direction) *Requirements {
	if d == Outbound {
		return ep.Outbound
	}
	return ep.Inbound
}

// Rule returns what the endpoint demands in direction d: its mode and
// its requirements there.
func (ep *Endpoint) Rule(d Direction) Rule {
	return Rule{Mode: ep.Mode, Req: *ep.Requirements(d)}
}

// Listener describes a socket tlsgate listens on.
type Listener struct {
	// Addr is "unix:/path" or "inet:HOST:PORT" ("" = disabled).
	Addr string
	// Mode is the permission of a unix socket (default 0660).
	Mode os.FileMode
	// Group owns a unix socket when set.
	Group string
}

// Settings are the daemon sections of the file.
type Settings struct {
	// Milter is the milter listener ([milter] listen).
	Milter Listener
	// AuthservID is the authserv-id of Authentication-Results headers
	// ([milter] authserv_id; default: the MTA's host name).
	AuthservID string
	// Socketmap is the socketmap listener ([policyd] listen).
	Socketmap Listener
	// MapName is the socketmap table name Postfix sends (default
	// "tlspolicy"); Sendmail's access map always sends "access".
	MapName string
	// Delegation is the Postfix policy-delegation listener
	// ([policyd] delegation_listen), needed for inbound fingerprints.
	Delegation Listener
	// CAStore is the directory of trusted CA certificates ([certs] ca_store).
	CAStore string
	// CABundle is the file the MTA reads trust anchors from ([certs] ca_bundle).
	CABundle string
	// TrustAnchorDir is where per-endpoint tafile= files are written
	// ([certs] trust_anchor_dir).
	TrustAnchorDir string
	// ServerCert and ServerKey are our MTA's certificate and key
	// ([certs] server_cert, server_key), used by `mta-config` and expiry checks.
	ServerCert, ServerKey string
	// LogLevel is "debug", "info" (default), "warn" or "error".
	LogLevel string
	// Syslog selects the syslog writer: "auto" (default), "yes" or "no".
	Syslog string
	// MetricsListen is the Prometheus listener ("" = off).
	MetricsListen string
	// Watch are the [watch] settings of serve's held-mail watch and
	// partner probes; nil when the file has no [watch] table (both off).
	Watch *Watch
	// Discovery are the [discovery] settings; nil when the file has no
	// [discovery] table (no MTA-STS or DANE discovery).
	Discovery *Discovery
}

// Policy is a loaded, validated and immutable configuration.
type Policy struct {
	// File is the path of the main file the policy was loaded from.
	File string
	// MTA is the mail server the policy is written for.
	MTA MTA
	// PostfixVersion is the target Postfix release ("3.7" by default);
	// nothing newer than it is ever emitted.
	PostfixVersion string
	// Endpoints in file order: those of the main file, then those of
	// each included file in turn.
	Endpoints []*Endpoint
	// Settings of the daemons.
	Settings Settings

	// ix holds one index per direction: only endpoints that define a
	// direction are in its index.
	ix    [2]*index
	lines map[string]int // line of each key outside [[endpoint]] ("certs.ca_store"), see Line
	// askEveryClient: an endpoint that needs a client certificate lists a
	// name or a .domain pattern, which may match only the sender domain
	// (see srvFeatures).
	askEveryClient bool
	exceptions     []*Exception // in file order
	relaxes        [2]bool      // some exception relaxes that direction
	warnings       []warning    // found at load time, see Warnings
	units          []*unit      // the files compiled, the main file first
	// byID holds each endpoint under its ID (unit.ids), which the index
	// gives: IDs, unlike positions in Endpoints, stay the same from one
	// policy to the next, so that the next can copy the index (patch).
	byID []*Endpoint
}

type rawFile struct {
	MTA            string        `toml:"mta"`
	Include        []string      `toml:"include"`
	PostfixVersion string        `toml:"postfix_version"`
	Milter         rawMilter     `toml:"milter"`
	Policyd        rawPolicyd    `toml:"policyd"`
	Certs          rawCerts      `toml:"certs"`
	Log            rawLog        `toml:"log"`
	Metrics        rawMetrics    `toml:"metrics"`
	Watch          *rawWatch     `toml:"watch"`
	Discovery      *rawDiscovery `toml:"discovery"`
	Endpoint       []rawEndpoint `toml:"endpoint"`
}

type rawMilter struct {
	Listen      string `toml:"listen"`
	SocketMode  string `toml:"socket_mode"`
	SocketGroup string `toml:"socket_group"`
	AuthservID  string `toml:"authserv_id"`
}

type rawPolicyd struct {
	Listen           string `toml:"listen"`
	SocketMode       string `toml:"socket_mode"`
	SocketGroup      string `toml:"socket_group"`
	MapName          string `toml:"map_name"`
	DelegationListen string `toml:"delegation_listen"`
}

type rawCerts struct {
	CAStore        string `toml:"ca_store"`
	CABundle       string `toml:"ca_bundle"`
	TrustAnchorDir string `toml:"trust_anchor_dir"`
	ServerCert     string `toml:"server_cert"`
	ServerKey      string `toml:"server_key"`
}

type rawLog struct {
	Level  string `toml:"level"`
	Syslog string `toml:"syslog"`
}

type rawMetrics struct {
	Listen string `toml:"listen"`
}

type rawWatch struct {
	HeldInterval   string   `toml:"held_interval"`
	QueueTimeout   string   `toml:"queue_timeout"`
	Postqueue      string   `toml:"postqueue"`
	PostfixConfig  string   `toml:"postfix_config"`
	Mailq          string   `toml:"mailq"`
	ProbeInterval  string   `toml:"probe_interval"`
	ProbeEndpoints []string `toml:"probe_endpoints"`
	ProbeTimeout   string   `toml:"probe_timeout"`
}

type rawDiscovery struct {
	MTASTS        *bool  `toml:"mta_sts"`
	DANE          *bool  `toml:"dane"`
	Resolver      string `toml:"resolver"`
	STSCAFile     string `toml:"sts_ca_file"`
	CacheFile     string `toml:"cache_file"`
	CacheEntries  *int   `toml:"cache_entries"`
	CacheBytes    *int   `toml:"cache_bytes"`
	ControlSocket string `toml:"control_socket"`
}

type rawEndpoint struct {
	Name        *string  `toml:"name"`
	Notes       string   `toml:"notes"`
	Hosts       []string `toml:"hosts"`
	Mode        *string  `toml:"mode"`
	Action      *string  `toml:"action"`
	ExceptionTo *string  `toml:"exception_to"`
	Reason      *string  `toml:"reason"`
	Expires     *rawTime `toml:"expires"`
	Inbound     *rawReq  `toml:"inbound"`
	Outbound    *rawReq  `toml:"outbound"`
}

type rawReq struct {
	Encryption   *bool    `toml:"encryption"`
	MinBits      *int     `toml:"min_bits"`
	RequestCert  *bool    `toml:"request_cert"`
	ValidateCert *bool    `toml:"validate_cert"`
	MatchCN      *bool    `toml:"match_cn"`
	CN           *string  `toml:"cn"`
	SubjectDN    *string  `toml:"subject_dn"`
	IssuerDN     *string  `toml:"issuer_dn"`
	IssuerCN     *string  `toml:"issuer_cn"`
	Fingerprints []string `toml:"fingerprints"`
}

// maxUnknownKeys is how many unknown keys a file's problems name one by
// one.
const maxUnknownKeys = 100

// decode reads one file's TOML into raw: the shape limits first, then the
// decoder, keys written in another case, and unknown keys. It reports
// whether raw may be compiled: after a syntax or type error, or a key in
// the wrong case, the file's other problems would only be consequences.
func (c *compiler) decode(data []byte, raw *rawFile) bool {
	// A piece's shape was checked with its whole file.
	if err := checkShape(c.file, data); c.base == 0 && err != nil {
		c.problems = append(c.problems, err.(*LoadError).Problems...)
		return false
	}
	c.loc = newLocator(data, c.base)
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(raw)
	var pe toml.ParseError
	if err != nil && errors.As(err, &pe) {
		c.tomlError(err)
		return false
	}
	// The decoder matches keys to settings ignoring case, and when a table
	// has a key in two spellings (mode and Mode) which one wins depends on
	// map order. Every key must be written exactly as documented, so that
	// a file means one thing. A decoding error after a misspelt key or
	// table is usually its consequence: report the spelling only.
	if c.exactKeys(md); len(c.problems) > 0 {
		return false
	}
	if err != nil {
		c.tomlError(err)
		return false
	}
	if !c.main {
		c.endpointsOnly(md)
	}
	undecoded := md.Undecoded()
	if !c.main {
		// Reported by endpointsOnly, once per key or table.
		undecoded = slices.DeleteFunc(undecoded, func(k toml.Key) bool { return k[0] != "endpoint" })
	}
	for i, k := range undecoded {
		if i == maxUnknownKeys {
			// A file of unknown keys gets a readable answer: the first ones
			// by name and line, then a count.
			c.problem(0, "and %d more unknown keys", len(undecoded)-i)
			break
		}
		c.problem(c.loc.undecoded(k), "unknown key %q%s", k.String(), suggest(k))
	}
	return true
}

// endpointsOnly reports, in an included file, every top-level key or
// table other than [[endpoint]], once each: settings belong in the main
// file, where they apply to all files.
func (c *compiler) endpointsOnly(md toml.MetaData) {
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		if k[0] == "endpoint" || seen[k[0]] {
			continue
		}
		seen[k[0]] = true
		what := "key " + k[0]
		switch md.Type(k[0]) {
		case "Hash":
			what = "[" + k[0] + "]"
		case "ArrayHash":
			what = "[[" + k[0] + "]]"
		}
		c.at(k[0], "%s: an included file holds [[endpoint]] tables only; settings and include belong in the main file %s", what, c.mainFile)
	}
}

func (c *compiler) tomlError(err error) {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if strings.HasPrefix(msg, "want ") && pe.LastKey != "" {
			// A value's own UnmarshalTOML refused it (rawTime).
			msg = pe.LastKey + ": " + msg
		}
		if pe.Usage != "" {
			msg += " (" + strings.TrimSpace(strings.SplitN(pe.Usage, "\n", 2)[0]) + ")"
		}
		c.problem(pe.Position.Line, "%s", msg)
		return
	}
	if line, msg, ok := typeError(err.Error()); ok {
		c.problem(line, "%s", msg)
		return
	}
	// Other decoding errors come back as "toml: line N (last key "k"): ...".
	msg := strings.TrimPrefix(err.Error(), "toml: ")
	line := 0
	if strings.HasPrefix(msg, "line ") {
		rest := msg[len("line "):]
		if sp := strings.IndexByte(rest, ' '); sp > 0 {
			if n, e := strconv.Atoi(rest[:sp]); e == nil {
				line = n
				msg = strings.TrimSpace(rest[sp:])
			}
		}
	}
	c.problem(line, "%s", msg)
}

// The decoder's type errors: "toml: line N (last key "k"): incompatible
// types: TOML value has type int64; destination has type string" and
// "... type mismatch for policy.rawCerts: expected table but found string".
var (
	typeErrRE    = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)
	badTypeRE    = regexp.MustCompile(`^incompatible types: TOML value has type (\S+); destination has type .+$`)
	notTableRE   = regexp.MustCompile(`^type mismatch for \S+: expected table but found (\S+)$`)
	tomlTypeWord = map[string]string{
		"string": "a string", "int64": "an integer", "float64": "a float", "bool": "a boolean",
		"time.Time": "a date or time", "[]any": "an array", "[]map[string]any": "an array of tables", "map[string]any": "a table",
	}
)

// typeError rephrases a decoder type error in the words of the file:
// "endpoint.hosts: want an array of strings, got an integer". The line is
// the decoder's (that of the key).
func typeError(s string) (line int, msg string, ok bool) {
	m := typeErrRE.FindStringSubmatch(s)
	if m == nil {
		return 0, "", false
	}
	key, err := strconv.Unquote(m[2])
	if err != nil {
		return 0, "", false
	}
	var got string
	if t := badTypeRE.FindStringSubmatch(m[3]); t != nil {
		got = t[1]
	} else if t := notTableRE.FindStringSubmatch(m[3]); t != nil {
		got = t[1]
	} else {
		return 0, "", false
	}
	want, dst := keyType(key)
	if want == "" {
		return 0, "", false
	}
	gotWord, known := tomlTypeWord[got]
	if !known {
		gotWord = "a " + got
	}
	line, _ = strconv.Atoi(m[1])
	msg = fmt.Sprintf("%s: want %s, got %s", key, want, gotWord)
	if dst.Kind() == reflect.Slice && !strings.HasSuffix(m[3], "destination has type slice") {
		// The array is fine; one of its elements is not.
		msg += " in the array"
	}
	return line, msg, true
}

// keyType returns the admin words for the type a key path ("certs",
// "endpoint.inbound.min_bits") must have, and the Go type it decodes into.
func keyType(key string) (string, reflect.Type) {
	parent, last := "", key
	if dot := strings.LastIndexByte(key, '.'); dot >= 0 {
		parent, last = key[:dot], key[dot+1:]
	}
	for _, kt := range layout {
		if kt.path != parent {
			continue
		}
		t, ok := kt.types[last]
		if !ok {
			return "", nil
		}
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t == timeType {
			return dateWords, t
		}
		switch t.Kind() {
		case reflect.String:
			return "a string", t
		case reflect.Int:
			return "an integer", t
		case reflect.Bool:
			return "a boolean", t
		case reflect.Struct:
			return "a table ([" + key + "])", t
		case reflect.Slice:
			if t.Elem().Kind() == reflect.Struct {
				return "an array of tables ([[" + key + "]])", t
			}
			return "an array of strings", t
		}
		return "", nil
	}
	return "", nil
}

// rawTime is a TOML date or date and time as the decoder hands it over,
// with the location that says which kind it is ("date-local" for a date,
// "datetime-local" and "time-local" for the kinds without an offset).
// Decoding into a time.Time would go through its text form and lose it.
type rawTime struct{ t time.Time }

// UnmarshalTOML implements toml.Unmarshaler.
func (r *rawTime) UnmarshalTOML(v any) error {
	t, ok := v.(time.Time)
	if !ok {
		got, known := tomlTypeWord[fmt.Sprintf("%T", v)]
		if !known {
			got = fmt.Sprintf("a %T", v)
		}
		return fmt.Errorf("want %s, got %s (write the date without quotes)", dateWords, got)
	}
	r.t = t
	return nil
}

// dateWords says what a date setting takes.
const dateWords = "a date (2027-01-31) or a date and time with its offset (2027-01-31T12:00:00+01:00)"

var timeType = reflect.TypeFor[rawTime]()

// keyTable is one table of the file's layout, read from the raw structs'
// toml tags.
type keyTable struct {
	path  string                  // "" (top), "milter", "endpoint", "endpoint.inbound"
	array bool                    // an array of tables ([[endpoint]])
	keys  map[string]bool         // its keys
	types map[string]reflect.Type // the Go type of each key
	sub   map[string]*keyTable    // the tables below it, by key
}

// exactKeys reports every key and table written in another case than the
// documented one ("Mode", "[[ENDPOINT]]", "[Endpoint.Inbound]"), at its
// line, with the right spelling. The keys below a misspelt table are not
// reported again. A file without such keys costs one map lookup per key
// part.
func (c *compiler) exactKeys(md toml.MetaData) {
	keys := md.Keys()
	var explicit map[string]bool  // the keys and tables written, built at the first misspelling
	reported := map[string]bool{} // implicit tables ([Endpoint.Inbound] defines Endpoint) reported once
	for _, k := range keys {
		bad := misspelt(k)
		if bad < 0 {
			continue
		}
		if explicit == nil {
			explicit = make(map[string]bool, len(keys))
			for _, k := range keys {
				explicit[k.String()] = true
			}
		}
		prefix := k[:bad+1].String()
		if bad < len(k)-1 && (explicit[prefix] || reported[prefix]) {
			continue // reported at the table itself
		}
		reported[prefix] = true
		written, want := k.String(), rightSpelling(k)
		switch md.Type(k...) {
		case "Hash":
			c.problem(c.loc.undecoded(k), "table [%s] must be written [%s]: tlsgate's keys and tables are lower case, exactly as documented", written, want)
		case "ArrayHash":
			c.problem(c.loc.undecoded(k), "table [[%s]] must be written [[%s]]: tlsgate's keys and tables are lower case, exactly as documented", written, want)
		default:
			c.problem(c.loc.undecoded(k), "key %q must be written %q: tlsgate's keys and tables are lower case, exactly as documented", written, want)
		}
	}
}

// misspelt returns the index of the first part of k that names a known
// key or table only when case is ignored, or -1 if k has no such part (it
// is right, or unknown, which Undecoded reports).
func misspelt(k toml.Key) int {
	kt := layout[0]
	for i, seg := range k {
		if kt == nil {
			return -1
		}
		if !kt.keys[seg] {
			if kt.fold(seg) == "" {
				return -1
			}
			return i
		}
		kt = kt.sub[seg]
	}
	return -1
}

// fold returns the key of kt spelt like seg but for case, or "".
func (kt *keyTable) fold(seg string) string {
	for cand := range kt.keys {
		if strings.EqualFold(cand, seg) {
			return cand
		}
	}
	return ""
}

// rightSpelling returns k with every part that names a known key or
// table only when case is ignored spelt right.
func rightSpelling(k toml.Key) string {
	right := make(toml.Key, len(k))
	kt := layout[0]
	for i, seg := range k {
		right[i] = seg
		if kt == nil {
			continue
		}
		if !kt.keys[seg] {
			if want := kt.fold(seg); want != "" {
				right[i] = want
			}
		}
		kt = kt.sub[right[i]]
	}
	return right.String()
}

// layout lists every table of a tlsgate file, in declaration order.
var layout = func() []*keyTable {
	var tables []*keyTable
	var walk func(path string, array bool, t reflect.Type) *keyTable
	walk = func(path string, array bool, t reflect.Type) *keyTable {
		kt := &keyTable{path: path, array: array, keys: map[string]bool{}, types: map[string]reflect.Type{}, sub: map[string]*keyTable{}}
		tables = append(tables, kt)
		for i := range t.NumField() {
			f := t.Field(i)
			name := f.Tag.Get("toml")
			kt.keys[name] = true
			kt.types[name] = f.Type
			ft, arr := f.Type, false
			switch ft.Kind() {
			case reflect.Pointer:
				ft = ft.Elem()
			case reflect.Slice:
				ft, arr = ft.Elem(), true
			}
			if ft.Kind() == reflect.Struct && ft != timeType {
				sub := name
				if path != "" {
					sub = path + "." + name
				}
				kt.sub[name] = walk(sub, arr, ft)
			}
		}
		return kt
	}
	walk("", false, reflect.TypeFor[rawFile]())
	return tables
}()

// String names the table as the file writes it.
func (kt *keyTable) String() string {
	switch {
	case kt.path == "":
		return "the top of the file, before any table"
	case kt.array:
		return "[[" + kt.path + "]]"
	}
	return "[" + kt.path + "]"
}

// suggest says where an unknown key belongs: the table that has a key of
// that name when it was written in another table (min_bits directly under
// [[endpoint]]), else a key of a close name, preferring the key's own table.
func suggest(k toml.Key) string {
	parent, last := strings.Join(k[:len(k)-1], "."), k[len(k)-1]
	var home []*keyTable
	for _, kt := range layout {
		if kt.keys[last] && kt.path != parent {
			home = append(home, kt)
		}
	}
	if len(home) > 0 {
		return " (it belongs " + where(home) + ")"
	}
	// The closest key name (by edit distance, then in the key's own table,
	// then alphabetically), if any is close.
	type hit struct {
		cand string
		d    int
		same bool
	}
	lower := strings.ToLower(last)
	best := hit{d: 3}
	for _, kt := range layout {
		for cand := range kt.keys {
			h := hit{cand, editDistance(lower, cand), kt.path == parent}
			if h.d < best.d || h.d == best.d && (h.same && !best.same || h.same == best.same && h.cand < best.cand) {
				best = h
			}
		}
	}
	switch {
	case best.cand == "":
		return ""
	case best.same:
		return fmt.Sprintf(" (did you mean %q?)", best.cand)
	}
	var in []*keyTable
	for _, kt := range layout {
		if kt.keys[best.cand] {
			in = append(in, kt)
		}
	}
	return fmt.Sprintf(" (did you mean %q %s?)", best.cand, where(in))
}

// where says "in [a], [b] or [c]" (or "at the top of the file, ...").
func where(tables []*keyTable) string {
	var names []string
	top := false
	for _, kt := range tables {
		if kt.path == "" {
			top = true
			continue
		}
		names = append(names, kt.String())
	}
	var b strings.Builder
	if top {
		b.WriteString("at the top of the file, before any table")
		if len(names) > 0 {
			b.WriteString(", or")
		}
	}
	if len(names) > 0 {
		if top {
			b.WriteString(" ")
		}
		b.WriteString("in ")
		for i, n := range names {
			switch {
			case i == 0:
			case i == len(names)-1:
				b.WriteString(" or ")
			default:
				b.WriteString(", ")
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
