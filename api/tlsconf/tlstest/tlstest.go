// Package tlstest makes certificate authorities and certificates for
// tests and the benchmark (never wire it into a node).
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A CA signs leaf certificates; CertFile is its certificate in PEM (what
// SSL_CERT_FILE or --tls-client-ca point at).
type CA struct {
	Cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	CertFile string
	dir      string
}

// NewCA makes a CA named name and writes its certificate in a temp dir.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := MakeCA(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// MakeCA makes a CA named name and writes its certificate as dir/ca.crt
// (for tools that are not tests, such as the benchmark).
func MakeCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{Cert: cert, key: key, CertFile: filepath.Join(dir, "ca.crt"), dir: dir}
	if err := os.WriteFile(ca.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return ca, nil
}

// Leaf is a certificate the CA issued, as PEM bytes.
type Leaf struct {
	CertPEM, KeyPEM []byte
	Serial          int64
}

// Server issues a server certificate for 127.0.0.1, ::1, localhost and
// the extra DNS names, with the serial given.
func (ca *CA) Server(t testing.TB, serial int64, dnsNames ...string) Leaf {
	return ca.issue(t, serial, x509.ExtKeyUsageServerAuth, append([]string{"localhost"}, dnsNames...))
}

// Client issues a client certificate named cn.
func (ca *CA) Client(t testing.TB, serial int64, cn string) Leaf {
	return ca.issue(t, serial, x509.ExtKeyUsageClientAuth, nil, cn)
}

func (ca *CA) issue(t testing.TB, serial int64, usage x509.ExtKeyUsage, dnsNames []string, cn ...string) Leaf {
	t.Helper()
	l, err := ca.Issue(serial, usage, dnsNames, cn...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Issue issues a certificate for usage (server: also for 127.0.0.1 and
// ::1) with the serial, DNS names and, if given, common name cn.
func (ca *CA) Issue(serial int64, usage x509.ExtKeyUsage, dnsNames []string, cn ...string) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "meshreg test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dnsNames,
	}
	if len(cn) > 0 {
		tmpl.Subject.CommonName = cn[0]
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Leaf{}, err
	}
	return Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		Serial:  serial,
	}, nil
}

// Write writes the leaf's certificate and key to certFile and keyFile.
func (l Leaf) Write(t testing.TB, certFile, keyFile string) {
	t.Helper()
	for f, b := range map[string][]byte{certFile: l.CertPEM, keyFile: l.KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Files writes the leaf into a new temp dir as tls.crt and tls.key.
func (l Leaf) Files(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	l.Write(t, certFile, keyFile)
	return certFile, keyFile
}
