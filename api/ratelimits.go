package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/api/ratelimit"
)

// RateLimiter charges a request to its client's bucket (user when
// authenticated, else the client address) and its repository's ("" for
// none), and returns the limit that refused it, or nil. It is called
// concurrently. *ratelimit.Limiter is one.
type RateLimiter interface {
	Allow(client, user, repo string) *ratelimit.Refusal
}

var _ RateLimiter = (*ratelimit.Limiter)(nil)

// rateLimit is the one rate check of a /v2/ request, called by dispatch
// right after the access check (so the user is known); the repository is
// charged only when the request was allowed in. Over a limit, the answer
// is 429 TOOMANYREQUESTS with Retry-After in whole seconds.
func (h *Handler) rateLimit(w http.ResponseWriter, r *http.Request, rt route, allowed bool) error {
	repo := rt.name
	if !allowed || rt.kind == routeBase || rt.kind == routeCatalog {
		repo = ""
	}
	ref := h.cfg.RateLimits.Allow(ClientFromContext(r.Context()), identityFrom(r.Context()).User, repo)
	if ref == nil {
		return nil
	}
	if h.metrics != nil {
		h.metrics.rateLimited.WithLabelValues(ref.Limit).Inc()
	}
	secs := int64((ref.RetryAfter + time.Second - 1) / time.Second)
	secs = max(secs, 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	section := "clients"
	if ref.Limit == ratelimit.LimitRepository {
		section = "repositories"
	} else if identityFrom(r.Context()).User != "" {
		section = "clients or users"
	}
	return oci.Errorf(oci.TooManyRequests, "%s rate limit exceeded: %s may make %s (%s in --rate-limits); retry after %ds",
		ref.Limit, truncate(ref.Subject), ref.Rate, section, secs)
}
