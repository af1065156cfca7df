package gateway

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
)

// errTooManyFiles is the accept error worth waiting out rather than dying of.
var errTooManyFiles = syscall.EMFILE

type tlsStateKey struct{}

// tlsStateContext is the HTTP server's ConnContext: it keeps the TLS state
// of the front door's wrapped conns, which net/http cannot see itself.
func tlsStateContext(ctx context.Context, c net.Conn) context.Context {
	if cs, ok := c.(interface{ frontTLSState() *tls.ConnectionState }); ok {
		if st := cs.frontTLSState(); st != nil {
			return context.WithValue(ctx, tlsStateKey{}, st)
		}
	}
	return ctx
}

// withTLSState restores r.TLS for handlers behind the front door, so that
// they see an HTTPS request as one.
func withTLSState(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = st
			}
		}
		next.ServeHTTP(w, r)
	})
}

// slogErrorLog sends net/http's own error lines (bad requests from probers,
// mostly) to the debug level, where they do not drown the tunnel log.
func slogErrorLog(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("http server", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

// RedirectHandler answers plain-HTTP requests with a permanent redirect to
// the same URL over https. The port is dropped when httpsPort is 443.
func RedirectHandler(httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if httpsPort != "" && httpsPort != "443" {
			host += ":" + httpsPort
		}
		target := "https://" + host + r.URL.RequestURI()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			http.Redirect(w, r, target, http.StatusMovedPermanently)
			return
		}
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
	})
}
