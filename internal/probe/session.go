package probe

import (
	"github.com/tlsgate/tlsgate/internal/maillog"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
)

// Session returns what the probe saw as package mtapolicy judges it: the
// trust level is what the MTA would log (Anonymous without a certificate,
// Untrusted when the chain does not verify against our CA store, else
// Trusted; name checks are the requirement's own).
func (r *Result) Session() mtapolicy.Session {
	trust := maillog.Anonymous
	if len(r.Chain) > 0 {
		trust = maillog.Untrusted
		if r.Verified {
			trust = maillog.Trusted
		}
	}
	return mtapolicy.Session{TLS: r.TLS, Bits: r.Bits, Trust: trust, Host: r.Host, Chain: r.Chain, ChainVerified: r.Verified}
}
