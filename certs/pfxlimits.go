package certs

import (
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"
)

// Limits on a PKCS#12 file, checked by [PFX2PEM] before it derives any key
// from the password. A key, its certificate and a chain take a few
// kilobytes; exporters ask for 2048 (OpenSSL, Windows) to 10000 (Java)
// iterations per key derivation. Without the limits a 2.4 KB file asking
// for 2^31-1 iterations kept pfx2pem busy for hours.
const (
	// MaxPFXSize is the largest PKCS#12 file accepted, in bytes.
	MaxPFXSize = 1 << 20
	// MaxPFXIterations is the most iterations one password-based key
	// derivation (the MAC's, or one encryption's) may ask for.
	MaxPFXIterations = 1_000_000
	// MaxPFXTotalIterations is the most iterations all the key derivations
	// in the file's cleartext may ask for together.
	MaxPFXTotalIterations = 4 * MaxPFXIterations
)

// pfxTimeout bounds the decoding itself, for key derivations that only
// appear once an encrypted part of the file is decrypted (a key bag
// inside an encrypted container), which the check cannot see beforehand.
var pfxTimeout = 30 * time.Second

// OIDs of password-based key derivations whose parameters are
// SEQUENCE { salt, iterations INTEGER, ... }: PKCS#12 PBE
// (1.2.840.113549.1.12.1.1-6), PKCS#5 PBES1 (1.2.840.113549.1.5.1, 3, 4,
// 6, 10, 11) and PBKDF2 (1.2.840.113549.1.5.12, inside PBES2 and PBMAC1).
func isKDF(oid asn1.ObjectIdentifier) bool {
	switch {
	case len(oid) == 8 && oid[:7].Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1}):
		return oid[7] >= 1 && oid[7] <= 6
	case len(oid) == 7 && oid[:6].Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5}):
		switch oid[6] {
		case 1, 3, 4, 6, 10, 11, 12:
			return true
		}
	}
	return false
}

// kdfUse is one key derivation the file asks for.
type kdfUse struct {
	what       string   // "MAC" or "key derivation"
	iterations *big.Int // as written
}

// pfxKDFs lists the key derivations visible in the cleartext of a
// PKCS#12 file: the MAC's iteration count (MacData), and every PBE, PBES1
// or PBKDF2 algorithm identifier anywhere in the structure, also inside
// OCTET STRINGs that hold DER (the unencrypted parts of the
// authenticated safe). A file it cannot parse gives no uses: go-pkcs12
// then reports the parse error.
func pfxKDFs(der []byte) []kdfUse {
	var uses []kdfUse
	var root asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &root); err != nil || len(rest) > 0 || !root.IsCompound {
		return nil
	}
	kids := children(root.Bytes)
	// PFX ::= SEQUENCE { version, authSafe ContentInfo, macData MacData OPTIONAL }
	// MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }
	if len(kids) >= 3 && kids[2].Tag == asn1.TagSequence {
		mac := children(kids[2].Bytes)
		if len(mac) >= 3 && mac[2].Tag == asn1.TagInteger {
			uses = append(uses, kdfUse{"MAC", integer(mac[2])})
		}
	}
	walkKDFs(root, 0, &uses)
	return uses
}

// maxDepth bounds the walk over nested structures.
const maxDepth = 24

func walkKDFs(v asn1.RawValue, depth int, uses *[]kdfUse) {
	if depth > maxDepth {
		return
	}
	switch {
	case v.IsCompound:
		kids := children(v.Bytes)
		if v.Class == asn1.ClassUniversal && v.Tag == asn1.TagSequence && len(kids) == 2 && kids[0].Tag == asn1.TagOID {
			var oid asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(kids[0].FullBytes, &oid); err == nil && isKDF(oid) && kids[1].Tag == asn1.TagSequence {
				if params := children(kids[1].Bytes); len(params) >= 2 && params[1].Tag == asn1.TagInteger {
					*uses = append(*uses, kdfUse{"key derivation", integer(params[1])})
				}
			}
		}
		for _, k := range kids {
			walkKDFs(k, depth+1, uses)
		}
	case v.Class == asn1.ClassUniversal && v.Tag == asn1.TagOctetString && len(v.Bytes) > 0 && v.Bytes[0] == 0x30:
		var inner asn1.RawValue
		if rest, err := asn1.Unmarshal(v.Bytes, &inner); err == nil && len(rest) == 0 {
			walkKDFs(inner, depth+1, uses)
		}
	}
}

// children parses the elements of a constructed value's contents, as far
// as they parse.
func children(b []byte) []asn1.RawValue {
	var out []asn1.RawValue
	for len(b) > 0 {
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(b, &v)
		if err != nil {
			return out
		}
		out = append(out, v)
		b = rest
	}
	return out
}

// integer decodes an INTEGER element; one that does not decode counts as
// too large.
func integer(v asn1.RawValue) *big.Int {
	n := new(big.Int)
	if _, err := asn1.Unmarshal(v.FullBytes, &n); err != nil {
		return new(big.Int).Lsh(big.NewInt(1), 64)
	}
	return n
}

// checkPFXWork refuses a PKCS#12 file that is too large, or whose
// cleartext asks for more key-derivation work than MaxPFXIterations per
// derivation or MaxPFXTotalIterations in all.
func checkPFXWork(pfx []byte) error {
	if len(pfx) > MaxPFXSize {
		return fmt.Errorf("certs: the PKCS#12 file is %d bytes, more than the %d a key with its certificate and chain needs; not reading it", len(pfx), MaxPFXSize)
	}
	total := new(big.Int)
	limit := big.NewInt(MaxPFXIterations)
	for _, u := range pfxKDFs(pfx) {
		if u.iterations.Sign() < 0 || u.iterations.Cmp(limit) > 0 {
			return fmt.Errorf("certs: the PKCS#12 file asks for %s iterations of its %s; at most %d are accepted (exporters use 2048 to 10000): not deriving keys from the password, which would take hours; export the file again",
				u.iterations, u.what, MaxPFXIterations)
		}
		total.Add(total, u.iterations)
	}
	if total.Cmp(big.NewInt(MaxPFXTotalIterations)) > 0 {
		return fmt.Errorf("certs: the PKCS#12 file asks for %s key-derivation iterations in all; at most %d are accepted: export the file again", total, MaxPFXTotalIterations)
	}
	return nil
}
