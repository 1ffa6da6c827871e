package policy

import (
	"slices"
	"testing"
	"time"
)

// TestWatchSettings: no [watch] table, nothing runs; an empty one runs the
// held-mail watch every minute with Postfix's defaults and no probes; the
// settings are read as written.
func TestWatchSettings(t *testing.T) {
	if w := mustParse(t, `mta = "postfix"`).Settings.Watch; w != nil {
		t.Errorf("no [watch] table: %+v, want nil", w)
	}
	w := mustParse(t, "mta = \"postfix\"\n[watch]\n").Settings.Watch
	if w == nil || w.HeldInterval != time.Minute || w.QueueTimeout != 30*time.Second || w.Postqueue != "postqueue" || w.PostfixConfig != "" ||
		w.ProbeInterval != 0 || w.ProbeEndpoints != nil || w.ProbeTimeout != 30*time.Second || !slices.Equal(w.Mailq, []string{"mailq"}) {
		t.Errorf("empty [watch]: %+v", w)
	}
	w = mustParse(t, `mta = "postfix"
[watch]
held_interval   = "off"
queue_timeout   = "5s"
postqueue       = "/usr/sbin/postqueue"
postfix_config  = "/etc/postfix-out"
probe_interval  = "1d"
probe_endpoints = ["B"]
probe_timeout   = "10s"
[[endpoint]]
name  = "b"
hosts = ["b.example"]
  [endpoint.outbound]
  encryption = true
`).Settings.Watch
	if w.HeldInterval != 0 || w.QueueTimeout != 5*time.Second || w.Postqueue != "/usr/sbin/postqueue" || w.PostfixConfig != "/etc/postfix-out" ||
		w.ProbeInterval != 24*time.Hour || !slices.Equal(w.ProbeEndpoints, []string{"b"}) || w.ProbeTimeout != 10*time.Second {
		t.Errorf("written [watch]: %+v", w)
	}
	w = mustParse(t, "mta = \"sendmail\"\n[watch]\nmailq = \"/usr/sbin/sendmail -C /etc/mail/out.cf -bp\"\nheld_interval = \"2s\"\n").Settings.Watch
	if !slices.Equal(w.Mailq, []string{"/usr/sbin/sendmail", "-C", "/etc/mail/out.cf", "-bp"}) || w.HeldInterval != 2*time.Second {
		t.Errorf("sendmail [watch]: %+v", w)
	}
}
