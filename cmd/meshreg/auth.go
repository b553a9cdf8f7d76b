package main

import (
	"errors"
	"log/slog"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/htpasswd"
	"github.com/meshreg/meshreg/api/auth/policy"
	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/api/ratelimit"
)

// authGuard opens the --auth-htpasswd and --auth-policy files and sets up
// the token service (nil, nil, nil when authentication is off). Every later
// change of either file is an audit line in log (nil: not logged, as in
// `serve --check`): applied, or rejected with the error (the last good
// contents stay in effect). keys reads the cluster's token signing keys
// (Node.TokenKeys; nil: none, as in `serve --check`).
//
// With --auth-htpasswd the node is its own token service (and takes Basic
// credentials too); with --auth-token-rootcertbundle it accepts an
// external issuer's tokens, with or without users of its own.
func authGuard(cfg serveConfig, log *slog.Logger, keys func() ([]byte, error)) (*auth.Guard, api.TokenService, error) {
	if cfg.AuthHtpasswd == "" {
		switch {
		case cfg.AuthPolicy != "":
			return nil, nil, errors.New("--auth-policy needs --auth-htpasswd: the policy names users, and the htpasswd file says who they are")
		case cfg.TokenRootCertBundle == "" && (cfg.TokenIssuer != "" || cfg.TokenRealm != "" || cfg.TokenService != ""):
			return nil, nil, errors.New("--auth-token-issuer, --auth-token-realm and --auth-token-service need --auth-htpasswd (this node issues tokens) or --auth-token-rootcertbundle (an external issuer does)")
		case cfg.TokenRootCertBundle != "" && cfg.TokenRealm == "":
			return nil, nil, errors.New("--auth-token-rootcertbundle without --auth-htpasswd needs --auth-token-realm: the external token server's URL, where clients get tokens")
		case cfg.TokenRootCertBundle == "":
			return nil, nil, nil
		}
	}
	if cfg.TokenIssuer != "" && cfg.TokenRootCertBundle == "" {
		return nil, nil, errors.New("--auth-token-issuer needs --auth-token-rootcertbundle: the certificates whose keys sign that issuer's tokens")
	}
	tcfg := token.Config{Service: cfg.TokenService, Realm: cfg.TokenRealm, TTL: cfg.Node.TokenTTL}
	if cfg.TokenRootCertBundle != "" {
		ext, err := token.LoadExternal(cfg.TokenIssuer, cfg.TokenRootCertBundle)
		if err != nil {
			return nil, nil, err
		}
		tcfg.External = ext
	}
	var (
		users *htpasswd.File
		basic *auth.Basic
		base  = auth.AuthenticatedOnly
	)
	if cfg.AuthHtpasswd != "" {
		var err error
		if users, err = htpasswd.Open(cfg.AuthHtpasswd, api.AuditReload(log, "--auth-htpasswd", cfg.AuthHtpasswd)); err != nil {
			return nil, nil, err
		}
		basic = &auth.Basic{Users: users}
	}
	if cfg.AuthPolicy != "" {
		p, err := policy.Open(cfg.AuthPolicy, api.AuditReload(log, "--auth-policy", cfg.AuthPolicy))
		if err != nil {
			return nil, nil, err
		}
		base = p
	}
	if keys == nil {
		keys = func() ([]byte, error) { return nil, nil }
	}
	var tu token.Users
	if users != nil {
		tu = users
	}
	svc, err := token.New(tcfg, token.NewKeys(keys), tu, base)
	if err != nil {
		return nil, nil, err
	}
	g := &auth.Guard{Authn: &token.Authenticator{Service: svc, Basic: basic}, Authz: auth.Scoped(base)}
	if users == nil {
		return g, nil, nil // an external issuer's tokens only
	}
	return g, svc, nil
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
