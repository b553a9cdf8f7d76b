package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

type pwTable map[string]string

func (p pwTable) Verify(user, password string) bool { pw, ok := p[user]; return ok && pw == password }

func TestBasic(t *testing.T) {
	b := &Basic{Users: pwTable{"alice": "pw"}}
	cases := []struct {
		name, header string
		want         Identity
		bad          bool
	}{
		{"none", "", Anonymous, false},
		{"good", "Basic YWxpY2U6cHc=", Identity{User: "alice"}, false}, // alice:pw
		{"wrong", "Basic YWxpY2U6eHg=", Anonymous, true},               // alice:xx
		{"empty user", "Basic OnB3", Anonymous, true},                  // :pw
		{"not base64", "Basic !!!", Anonymous, true},
		{"bearer", "Bearer abc", Anonymous, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
			if c.header != "" {
				r.Header.Set("Authorization", c.header)
			}
			id, err := b.Authenticate(r)
			if id != c.want || (err != nil) != c.bad {
				t.Fatalf("Authenticate = %v, %v; want %v, bad credentials %v", id, err, c.want, c.bad)
			}
		})
	}
	if got := b.Challenge(); got != `Basic realm="meshreg"` {
		t.Errorf("Challenge = %q", got)
	}
}
