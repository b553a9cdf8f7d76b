package upstream

import (
	"net/http"
	"strings"
)

// challenge is one parsed WWW-Authenticate challenge.
type challenge struct {
	Scheme string            // lower case: "bearer", "basic"
	Params map[string]string // keys lower case
}

const (
	// maxChallengeBytes bounds the WWW-Authenticate text parsed per response.
	maxChallengeBytes = 8 << 10
	// maxChallengeParams bounds the parameters kept per challenge.
	maxChallengeParams = 16
)

// parseChallenges reads every challenge in the WWW-Authenticate headers of
// h (RFC 7235: `Bearer realm="…",service="…",scope="a,b"`; several
// challenges may share one header). Quoted values may hold commas and
// backslash escapes. It never panics: malformed text ends the parse with
// what was read so far.
func parseChallenges(h http.Header) []challenge {
	var out []challenge
	budget := maxChallengeBytes
	for _, v := range h.Values("WWW-Authenticate") {
		if len(v) > budget {
			v = v[:budget]
		}
		budget -= len(v)
		out = append(out, parseChallengeHeader(v)...)
		if budget <= 0 {
			break
		}
	}
	return out
}

func parseChallengeHeader(s string) []challenge {
	var out []challenge
	p := &lexer{s: s}
	for {
		p.skipSpaceAndCommas()
		if p.done() {
			return out
		}
		scheme := p.token()
		if scheme == "" { // not a token: give up on the rest
			return out
		}
		c := challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
		// Parameters until the next scheme (a token followed by a space or
		// the end, not by '=').
		for {
			p.skipSpace()
			save := p.i
			p.skipSpaceAndCommas()
			if p.done() {
				break
			}
			key := p.token()
			if key == "" {
				// token68 or junk: skip to the next comma
				p.skipUntilComma()
				continue
			}
			p.skipSpace()
			if !p.consume('=') {
				// a new challenge starts here
				p.i = save
				break
			}
			p.skipSpace()
			var val string
			if p.peek() == '"' {
				var ok bool
				val, ok = p.quoted()
				if !ok {
					return append(out, c) // unterminated quote
				}
			} else {
				val = p.token68()
			}
			if len(c.Params) < maxChallengeParams {
				k := strings.ToLower(key)
				if _, dup := c.Params[k]; !dup {
					c.Params[k] = val
				}
			}
		}
		out = append(out, c)
	}
}

type lexer struct {
	s string
	i int
}

func (p *lexer) done() bool { return p.i >= len(p.s) }

func (p *lexer) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *lexer) consume(b byte) bool {
	if p.peek() == b && !p.done() {
		p.i++
		return true
	}
	return false
}

func (p *lexer) skipSpace() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *lexer) skipSpaceAndCommas() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

func (p *lexer) skipUntilComma() {
	for !p.done() && p.s[p.i] != ',' {
		if p.s[p.i] == '"' {
			if _, ok := p.quoted(); !ok {
				return
			}
			continue
		}
		p.i++
	}
}

// token reads an RFC 7230 token.
func (p *lexer) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// token68 reads an unquoted parameter value (token chars plus '/', '=' and
// the like, up to a comma or space).
func (p *lexer) token68() string {
	start := p.i
	for !p.done() && p.s[p.i] != ',' && p.s[p.i] != ' ' && p.s[p.i] != '\t' && p.s[p.i] != '"' {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted-string starting at '"'; ok is false when it is not
// terminated.
func (p *lexer) quoted() (string, bool) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		switch c {
		case '\\':
			if p.i+1 >= len(p.s) {
				p.i = len(p.s)
				return "", false
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case '"':
			p.i++
			return b.String(), true
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return "", false
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
