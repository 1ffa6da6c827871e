// Package certid names certificates the way mail servers and their
// administrators do: distinguished names ([DN], [ParseDN], [RFC4514]),
// SHA-256 fingerprints ([Fingerprint], [ParseFingerprint]) and the xtext
// encoding in which Postfix and Sendmail pass names on ([DecodeXtext],
// [EncodeXtext]). It is a leaf: the policy, the milter, the policy daemon
// and the certificate tooling all read and print names through it, so a
// name looks the same everywhere.
//
// Attribute types have one spelling, OpenSSL's short names (C, ST, O, OU,
// CN, emailAddress, DC, UID, serialNumber, street, ...): what Sendmail
// reports in {cert_subject} and {cert_issuer} (X509_NAME_oneline) and
// what "openssl x509 -subject" prints. Parsing accepts the long names and
// aliases too, in any case.
//
// Fingerprints are printed as Postfix logs and matches them: upper-case
// hex bytes separated by colons (Postfix src/tls/tls_fprint.c,
// tls_digest_encode); [ParseFingerprintKind] reads every form an
// administrator copies and says which ones it took.
package certid
