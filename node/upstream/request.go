package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// OCI name and tag grammar (distribution-spec).
var (
	repoRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

const maxRepoLen = 255

// request is one logical call (it may be sent twice: before and after the
// auth challenge).
type request struct {
	op, method, repo, ref string
	path                  string      // under /v2/
	header                http.Header // extra headers (Accept, Range)
	ctx                   context.Context
}

// newError builds an *Error for req.
func (r *Registry) newError(req *request, kind error, status int, msg string, cause error) *Error {
	return &Error{Upstream: r.name, Op: req.op, Repo: req.repo, Ref: req.ref, Status: status, Message: msg, kind: kind, cause: cause}
}

func (r *Registry) checkRepoRef(op, repo, ref string, refIsDigest bool) error {
	req := &request{op: op, repo: repo, ref: ref}
	if len(repo) > maxRepoLen || !repoRE.MatchString(repo) {
		return r.newError(req, ErrInvalidRequest, 0, "repository name is not a valid OCI name", nil)
	}
	if ref == "" {
		return r.newError(req, ErrInvalidRequest, 0, "empty reference", nil)
	}
	if _, err := digest.Parse(ref); err == nil {
		return nil
	}
	if refIsDigest || !tagRE.MatchString(ref) {
		return r.newError(req, ErrInvalidRequest, 0, "reference is neither a valid tag nor a valid digest", nil)
	}
	return nil
}

// backoffError returns ErrUnavailable while a 429 backoff is in effect.
func (r *Registry) backoffError(req *request) error {
	r.mu.Lock()
	until := r.status.BackoffUntil
	r.mu.Unlock()
	now := r.now()
	if now.Before(until) {
		e := r.newError(req, ErrUnavailable, 0,
			fmt.Sprintf("backing off after the upstream rate-limited us (until %s)", until.UTC().Format(time.RFC3339)), nil)
		e.RetryAfter = until.Sub(now)
		return e
	}
	return nil
}

// do sends req with the credentials or token it needs, answering one auth
// challenge, and returns a response with a 2xx status (the caller owns its
// body) or an *Error. cancel must be called when the body is done.
func (r *Registry) do(req *request) (*http.Response, error) {
	if err := r.backoffError(req); err != nil {
		return nil, err
	}
	scope := "repository:" + req.repo + ":pull"
	authz := r.cachedAuthorization(scope)
	resp, err := r.send(req, authz)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		challenges := parseChallenges(resp.Header)
		drain(resp)
		authz, err = r.answerChallenge(req, scope, authz, challenges)
		if err != nil {
			r.recordError(err)
			return nil, err
		}
		resp, err = r.send(req, authz)
		if err != nil {
			return nil, err
		}
	}
	if err := r.check(req, resp, authz != ""); err != nil {
		return nil, err
	}
	r.recordSuccess()
	return resp, nil
}

// send makes one HTTP request; a network error is an ErrUnavailable.
func (r *Registry) send(req *request, authz string) (*http.Response, error) {
	u := *r.base
	u.Path = r.base.Path + "/v2/" + req.path
	u.RawPath = ""
	hr, err := http.NewRequestWithContext(req.ctx, req.method, u.String(), nil)
	if err != nil {
		return nil, r.newError(req, ErrInvalidRequest, 0, "cannot build the request", err)
	}
	for k, vs := range req.header {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	hr.Header.Set("User-Agent", "meshreg-mirror")
	if authz != "" {
		hr.Header.Set("Authorization", authz)
	}
	resp, err := r.client.Do(hr)
	if err != nil {
		r.obs.OnResponse(req.op, 0)
		if errors.Is(err, context.Canceled) {
			// The caller gave up: not the upstream's failure, so not in
			// Status; errors.Is(err, context.Canceled) still holds.
			return nil, r.newError(req, ErrUnavailable, 0, "request canceled", err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			e := r.newError(req, ErrUnavailable, 0, "no answer in time", err)
			r.recordError(e)
			return nil, e
		}
		e := r.newError(req, ErrUnavailable, 0, "cannot reach the upstream", err)
		r.recordError(e)
		return nil, e
	}
	r.obs.OnResponse(req.op, resp.StatusCode)
	r.readRateLimit(resp.Header)
	return resp, nil
}

// check maps a non-2xx response to an *Error (and closes its body).
func (r *Registry) check(req *request, resp *http.Response, authenticated bool) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	code, msg := readErrorBody(resp)
	e := r.newError(req, nil, resp.StatusCode, msg, nil)
	e.Code = code
	switch {
	case resp.StatusCode == http.StatusNotFound ||
		code == "MANIFEST_UNKNOWN" || code == "BLOB_UNKNOWN" || code == "NAME_UNKNOWN":
		e.kind = ErrNotFound
		r.recordSuccess() // the upstream is up and answered
		return e
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		e.kind = ErrUnauthorized
		e.Message = r.unauthorizedMessage(authenticated, msg)
	case resp.StatusCode == http.StatusTooManyRequests:
		e.kind = ErrUnavailable
		e.RetryAfter = r.startBackoff(resp.Header, true)
		e.Message = fmt.Sprintf("rate-limited; backing off for %s", e.RetryAfter)
	case resp.StatusCode >= 500:
		e.kind = ErrUnavailable
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
			e.RetryAfter = r.startBackoff(resp.Header, false)
		}
	default:
		e.kind = ErrBadResponse
	}
	r.recordError(e)
	return e
}

