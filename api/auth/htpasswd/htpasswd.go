// Package htpasswd reads an Apache htpasswd file of bcrypt entries
// (`htpasswd -B`) and checks passwords against it, reloading the file when
// it changes.
package htpasswd

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/meshreg/meshreg/api/auth"
)

// MaxUsers bounds the entries of one file.
const MaxUsers = 100_000

// Users maps a user name to its bcrypt hash.
type Users map[string][]byte

// Parse reads htpasswd lines `user:$2y$...`. Blank lines and lines starting
// with # are skipped. Any other hash kind (MD5 $apr1$, {SHA}, crypt,
// plain text) is refused with an error naming the line.
func Parse(data []byte) (Users, error) {
	users := Users{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		user, hash, ok := strings.Cut(s, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("line %d: want user:bcrypt-hash", n)
		}
		if !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$") {
			return nil, fmt.Errorf("line %d: user %q: only bcrypt hashes ($2y$, made by `htpasswd -B`) are supported", n, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d: user %q: bad bcrypt hash: %v", n, user, err)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("line %d: user %q appears twice", n, user)
		}
		if len(users) >= MaxUsers {
			return nil, fmt.Errorf("line %d: more than %d users", n, MaxUsers)
		}
		users[user] = []byte(hash)
	}
	return users, nil
}

// File is an htpasswd file, reloaded when it changes (see auth.Watched).
type File struct {
	w *auth.Watched[Users]

	// bcrypt is slow on purpose; a registry client sends its password with
	// every request. ok remembers the successful checks, keyed by user,
	// password and hash, so a changed hash or a removed user is never served
	// from it.
	mu sync.Mutex
	ok map[[32]byte]struct{}
}

var _ auth.Verifier = (*File)(nil)

// maxCached bounds the remembered successful checks.
const maxCached = 10_000

// Open reads path; errors name the file and the line. onReload (if not
// nil) is told of every later change of the file: nil when it was
// applied, the error when it was rejected (the last good one stays).
func Open(path string, onReload func(error)) (*File, error) {
	parse := func(data []byte) (Users, error) {
		u, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("htpasswd %s: %w", path, err)
		}
		return u, nil
	}
	w, err := auth.Watch(path, parse)
	if err != nil {
		return nil, fmt.Errorf("--auth-htpasswd: %w", err)
	}
	w.OnReload = onReload
	return &File{w: w, ok: map[[32]byte]struct{}{}}, nil
}

// unknownUserHash is a bcrypt hash of the default cost, made once.
var unknownUserHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("no such user"), bcrypt.DefaultCost)
	return h
})

// Verify reports whether password is user's.
func (f *File) Verify(user, password string) bool {
	hash, found := f.w.Get()[user]
	if !found {
		// As slow as a wrong password, so timing does not tell which
		// user names exist.
		_ = bcrypt.CompareHashAndPassword(unknownUserHash(), []byte(password))
		return false
	}
	key := sha256.Sum256([]byte(user + "\x00" + password + "\x00" + string(hash)))
	f.mu.Lock()
	_, hit := f.ok[key]
	f.mu.Unlock()
	if hit {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	f.mu.Lock()
	if len(f.ok) >= maxCached {
		clear(f.ok)
	}
	f.ok[key] = struct{}{}
	f.mu.Unlock()
	return true
}

// Exists reports whether the file (as reloaded now) has user: a bearer
// token of a user removed from the file stops working at once.
func (f *File) Exists(user string) bool {
	_, found := f.w.Get()[user]
	return found
}
