// Package certs manages the certificates and keys a mail server needs before
// tlsgate can enforce mandatory, verified TLS: the MTA's own key and
// certificate signing request, PKCS#12 (.pfx/.p12) files exported from
// Windows or appliances, the directory of CA certificates that Postfix and
// Sendmail are told to trust, and the SHA-256 fingerprints used for
// certificate pinning.
//
// It is used by the "tlsgate certs" admin command (see [Main]) and, read-only,
// by the daemons.
//
// # Formats
//
// Fingerprints are written the way Postfix logs and expects them: upper-case
// hex bytes separated by colons (Postfix src/tls/tls_fprint.c,
// tls_digest_encode), using SHA-256 as selected by
// smtp_tls_fingerprint_digest / smtpd_tls_fingerprint_digest = sha256 (the
// default from compatibility_level 3.6 on). [FingerprintCert] is the digest of
// the whole DER certificate ("cert_fingerprint"), [FingerprintSPKI] the digest
// of its DER SubjectPublicKeyInfo ("pubkey_fingerprint", which survives
// renewals that keep the key). See Postfix TLS_README, "Certificate and public
// key fingerprints".
//
// Distinguished names are printed as RFC 4514 strings (most specific RDN
// first, with OpenSSL's attribute names, as "openssl x509 -nameopt RFC2253"
// does; package certid, which the policy uses too). Private keys are written as
// unencrypted PKCS#8 (RFC 5208) PEM (RFC 7468) with mode 0600, certificates as
// PEM with mode 0644. PKCS#12 is RFC 7292, decoded with
// software.sslmate.com/src/go-pkcs12.
//
// # Why does tlsgate refuse my key file?
//
// Postfix and Sendmail read the private key as root before dropping
// privileges, so nobody else ever needs to read it. A key readable by others,
// or by a group the user running tlsgate is not in, has very likely been
// copied around; [CheckKeyFile] refuses it and says "chmod 600 FILE". A key
// group that user is in is fine: Debian keeps keys as mode 0640, group
// ssl-cert, so "adduser tlsgate ssl-cert" makes such a key acceptable.
//
// # Why does the CA store refuse my certificate?
//
// The CA store holds certificates that sign other certificates (basic
// constraints CA:TRUE). A partner's server certificate (CA:FALSE) does not
// belong there: trusting it as a CA would not make Postfix accept it. Pin its
// fingerprint instead (Postfix security level "fingerprint").
package certs
