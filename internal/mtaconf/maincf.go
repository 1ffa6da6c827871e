package mtaconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Current is what main.cf says of one parameter now.
type Current struct {
	// Value is the value as main.cf writes it ($name references not
	// expanded) when Set, else Postfix's default, expanded.
	Value string
	// Set reports that main.cf sets the parameter itself.
	Set bool
}

// Values are the current values of main.cf parameters by name; a name
// that is missing counts as unset and empty.
type Values map[string]Current

// Postconf reads the parameters names through postconf(1), as Postfix
// sees them: "postconf -n" for what main.cf sets (raw), "postconf -x"
// for the defaults of the others (expanded: the default of
// smtpd_relay_restrictions is an expression of compatibility_level). dir
// is main.cf's directory ("" for Postfix's own, /etc/postfix).
func Postconf(dir string, names []string) (Values, error) {
	run := func(args ...string) ([]byte, error) {
		if dir != "" {
			args = append([]string{"-c", dir}, args...)
		}
		cmd := exec.Command("postconf", args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if msg == "" {
				msg = err.Error()
			}
			return nil, fmt.Errorf("postconf %s: %s", strings.Join(args, " "), msg)
		}
		return out, nil
	}
	out, err := run("-n")
	if err != nil {
		return nil, err
	}
	set := parseMainCF(out)
	v := Values{}
	var unset []string
	for _, n := range names {
		if val, ok := set[n]; ok {
			v[n] = Current{Value: val, Set: true}
		} else if _, dup := v[n]; !dup {
			unset = append(unset, n)
			v[n] = Current{}
		}
	}
	if len(unset) > 0 {
		out, err := run(append([]string{"-x"}, unset...)...)
		if err != nil {
			return nil, err
		}
		for n, val := range parseMainCF(out) {
			if _, ok := v[n]; ok {
				v[n] = Current{Value: val}
			}
		}
	}
	return v, nil
}

// ReadMainCF reads the parameters names from a main.cf file without
// Postfix: what the file sets, and Postfix 3.7's defaults for the
// parameters tlsgate merges with (empty for others).
func ReadMainCF(path string, names []string) (Values, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	set := parseMainCF(b)
	v := Values{}
	for _, n := range names {
		if val, ok := set[n]; ok {
			v[n] = Current{Value: val, Set: true}
		} else {
			v[n] = Current{Value: postfixDefault(n, set)}
		}
	}
	return v, nil
}

// parseMainCF reads "name = value" lines as main.cf and postconf print
// them: '#' starts a comment line, a line starting with a blank continues
// the previous one, the last assignment of a name wins.
func parseMainCF(b []byte) map[string]string {
	out := map[string]string{}
	var name string
	var val strings.Builder
	flush := func() {
		if name != "" {
			out[name] = strings.TrimSpace(val.String())
		}
		name = ""
		val.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if name != "" {
				val.WriteString(" " + trimmed)
			}
		default:
			flush()
			n, value, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			name = strings.TrimSpace(n)
			val.WriteString(strings.TrimSpace(value))
		}
	}
	flush()
	return out
}

// postfixDefault is Postfix 3.7's default for the parameters tlsgate
// merges with, given the parameters main.cf sets.
func postfixDefault(name string, set map[string]string) string {
	compat := compatLevel(set["compatibility_level"])
	switch name {
	case "smtpd_relay_restrictions":
		if compat >= 1 {
			return "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"
		}
	case "smtpd_tls_fingerprint_digest", "smtp_tls_fingerprint_digest":
		if compat >= 3.006 {
			return "sha256"
		}
		return "md5"
	case "smtpd_tls_received_header", "smtpd_tls_ask_ccert":
		return "no"
	case "milter_default_action":
		return "tempfail"
	case "milter_protocol":
		return "6"
	case "smtp_host_lookup":
		return "dns"
	case "smtp_tls_dane_insecure_mx_policy":
		// ${{$smtp_tls_security_level} == {dane} ? {dane} : {may}} before
		// Postfix 3.7.13.
		if strings.TrimSpace(set["smtp_tls_security_level"]) == "dane" {
			return "dane"
		}
		return "may"
	}
	return ""
}

// compatLevel reads "3.6" as 3.006 so that levels compare as numbers.
func compatLevel(s string) float64 {
	if s == "" {
		return 0
	}
	major, minor, _ := strings.Cut(s, ".")
	a, err := strconv.Atoi(major)
	if err != nil {
		return 0
	}
	b, _ := strconv.Atoi(minor)
	return float64(a) + float64(b)/1000
}

// errNoRelayCheck is returned when no restriction list has a relay check
// to put the policy service behind.
var errNoRelayCheck = errors.New("neither smtpd_recipient_restrictions nor smtpd_relay_restrictions has reject_unauth_destination or defer_unauth_destination")
