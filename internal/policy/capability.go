package policy

import "strings"

// capabilities refuses requirements the configured MTA cannot enforce,
// each with the reason and what to write instead.
func (c *compiler) capabilities(ep *Endpoint, path string) {
	in, out := ep.Inbound, ep.Outbound
	inP, outP := path+".inbound", path+".outbound"
	switch c.ctx.mta {
	case Postfix:
		if in.SubjectDN != nil {
			c.at(inP+".subject_dn", "endpoint %q inbound: Postfix reports only the subject CN of a trusted client certificate (milter {cert_subject}, policy ccert_subject), never the subject DN, so subject_dn cannot be enforced; use cn = %q and issuer_cn, or pin the certificate with fingerprints", ep.Name, in.SubjectDN.CN())
		}
		if in.IssuerDN != nil {
			c.at(inP+".issuer_dn", "endpoint %q inbound: Postfix reports only the issuer CN of a trusted client certificate, never the issuer DN, so issuer_dn cannot be enforced; use issuer_cn = %q, keep only that CA in the CA store, or pin fingerprints", ep.Name, in.IssuerDN.CN())
		}
		if len(in.Fingerprints) > 0 && !c.ctx.delegation {
			c.at(inP+".fingerprints", "endpoint %q inbound: Postfix tells milters nothing about fingerprints; only its policy-delegation protocol does, so set [policyd] delegation_listen (tlsgate mta-config then adds check_policy_service), or use validate_cert with cn/issuer_cn instead", ep.Name)
		}
		if out.SubjectDN != nil {
			c.at(outP+".subject_dn", "endpoint %q outbound: Postfix's TLS policy table cannot compare a server certificate's subject DN (only host names via match= and fingerprints); use cn = %q (checked as a host name) or pin fingerprints", ep.Name, out.SubjectDN.CN())
		}
		if (out.IssuerDN != nil || out.IssuerCN != "") && c.ctx.trustAnchorDir == "" {
			key := ".issuer_dn"
			if out.IssuerDN == nil {
				key = ".issuer_cn"
			}
			c.at(outP+key, "endpoint %q outbound: Postfix cannot compare the issuer; tlsgate enforces it by pinning trust anchors (tafile=) to the CA certificates of the CA store whose subject matches: set [certs] ca_store and trust_anchor_dir, or pin fingerprints", ep.Name)
		}
		if out.CN != "" {
			if n, err := NormalizeName(out.CN); err != nil {
				c.at(outP+".cn", "endpoint %q outbound: Postfix checks the server certificate's name as a host name (match=), and %q is not one (%v); give the host name the certificate is issued for, or pin fingerprints", ep.Name, out.CN, err)
			} else if !strings.Contains(n, ".") {
				c.at(outP+".cn", "endpoint %q outbound: cn = %q is a single label, which Postfix's match= does not read as a name: hostname, nexthop and dot-nexthop are keywords there (the MX host, the next-hop domain, names below it) and any other single label names no certificate; give the fully qualified name the certificate is issued for", ep.Name, out.CN)
			}
		}
		if out.MinBits > 128 {
			c.at(outP+".min_bits", "endpoint %q outbound: min_bits = %d cannot be enforced by Postfix %s: its TLS policy table can restrict TLS 1.2 ciphers per destination but not TLS 1.3 suites, and TLS 1.3 may negotiate TLS_AES_128_GCM_SHA256; use min_bits = 128 (enforced with ciphers=high), or pin the peer's certificate with fingerprints", ep.Name, out.MinBits, c.ctx.postfixVersion)
		}
		if len(out.Fingerprints) > 0 && out.ValidateCert {
			c.at(outP+".fingerprints", "endpoint %q outbound: Postfix's fingerprint level checks the pin but does not also validate the chain; set validate_cert = false (a pin is stricter than CA trust) or drop fingerprints", ep.Name)
		}
	case Sendmail:
		if len(out.Fingerprints) > 0 {
			c.at(outP+".fingerprints", "endpoint %q outbound: Sendmail's access map (TLS_Srv/TLS_Rcpt) has no fingerprint check; use subject_dn and issuer_dn (CS:/CI:) or cn (CN:) instead", ep.Name)
		}
		if out.IssuerCN != "" {
			c.at(outP+".issuer_cn", "endpoint %q outbound: Sendmail's access map compares the full issuer DN (CI:), not the issuer CN; write issuer_dn instead", ep.Name)
		}
		for _, kd := range []struct {
			key string
			dn  DN
		}{{".subject_dn", out.SubjectDN}, {".issuer_dn", out.IssuerDN}} {
			if kd.dn != nil && len(kd.dn.OpenSSL()) > 255 {
				c.at(outP+kd.key, "endpoint %q outbound: Sendmail truncates certificate DNs to 255 characters, so this %d-character DN can never match; pin a shorter DN or use cn", ep.Name, len(kd.dn.OpenSSL()))
			}
		}
		for _, kd := range []struct {
			key string
			dn  DN
		}{{".subject_dn", in.SubjectDN}, {".issuer_dn", in.IssuerDN}} {
			if kd.dn != nil && len(kd.dn.OpenSSL()) > 255 {
				c.at(inP+kd.key, "endpoint %q inbound: Sendmail truncates certificate DNs to 255 characters ({cert_subject}, {cert_issuer}), so this %d-character DN can never match; use cn and issuer_cn", ep.Name, len(kd.dn.OpenSSL()))
			}
		}
	}
}
