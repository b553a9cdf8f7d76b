package testnet_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshreg/meshreg/api/auth/token"
)

// testIssuer plays an external token server (docker_auth, Harbor): a key
// pair with a self-signed certificate, the bundle a registry trusts.
type testIssuer struct {
	key, rogue *ecdsa.PrivateKey
	kid        string
	bundle     string // PEM file of the certificate
	service    string
}

func newTestIssuer(t *testing.T, name, service string) *testIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "issuer.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	kid, err := token.LibtrustKeyID(&key.PublicKey) // what docker_auth puts in kid
	if err != nil {
		t.Fatal(err)
	}
	return &testIssuer{key: key, rogue: rogue, kid: kid, bundle: bundle, service: service}
}

// sign makes a token for scope ("repository:NAME:ACTIONS"), signed by key
// with the issuer's kid.
func (i *testIssuer) sign(t *testing.T, key *ecdsa.PrivateKey, iss, scope string) string {
	t.Helper()
	parts := strings.SplitN(scope, ":", 3)
	now := time.Now()
	c := jwt.MapClaims{"iss": iss, "sub": "ci-bot", "aud": i.service, "exp": now.Add(5 * time.Minute).Unix(),
		"nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(), "jti": "t",
		"access": []token.Access{{Type: parts[0], Name: parts[1], Actions: strings.Split(parts[2], ",")}}}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["kid"] = i.kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
