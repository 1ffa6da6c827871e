package mtaconf

import (
	"fmt"
	"slices"
	"strings"
)

// Setting is one main.cf parameter tlsgate needs and how what it needs
// merges into the value main.cf already has (Rule). Settings of other
// parts of tlsgate (discovery) are added to [Postfix.Settings] the same
// way, each with its rule.
type Setting struct {
	// Name is the parameter.
	Name string
	// Want is the value tlsgate needs, or the element it adds to a list.
	Want string
	// Rule merges Want into the current value.
	Rule Rule
	// Note explains the choice; it is printed as a comment above the
	// setting.
	Note string
}

// Rule merges a setting into the current main.cf: it returns the
// parameter to change (usually s.Name), its new value, and whether it
// changes; an error when the merge cannot be done safely.
type Rule func(v Values, s Setting) (name, value string, change bool, err error)

// Replace sets the parameter to Want; one that already has that value is
// left alone.
func Replace(v Values, s Setting) (string, string, bool, error) {
	cur := v[s.Name]
	return s.Name, s.Want, !cur.Set || cur.Value != s.Want, nil
}

// AtLeast returns a rule for a level parameter: Want is set only when the
// current value is empty or one of weaker; any other value (a stronger
// level the administrator chose) is left alone.
func AtLeast(weaker ...string) Rule {
	return func(v Values, s Setting) (string, string, bool, error) {
		cur := strings.TrimSpace(v[s.Name].Value)
		if cur == s.Want && v[s.Name].Set {
			return s.Name, cur, false, nil
		}
		if cur == "" || cur == s.Want || slices.Contains(weaker, cur) {
			return s.Name, s.Want, true, nil
		}
		return s.Name, cur, false, nil
	}
}

// ListFirst returns a rule for a list parameter (smtpd_milters,
// smtp_tls_policy_maps): Want goes first, ahead of the administrator's
// own elements, which keep their order. An element for which same
// reports true already stands for Want: it is replaced where it stands
// when it differs from Want, and left alone when it equals it.
func ListFirst(same func(elem string) bool) Rule {
	return func(v Values, s Setting) (string, string, bool, error) {
		cur := strings.TrimSpace(v[s.Name].Value)
		elems, spans, err := splitSpans(cur)
		if err != nil {
			return s.Name, "", false, fmt.Errorf("%s: %w", s.Name, err)
		}
		for i, e := range elems {
			if same(e) {
				if e == s.Want {
					return s.Name, cur, false, nil
				}
				return s.Name, cur[:spans[i][0]] + s.Want + cur[spans[i][1]:], true, nil
			}
		}
		return s.Name, insertAfter(cur, spans, -1, s.Want), true, nil
	}
}

// relayChecks are the restrictions that stop unauthorized relaying.
var relayChecks = []string{"reject_unauth_destination", "defer_unauth_destination"}

// AfterRelayCheck returns a rule for a restriction in
// smtpd_recipient_restrictions (Want: the restriction and its arguments,
// such as "check_policy_service { ... }") that must not be able to open a
// relay, whatever it answers.
//
// Postfix evaluates smtpd_relay_restrictions first and then
// smtpd_recipient_restrictions, at RCPT TO (with the default
// smtpd_delay_reject = yes, also for the client, HELO and sender
// restrictions); a permit (OK) ends only the list it is in, and a reject
// in either list refuses. So:
//   - when smtpd_recipient_restrictions holds the relay check
//     (reject_unauth_destination or defer_unauth_destination), the
//     restriction goes right after it: before it, an OK could let mail
//     for foreign destinations through;
//   - else, when smtpd_relay_restrictions holds the relay check (the
//     default since Postfix 2.10), nothing in smtpd_recipient_restrictions
//     can open a relay, and the restriction goes first there, ahead of
//     the permits of that list (permit_mynetworks would skip it);
//   - else it is an error: the administrator must place it.
//
// A list that already holds an element for which same reports true is
// left alone.
func AfterRelayCheck(same func(elem string) bool) Rule {
	return func(v Values, s Setting) (string, string, bool, error) {
		const rcpt, relay = "smtpd_recipient_restrictions", "smtpd_relay_restrictions"
		type list struct {
			value string
			elems []string
			spans [][2]int
		}
		parsed := map[string]list{}
		for _, name := range []string{rcpt, relay} {
			cur := strings.TrimSpace(v[name].Value)
			elems, spans, err := splitSpans(cur)
			if err != nil {
				return name, "", false, fmt.Errorf("%s: %w", name, err)
			}
			if slices.ContainsFunc(elems, same) {
				return name, cur, false, nil
			}
			parsed[name] = list{cur, elems, spans}
		}
		isRelayCheck := func(e string) bool { return slices.Contains(relayChecks, e) }
		l := parsed[rcpt]
		if i := slices.IndexFunc(l.elems, isRelayCheck); i >= 0 {
			return rcpt, insertAfter(l.value, l.spans, i, s.Want), true, nil
		}
		if slices.ContainsFunc(parsed[relay].elems, isRelayCheck) {
			return rcpt, insertAfter(l.value, l.spans, -1, s.Want), true, nil
		}
		return rcpt, "", false, fmt.Errorf("%w: put %q right after your relay check by hand", errNoRelayCheck, s.Want)
	}
}

