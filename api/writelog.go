package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"

	"github.com/meshreg/meshreg/api/auth"
)

// The audit log is ordinary INFO lines of the node's logger that carry
// audit=true: one per push, delete, refused write, admin action (done or
// refused) and access file reload, written by the node that served it.
// Every line names who (user, "anonymous" without credentials), from
// where (client: the TCP peer's address; no node forwards a client's
// write to another, and X-Forwarded-For is the client's say, so it is not
// used), what (the message, repository, reference or digest, size) and
// the result (ok, denied with the error code, or error).

// audit writes one audit line.
func audit(ctx context.Context, log *slog.Logger, msg string, attrs ...slog.Attr) {
	auditAt(ctx, log, slog.LevelInfo, msg, attrs...)
}

// auditAt is audit at another level: a rejected access file is a WARN, since
// the operator's change did not take effect.
func auditAt(ctx context.Context, log *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	log.LogAttrs(ctx, level, msg, append([]slog.Attr{slog.Bool("audit", true)}, attrs...)...)
}

// logWrite writes the one INFO audit line of a write the registry
// accepted (a manifest push, a blob upload committed or mounted, a
// delete): what changed, in which repository, and which client and user
// asked. It is called once per request, after the registry acknowledged
// the write, so chunks and refused requests leave no line; refusals are
// logged by logDenied, failures by writeError.
func (h *Handler) logWrite(r *http.Request, msg, repo string, attrs ...slog.Attr) {
	all := make([]slog.Attr, 0, len(attrs)+4)
	all = append(all, slog.String("user", identityFrom(r.Context()).String()), slog.String("repository", repo))
	all = append(all, attrs...)
	all = append(all, slog.String("client", clientAddr(r)), slog.String("result", "ok"))
	audit(r.Context(), h.log, msg, all...)
}

// logDenied writes the audit line of a write or admin request refused by
// the access check (a wrong password included: user is then the name the
// client claimed, or anonymous).
func (h *Handler) logDenied(r *http.Request, id auth.Identity, action auth.Action, attrs []slog.Attr, err error) {
	user := id.String()
	if claimed, _, ok := r.BasicAuth(); ok && id.IsAnonymous() && claimed != "" {
		user = truncate(claimed) + " (unauthenticated)"
	}
	all := make([]slog.Attr, 0, len(attrs)+5)
	all = append(all, slog.String("user", user), slog.String("action", string(action)))
	all = append(all, attrs...)
	all = append(all, slog.String("client", clientAddr(r)), slog.String("result", "denied"), slog.String("code", asOCIError(err).Code.Name))
	audit(r.Context(), h.log, string(action)+" denied", all...)
}

// AuditReload returns the callback of an access file (htpasswd or policy)
// that logs each reload to log as an audit line: applied, or rejected
// with the error (the last good contents stay in effect).
func AuditReload(log *slog.Logger, what, path string) func(error) {
	return func(err error) {
		if log == nil {
			return
		}
		attrs := []slog.Attr{slog.String("file", path)}
		if err != nil {
			auditAt(context.Background(), log, slog.LevelWarn, what+" reload rejected; the last good one stays in effect",
				append(attrs, slog.String("result", "error"), slog.String("err", err.Error()))...)
			return
		}
		audit(context.Background(), log, what+" reloaded", append(attrs, slog.String("result", "ok"))...)
	}
}

// clientAddr is the address a request came from, without its port (the
// per-client limits count by remoteClient, which masks IPv6 to a /64; the
// log names the host itself).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