func (r *Registry) unauthorizedMessage(authenticated bool, detail string) string {
	_, _, have := r.lookupCreds()
	var m string
	switch {
	case have:
		m = fmt.Sprintf("upstream %s refused the credentials for it: check --upstream-credentials", r.name)
	default:
		m = fmt.Sprintf("upstream %s requires credentials for this repository (or it does not exist) and none are configured for %q: add them to the --upstream-credentials file", r.name, r.name)
	}
	if detail != "" {
		m += " (upstream said: " + detail + ")"
	}
	return m
}

func (r *Registry) lookupCreds() (string, string, bool) {
	if r.creds == nil {
		return "", "", false
	}
	return r.creds.Lookup(r.name)
}

// readErrorBody reads an OCI error body ({"errors":[{"code","message"}]}),
// bounded, and closes it. The message is cut to a printable length.
func readErrorBody(resp *http.Response) (code, msg string) {
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(data, &body) == nil && len(body.Errors) > 0 {
		return clip(body.Errors[0].Code, 64), clip(body.Errors[0].Message, 256)
	}
	return "", ""
}

// clip bounds a string from the upstream and drops control characters.
func clip(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// drain reads a little of a body we do not need, so the connection can be
// reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
}

// Rate limits and backoff.

const (
	defaultBackoff = 30 * time.Second
	maxBackoff     = 15 * time.Minute
)

// readRateLimit records Docker Hub's ratelimit-limit/-remaining headers
// ("100;w=21600").
func (r *Registry) readRateLimit(h http.Header) {
	limit, okL := parseRateLimit(h.Get("Ratelimit-Limit"))
	remaining, okR := parseRateLimit(h.Get("Ratelimit-Remaining"))
	if !okL && !okR {
		return
	}
	r.mu.Lock()
	if okL {
		r.status.RateLimit = limit
	}
	if okR {
		r.status.RateRemaining = remaining
	}
	r.mu.Unlock()
}

func parseRateLimit(v string) (int, bool) {
	if v == "" {
		return 0, false
	}
	v, _, _ = strings.Cut(v, ";")
	v, _, _ = strings.Cut(v, ",")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > 1<<30 {
		return 0, false
	}
	return n, true
}

// startBackoff sets the backoff from Retry-After (seconds or an HTTP
// date; defaultBackoff when absent or unreadable if always; bounded by
// maxBackoff) and returns its length.
func (r *Registry) startBackoff(h http.Header, always bool) time.Duration {
	now := r.now()
	d, ok := parseRetryAfter(h.Get("Retry-After"), now)
	if !ok {
		if !always {
			return 0
		}
		d = defaultBackoff
	}
	d = min(max(d, time.Second), maxBackoff)
	until := now.Add(d)
	r.mu.Lock()
	if until.After(r.status.BackoffUntil) {
		r.status.BackoffUntil = until
	}
	r.mu.Unlock()
	r.log.Warn("upstream rate limit: backing off", "for", d, "until", until.UTC().Format(time.RFC3339))
	return d
}

func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(maxBackoff/time.Second) {
			return maxBackoff, true
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(now), true
	}
	return 0, false
}

// pathFor builds "<repo>/<kind>/<ref>" with each segment escaped (the
// repository and reference were validated already).
func pathFor(repo, kind, ref string) string {
	segs := strings.Split(repo, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/") + "/" + kind + "/" + url.PathEscape(ref)
}
