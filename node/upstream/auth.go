package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

const (
	// maxTokenBody bounds a token endpoint's answer.
	maxTokenBody = 256 << 10
	// defaultTokenLifetime is used when expires_in is missing (the token
	// spec's default).
	defaultTokenLifetime = 60 * time.Second
	// maxTokenLifetime caps what a token endpoint may claim.
	maxTokenLifetime = 24 * time.Hour
	// maxTokens bounds the token cache (one per repository scope).
	maxTokens = 4096
)

type cachedToken struct {
	authz   string // "Bearer …"
	refresh time.Time
}

// cachedAuthorization is the Authorization value to send up front for
// scope: a cached, unexpired token, or Basic credentials when the upstream
// asked for Basic before.
func (r *Registry) cachedAuthorization(scope string) string {
	r.mu.Lock()
	t, ok := r.tokens[scope]
	basic := r.basic
	r.mu.Unlock()
	if ok && r.now().Before(t.refresh) {
		return t.authz
	}
	if basic {
		if u, p, ok := r.lookupCreds(); ok {
			return basicAuth(u, p)
		}
	}
	return ""
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// answerChallenge returns the Authorization to retry req with, after a 401
// carrying challenges. used is what the refused request carried.
func (r *Registry) answerChallenge(req *request, scope, used string, challenges []challenge) (string, error) {
	var bearer, basic *challenge
	for i := range challenges {
		switch challenges[i].Scheme {
		case "bearer":
			if bearer == nil {
				bearer = &challenges[i]
			}
		case "basic":
			if basic == nil {
				basic = &challenges[i]
			}
		}
	}
	switch {
	case bearer != nil:
		return r.bearerToken(req, scope, used, bearer.Params)
	case basic != nil:
		u, p, ok := r.lookupCreds()
		r.mu.Lock()
		r.basic = true
		r.mu.Unlock()
		if !ok {
			return "", r.newError(req, ErrUnauthorized, http.StatusUnauthorized, r.unauthorizedMessage(false, ""), nil)
		}
		authz := basicAuth(u, p)
		if authz == used {
			return "", r.newError(req, ErrUnauthorized, http.StatusUnauthorized, r.unauthorizedMessage(true, ""), nil)
		}
		return authz, nil
	default:
		return "", r.newError(req, ErrUnauthorized, http.StatusUnauthorized,
			fmt.Sprintf("upstream %s answered 401 without a Bearer or Basic challenge this client can answer: check the upstream URL and --upstream-credentials", r.name), nil)
	}
}

// bearerToken gets a token for the challenge (sharing one fetch among
// concurrent callers for the same scope) and caches it.
func (r *Registry) bearerToken(req *request, scope, used string, params map[string]string) (string, error) {
	realm, err := r.checkRealm(params["realm"])
	if err != nil {
		return "", r.newError(req, ErrBadResponse, http.StatusUnauthorized, err.Error(), nil)
	}
	wantScope := params["scope"]
	if wantScope == "" {
		wantScope = scope
	}
	service := params["service"]
	// Another caller may have refreshed the token while we were refused.
	r.mu.Lock()
	if t, ok := r.tokens[scope]; ok && t.authz != used && r.now().Before(t.refresh) {
		r.mu.Unlock()
		return t.authz, nil
	}
	r.mu.Unlock()
	key := realm.String() + "\x00" + service + "\x00" + wantScope
	v, err, _ := r.tokenFlight.Do(key, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.ctx), r.reqTimeout)
		defer cancel()
		t, err := r.fetchToken(ctx, req, realm, service, wantScope)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		if len(r.tokens) >= maxTokens {
			now := r.now()
			for k, old := range r.tokens {
				if !now.Before(old.refresh) {
					delete(r.tokens, k)
				}
			}
			if len(r.tokens) >= maxTokens {
				clear(r.tokens)
			}
		}
		r.tokens[scope] = t
		r.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return "", err
	}
	return v.(cachedToken).authz, nil
}

// checkRealm accepts only an absolute http(s) realm, and no plain-http
// realm for an https upstream (credentials would leave in clear text).
func (r *Registry) checkRealm(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("upstream %s sent a Bearer challenge without a realm", r.name)
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return nil, fmt.Errorf("upstream %s sent a Bearer challenge with an unusable realm (must be an http(s) URL)", r.name)
	}
	if u.Scheme == "http" && r.base.Scheme == "https" {
		return nil, fmt.Errorf("upstream %s sent a Bearer realm over plain http for an https registry; refused", r.name)
	}
	return u, nil
}

// fetchToken asks the realm for a token (GET with service and scope; Basic
// credentials when the store has them, anonymous otherwise).
func (r *Registry) fetchToken(ctx context.Context, req *request, realm *url.URL, service, scope string) (cachedToken, error) {
	treq := &request{op: "token", repo: req.repo, ref: req.ref}
	u := *realm
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	q.Set("scope", scope)
	u.RawQuery = q.Encode()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return cachedToken{}, r.newError(treq, ErrBadResponse, 0, "cannot build the token request", err)
	}
	hr.Header.Set("User-Agent", "meshreg-mirror")
	user, pass, haveCreds := r.lookupCreds()
	if haveCreds {
		hr.SetBasicAuth(user, pass)
	}
	start := r.now()
	resp, err := r.client.Do(hr)
	if err != nil {
		r.obs.OnResponse("token", 0)
		return cachedToken{}, r.newError(treq, ErrUnavailable, 0, "cannot reach the token endpoint "+realm.Host, err)
	}
	defer resp.Body.Close()
	r.obs.OnResponse("token", resp.StatusCode)
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		_, msg := readErrorBody(resp)
		return cachedToken{}, r.newError(treq, ErrUnauthorized, resp.StatusCode, r.unauthorizedMessage(haveCreds, msg), nil)
	case resp.StatusCode == http.StatusTooManyRequests:
		e := r.newError(treq, ErrUnavailable, resp.StatusCode, "token endpoint rate-limited us", nil)
		e.RetryAfter = r.startBackoff(resp.Header, true)
		return cachedToken{}, e
	case resp.StatusCode >= 500:
		return cachedToken{}, r.newError(treq, ErrUnavailable, resp.StatusCode, "token endpoint failed", nil)
	case resp.StatusCode != http.StatusOK:
		return cachedToken{}, r.newError(treq, ErrBadResponse, resp.StatusCode, "token endpoint answered an unexpected status", nil)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return cachedToken{}, r.newError(treq, ErrUnavailable, resp.StatusCode, "reading the token", err)
	}
	if len(data) > maxTokenBody {
		return cachedToken{}, r.newError(treq, ErrBadResponse, resp.StatusCode, fmt.Sprintf("token response larger than %d bytes", maxTokenBody), nil)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return cachedToken{}, r.newError(treq, ErrBadResponse, resp.StatusCode, "token response is not JSON", nil)
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" || !printable(tok) {
		return cachedToken{}, r.newError(treq, ErrBadResponse, resp.StatusCode, "token response holds no usable token", nil)
	}
	life := defaultTokenLifetime
	switch {
	case body.ExpiresIn > int64(maxTokenLifetime/time.Second):
		life = maxTokenLifetime
	case body.ExpiresIn > 0:
		life = time.Duration(body.ExpiresIn) * time.Second
	}
	// Refresh a little early: 10% of the lifetime, at most 30 s.
	early := min(life/10, 30*time.Second)
	return cachedToken{authz: "Bearer " + tok, refresh: start.Add(life - early)}, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
