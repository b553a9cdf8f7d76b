package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/meshreg/meshreg/api/auth"
)

// The cluster's signing keys: ECDSA P-256, the current one signs, the
// previous ones still verify the tokens they signed until those expire.
// The leader keeps the set in the replicated state (one setting,
// state.SettingAuthTokenKeys) and rotates it (Rotate); every node reads it
// from its local state (Keys).
const (
	// MaxKeys bounds the key set: the current key and the retired ones
	// still needed. Rotation is at least the token TTL apart, so three
	// suffice; the oldest go first beyond MaxKeys.
	MaxKeys = 4
	// maxKeySetBytes bounds the set's encoding (the setting allows 64 KiB).
	maxKeySetBytes = 32 << 10
)

// KeySet is the replicated form of the signing keys (JSON).
type KeySet struct {
	// Keys: the current (signing) key first, then retired ones.
	Keys []StoredKey `json:"keys"`
}

// StoredKey is one signing key.
type StoredKey struct {
	// ID is the key's JWK thumbprint (RFC 7638), the tokens' kid.
	ID string `json:"kid"`
	// Private is the PKCS #8 DER of the ECDSA P-256 private key.
	Private []byte    `json:"private"`
	Created time.Time `json:"created"`
	// Retired is when a newer key replaced this one; zero for the current.
	Retired time.Time `json:"retired,omitzero"`
}

// NewKey makes a signing key created at now.
func NewKey(now time.Time) (StoredKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return StoredKey{}, fmt.Errorf("token: generating a signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return StoredKey{}, fmt.Errorf("token: encoding a signing key: %w", err)
	}
	id, err := Thumbprint(&k.PublicKey)
	if err != nil {
		return StoredKey{}, err
	}
	return StoredKey{ID: id, Private: der, Created: now.UTC()}, nil
}

// Rotate returns the set the leader should store at now: a new current key
// when there is none or the current one is at least every old; retired keys
// dropped once keep has passed since they retired (keep is the longest a
// token they signed may live, plus the clock skew allowed). changed is
// false when set is already right.
func Rotate(set *KeySet, now time.Time, every, keep time.Duration) (next *KeySet, changed bool, err error) {
	next = &KeySet{}
	if set != nil {
		next.Keys = append(next.Keys, set.Keys...)
	}
	if len(next.Keys) == 0 || !now.Before(next.Keys[0].Created.Add(every)) {
		k, err := NewKey(now)
		if err != nil {
			return nil, false, err
		}
		if len(next.Keys) > 0 {
			next.Keys[0].Retired = now.UTC()
		}
		next.Keys = append([]StoredKey{k}, next.Keys...)
		changed = true
	}
	kept := next.Keys[:1]
	for _, k := range next.Keys[1:] {
		if now.Before(k.Retired.Add(keep)) && len(kept) < MaxKeys {
			kept = append(kept, k)
		} else {
			changed = true
		}
	}
	next.Keys = kept
	return next, changed, nil
}

// Encode returns the set's replicated bytes.
func (s *KeySet) Encode() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("token: encoding the key set: %w", err)
	}
	return b, nil
}

// signingKeys is a decoded key set.
type signingKeys struct {
	current *ecdsa.PrivateKey
	kid     string
	public  map[string]*ecdsa.PublicKey // by kid
}

// decodeKeySet decodes and checks replicated bytes.
func decodeKeySet(b []byte) (*signingKeys, error) {
	if len(b) > maxKeySetBytes {
		return nil, fmt.Errorf("token: key set is %d bytes, more than %d", len(b), maxKeySetBytes)
	}
	var s KeySet
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("token: decoding the key set: %w", err)
	}
	if len(s.Keys) == 0 || len(s.Keys) > MaxKeys {
		return nil, fmt.Errorf("token: key set has %d keys, want 1 to %d", len(s.Keys), MaxKeys)
	}
	out := &signingKeys{public: map[string]*ecdsa.PublicKey{}}
	for i, sk := range s.Keys {
		k, err := x509.ParsePKCS8PrivateKey(sk.Private)
		if err != nil {
			return nil, fmt.Errorf("token: key %d of the set: %w", i, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok || ek.Curve != elliptic.P256() {
			return nil, fmt.Errorf("token: key %d of the set is not ECDSA P-256", i)
		}
		id, err := Thumbprint(&ek.PublicKey)
		if err != nil || id != sk.ID {
			return nil, fmt.Errorf("token: key %d of the set: kid %q is not its thumbprint", i, sk.ID)
		}
		if i == 0 {
			out.current, out.kid = ek, id
		}
		out.public[id] = &ek.PublicKey
	}
	return out, nil
}

// Keys reads the signing keys from the replicated state through read
// (which returns the setting's bytes, or nil when none was written yet),
// decoding them again only when the bytes change. It is safe for
// concurrent use.
type Keys struct {
	read func() ([]byte, error)
	now  func() time.Time

	mu    sync.Mutex
	raw   []byte
	keys  *signingKeys
	read0 time.Time // when raw was read
}

// keysFresh is how long keys read are used before reading again: a
// rotation reaches requests within this long of being applied.
const keysFresh = 250 * time.Millisecond

// NewKeys reads keys through read.
func NewKeys(read func() ([]byte, error)) *Keys { return &Keys{read: read, now: time.Now} }

// get returns the current keys; auth.ErrNoSigningKey when there are none.
func (k *Keys) get() (*signingKeys, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if k.keys != nil && now.Sub(k.read0) < keysFresh && now.Sub(k.read0) >= 0 {
		return k.keys, nil
	}
	b, err := k.read()
	if err != nil {
		return nil, fmt.Errorf("token: reading the signing keys: %w", err)
	}
	if k.keys != nil && string(b) == string(k.raw) {
		k.read0 = now
		return k.keys, nil
	}
	if len(b) == 0 {
		return nil, errNoKey
	}
	keys, err := decodeKeySet(b)
	if err != nil {
		return nil, err
	}
	k.raw, k.keys, k.read0 = append([]byte(nil), b...), keys, now
	return keys, nil
}

// Thumbprint is the RFC 7638 JWK thumbprint of an ECDSA or RSA public key
// (base64url, no padding): the kid of our tokens, and one of the ids
// Distribution looks a root certificate's key up by.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	var canon string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		ecdhKey, err := k.ECDH()
		if err != nil {
			return "", fmt.Errorf("token: thumbprint: %w", err)
		}
		raw := ecdhKey.Bytes() // 0x04 || X || Y
		x, y := raw[1:1+size], raw[1+size:]
		canon = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, k.Curve.Params().Name, b64(x), b64(y))
	case *rsa.PublicKey:
		canon = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, b64(big.NewInt(int64(k.E)).Bytes()), b64(k.N.Bytes()))
	default:
		return "", fmt.Errorf("token: thumbprint: unsupported key type %T", pub)
	}
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:]), nil
}

// LibtrustKeyID is the key id docker/libtrust gives a public key (and
// Distribution accepts as kid): the SHA-256 of its PKIX DER, truncated to
// 240 bits, base32, in groups of four separated by colons.
func LibtrustKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("token: libtrust key id: %w", err)
	}
	sum := sha256.Sum256(der)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	var groups []string
	for i := 0; i+4 <= len(s); i += 4 {
		groups = append(groups, s[i:i+4])
	}
	return strings.Join(groups, ":"), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

var errNoKey = fmt.Errorf("token: the cluster has no signing key yet (its leader writes one shortly): %w", auth.ErrNoSigningKey)
