package token

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/golang-jwt/jwt/v5"
)

// External is an external token issuer (Distribution's auth.token
// settings): its name (the tokens' iss) and its root certificates. A token
// is accepted when its header's x5c chain leads to one of the roots, or its
// kid names a root's key (by JWK thumbprint or libtrust key id, the two ids
// Distribution looks keys up by).
type External struct {
	Issuer string
	roots  *x509.CertPool
	keys   map[string]crypto.PublicKey
}

// maxBundleBytes bounds a root certificate bundle file.
const maxBundleBytes = 1 << 20

// LoadExternal reads a PEM bundle of root certificates
// (--auth-token-rootcertbundle) for issuer (--auth-token-issuer).
func LoadExternal(issuer, bundlePath string) (*External, error) {
	if issuer == "" {
		return nil, errors.New("--auth-token-rootcertbundle needs --auth-token-issuer: the iss the external token server writes in its tokens")
	}
	fi, err := os.Stat(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("--auth-token-rootcertbundle: %w", err)
	}
	if fi.Size() > maxBundleBytes {
		return nil, fmt.Errorf("--auth-token-rootcertbundle %s is %d bytes, more than %d", bundlePath, fi.Size(), maxBundleBytes)
	}
	data, err := os.ReadFile(bundlePath)
	if err != nil {
		return nil, fmt.Errorf("--auth-token-rootcertbundle: %w", err)
	}
	e, err := ParseExternal(issuer, data)
	if err != nil {
		return nil, fmt.Errorf("--auth-token-rootcertbundle %s: %w", bundlePath, err)
	}
	return e, nil
}

// ParseExternal reads root certificates from PEM data.
func ParseExternal(issuer string, data []byte) (*External, error) {
	e := &External{Issuer: issuer, roots: x509.NewCertPool(), keys: map[string]crypto.PublicKey{}}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing a certificate: %w", err)
		}
		e.roots.AddCert(cert)
		for _, id := range keyIDs(cert.PublicKey) {
			e.keys[id] = cert.PublicKey
		}
	}
	if len(e.keys) == 0 {
		return nil, errors.New("no PEM certificate (with an ECDSA or RSA key) in the bundle")
	}
	return e, nil
}

// keyIDs are the ids a token's kid may name pub by.
func keyIDs(pub crypto.PublicKey) []string {
	var ids []string
	if id, err := Thumbprint(pub); err == nil {
		ids = append(ids, id)
	}
	if id, err := LibtrustKeyID(pub); err == nil {
		ids = append(ids, id)
	}
	return ids
}

// key finds the public key that must have signed t.
func (e *External) key(t *jwt.Token) (any, error) {
	if x5c, ok := t.Header["x5c"].([]any); ok && len(x5c) > 0 {
		return e.chainKey(x5c)
	}
	kid, _ := t.Header["kid"].(string)
	if pub, ok := e.keys[kid]; ok {
		return pub, nil
	}
	return nil, fmt.Errorf("signed by a key neither this cluster nor --auth-token-rootcertbundle knows (kid %q)", truncate(kid))
}

// chainKey verifies an x5c chain (base64 DER, leaf first) up to a root
// and returns the leaf's key.
func (e *External) chainKey(x5c []any) (any, error) {
	if len(x5c) > maxChainCerts {
		return nil, fmt.Errorf("x5c chain of %d certificates: at most %d", len(x5c), maxChainCerts)
	}
	var certs []*x509.Certificate
	for _, v := range x5c {
		s, _ := v.(string)
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("x5c: %w", err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("x5c: %w", err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: e.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("x5c chain does not lead to a --auth-token-rootcertbundle certificate: %w", err)
	}
	return certs[0].PublicKey, nil
}
