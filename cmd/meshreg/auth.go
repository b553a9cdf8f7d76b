package main

import (
	"errors"
	"log/slog"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/htpasswd"
	"github.com/meshreg/meshreg/api/auth/policy"
	"github.com/meshreg/meshreg/api/ratelimit"
)

// authGuard opens the --auth-htpasswd and --auth-policy files (nil, nil
// when authentication is off). Every later change of either file is an
// audit line in log (nil: not logged, as in `serve --check`): applied, or
// rejected with the error (the last good contents stay in effect).
func authGuard(cfg serveConfig, log *slog.Logger) (*auth.Guard, error) {
	if cfg.AuthHtpasswd == "" {
		if cfg.AuthPolicy != "" {
			return nil, errors.New("--auth-policy needs --auth-htpasswd: the policy names users, and the htpasswd file says who they are")
		}
		return nil, nil
	}
	users, err := htpasswd.Open(cfg.AuthHtpasswd, api.AuditReload(log, "--auth-htpasswd", cfg.AuthHtpasswd))
	if err != nil {
		return nil, err
	}
	g := &auth.Guard{Authn: &auth.Basic{Users: users}, Authz: auth.AuthenticatedOnly}
	if cfg.AuthPolicy != "" {
		p, err := policy.Open(cfg.AuthPolicy, api.AuditReload(log, "--auth-policy", cfg.AuthPolicy))
		if err != nil {
			return nil, err
		}
		g.Authz = p
	}
	return g, nil
}

// rateLimiter opens the --rate-limits file (nil, nil without one). Each
// reload is an audit line on log (nil: not logged); a file that changes
// into something invalid keeps the last good limits.
//
// The limits have a file of their own rather than a section of the
// --auth-policy: they apply with authentication off too (anonymous
// clients by address), and they are capacity tuning for the node's
// operator, not grants of access.
func rateLimiter(cfg serveConfig, log *slog.Logger) (api.RateLimiter, error) {
	if cfg.RateLimits == "" {
		return nil, nil
	}
	l, err := ratelimit.Open(cfg.RateLimits, api.AuditReload(log, "--rate-limits", cfg.RateLimits))
	if err != nil {
		return nil, err
	}
	return l, nil
}