// Change is a parameter as the merge leaves it.
type Change struct {
	Name string
	// Old is the current value (Postfix's default when not Set).
	Old string
	// Set reports that main.cf sets the parameter now.
	Set bool
	// New is the merged value.
	New string
	// Changed is false when main.cf already has what tlsgate needs.
	Changed bool
	// Note is the setting's note.
	Note string
}

// Names lists the parameters the settings need to read: their own and
// both restriction lists.
func (pf *Postfix) Names() []string {
	var out []string
	for _, s := range pf.Settings {
		if !slices.Contains(out, s.Name) {
			out = append(out, s.Name)
		}
	}
	for _, n := range []string{"smtpd_recipient_restrictions", "smtpd_relay_restrictions"} {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Merge merges every setting into v, in order (a later setting sees the
// parameters earlier ones changed), and returns one Change per setting.
// A parameter is never changed twice: a setting merged into a parameter
// already changed works on the new value.
func (pf *Postfix) Merge(v Values) ([]Change, error) {
	v = clone(v)
	var out []Change
	for _, s := range pf.Settings {
		name, value, changed, err := s.Rule(v, s)
		if err != nil {
			return nil, err
		}
		old := v[name]
		c := Change{Name: name, Old: old.Value, Set: old.Set, New: value, Changed: changed, Note: s.Note}
		if changed {
			for i := range out {
				if out[i].Name == name && out[i].Changed {
					// The earlier change is folded into this one.
					c.Old, c.Set = out[i].Old, out[i].Set
					c.Note = out[i].Note + "; " + c.Note
					out = slices.Delete(out, i, i+1)
					break
				}
			}
			v[name] = Current{Value: value, Set: true}
		}
		out = append(out, c)
	}
	return out, nil
}

func clone(v Values) Values {
	c := make(Values, len(v))
	for k, x := range v {
		c[k] = x
	}
	return c
}

// Text renders merged settings for main.cf: each change as "name =
// value" with its note and former value as comments, then the settings
// main.cf already has. source names the configuration, from where it
// says what was merged with.
func (pf *Postfix) Text(source, from string, changes []Change) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# main.cf settings for tlsgate, generated by tlsgate mta-config from %s,\n", source)
	fmt.Fprintf(&b, "# merged with %s. Apply them with tlsgate mta-config --apply (or postconf -e).\n", from)
	for _, n := range pf.Notes {
		fmt.Fprintf(&b, "# %s\n", n)
	}
	var same []Change
	for _, c := range changes {
		if !c.Changed {
			same = append(same, c)
			continue
		}
		b.WriteString("\n")
		if c.Note != "" {
			fmt.Fprintf(&b, "# %s\n", c.Note)
		}
		switch {
		case c.Set:
			fmt.Fprintf(&b, "# was: %s = %s\n", c.Name, c.Old)
		case c.Old != "":
			fmt.Fprintf(&b, "# was: not set (default: %s)\n", c.Old)
		}
		fmt.Fprintf(&b, "%s = %s\n", c.Name, c.New)
	}
	if len(same) > 0 {
		b.WriteString("\n# already as tlsgate needs them (left alone):\n")
		for _, c := range same {
			fmt.Fprintf(&b, "#   %s = %s\n", c.Name, c.New)
		}
	}
	return b.String()
}
