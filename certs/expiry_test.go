package certs

import (
	"testing"
	"time"
)

func TestExpiry(t *testing.T) {
	day := 24 * time.Hour
	mk := func(cn string, nb, na time.Time) NamedCert {
		return NamedCert{Cert: mkCert(t, certSpec{cn: cn, notBefore: nb, notAfter: na}, nil).cert}
	}
	tests := []struct {
		name   string
		cert   NamedCert
		within time.Duration
		want   ExpiryStatus
		left   time.Duration
	}{
		{name: "fine", cert: mk("a", testNow.Add(-day), testNow.Add(90*day)), want: ExpiryOK, left: 90 * day},
		{name: "31 days left", cert: mk("b", testNow.Add(-day), testNow.Add(31*day)), want: ExpiryOK, left: 31 * day},
		{name: "exactly 30 days left", cert: mk("c", testNow.Add(-day), testNow.Add(30*day)), want: ExpiryWarning, left: 30 * day},
		{name: "one hour left", cert: mk("d", testNow.Add(-day), testNow.Add(time.Hour)), want: ExpiryWarning, left: time.Hour},
		{name: "expired", cert: mk("e", testNow.Add(-10*day), testNow.Add(-day)), want: ExpiryExpired, left: -day},
		{name: "not yet valid", cert: mk("f", testNow.Add(day), testNow.Add(90*day)), want: ExpiryExpired, left: 90 * day},
		{name: "custom horizon", cert: mk("g", testNow.Add(-day), testNow.Add(50*day)), within: 60 * day, want: ExpiryWarning, left: 50 * day},
		{name: "custom horizon ok", cert: mk("h", testNow.Add(-day), testNow.Add(20*day)), within: 7 * day, want: ExpiryOK, left: 20 * day},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Expiry([]NamedCert{tc.cert}, testNow, tc.within)
			if len(r) != 1 {
				t.Fatalf("%d reports", len(r))
			}
			if r[0].Status != tc.want || r[0].Left != tc.left {
				t.Errorf("got %v (%v left), want %v (%v left)", r[0].Status, r[0].Left, tc.want, tc.left)
			}
			if r[0].Name != "CN="+tc.cert.Cert.Subject.CommonName {
				t.Errorf("default name %q", r[0].Name)
			}
		})
	}

	all := []NamedCert{
		{Name: "server cert /etc/postfix/mx.crt", Cert: mk("x", testNow.Add(-day), testNow.Add(90*day)).Cert},
		mk("y", testNow.Add(-day), testNow.Add(day)),
	}
	r := Expiry(all, testNow, 0)
	if r[0].Name != "server cert /etc/postfix/mx.crt" || r[1].Name != "CN=y" {
		t.Errorf("names/order: %+v", r)
	}
	if Worst(r) != ExpiryWarning || Worst(nil) != ExpiryOK {
		t.Errorf("Worst = %v", Worst(r))
	}
	for s, want := range map[ExpiryStatus]string{ExpiryOK: "ok", ExpiryWarning: "warning", ExpiryExpired: "expired", 7: "unknown"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q", s, s.String())
		}
	}
}
