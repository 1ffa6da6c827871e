package mtalab

import (
	"crypto/tls"
	"net/smtp"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// TestSinkSetTLS: a sink that swaps its certificate presents the new one
// from the next STARTTLS on; a sink without STARTTLS refuses the swap.
func TestSinkSetTLS(t *testing.T) {
	pki := testpki.NewT(t)
	s := StartSink(t, SinkOptions{TLS: pki.WrongCN})
	served := func() string {
		t.Helper()
		c, err := smtp.Dial(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
			t.Fatal(err)
		}
		st, _ := c.TLSConnectionState()
		return st.PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "wrong.partner.test" {
		t.Errorf("before the swap: %s", cn)
	}
	if err := s.SetTLS(pki.Sink); err != nil {
		t.Fatal(err)
	}
	if cn := served(); cn != "sink.partner.test" {
		t.Errorf("after the swap: %s", cn)
	}
	if err := StartSink(t, SinkOptions{}).SetTLS(pki.Sink); err == nil {
		t.Error("a sink without STARTTLS took a certificate")
	}
}
