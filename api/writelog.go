package api

import (
	"log/slog"
	"net"
	"net/http"
)

// logWrite writes the one INFO line of a write the registry accepted (a
// manifest push, a blob upload committed or mounted, a delete): what
// changed, in which repository, and which client asked. It is called once
// per request, after the registry acknowledged the write, so chunks and
// refused requests leave no line; failures are logged by writeError.
func (h *Handler) logWrite(r *http.Request, msg, repo string, attrs ...slog.Attr) {
	all := make([]slog.Attr, 0, len(attrs)+2)
	all = append(all, slog.String("repository", repo))
	all = append(all, attrs...)
	all = append(all, slog.String("client", clientAddr(r)))
	h.log.LogAttrs(r.Context(), slog.LevelInfo, msg, all...)
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
