package gateway

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"strings"
	"time"
)

//go:embed site
var builtinSite embed.FS

// BuiltinSite is the small static site served when no decoy is configured.
func BuiltinSite() fs.FS {
	sub, err := fs.Sub(builtinSite, "site")
	if err != nil {
		panic(err) // the embed directive guarantees the folder exists
	}
	return sub
}

// SiteHandler serves a static site the way an ordinary web server does:
// index.html for folders, Range and conditional requests through
// http.FileServer, and the site's own 404.html (when it has one) with status
// 404 for anything missing, folders without an index included (no listings).
// It sets no header that names the software.
func SiteHandler(site fs.FS) http.Handler {
	files := http.FileServerFS(site)
	notFound, _ := fs.ReadFile(site, "404.html")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "."
		}
		st, err := fs.Stat(site, name)
		if err == nil && st.IsDir() {
			_, err = fs.Stat(site, path.Join(name, "index.html"))
		}
		if err != nil || name == "404.html" {
			if notFound == nil {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			if r.Method != http.MethodHead {
				w.Write(notFound)
			}
			return
		}
		files.ServeHTTP(w, r)
	})
}

// DirSite checks that dir is a readable folder and returns it as a site.
func DirSite(dir string) (fs.FS, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("decoy: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("decoy: %s is not a folder", dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("decoy: %w", err)
	}
	_, err = f.Readdirnames(1)
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decoy: read %s: %w", dir, err)
	}
	return os.DirFS(dir), nil
}

// ProxySite forwards every request to upstream, an http or https URL, as a
// reverse proxy would; the upstream's answers pass through unchanged.
func ProxySite(upstream string) (http.Handler, error) {
	u, err := url.Parse(upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("decoy: upstream %q: want an http:// or https:// URL", upstream)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	return rp, nil
}

// siteReadDeadline bounds how long a request to the site may take to send
// its body (net/http's ReadHeaderTimeout covers only the header, and the
// server has no ReadTimeout, which would cut tunnels on HTTP/2 routes):
// the deadline holds for the handler and for net/http's own draining of an
// unread body afterwards, so a slowloris trickling a body ends at d. The
// next request on the connection gets a fresh header timeout.
func siteReadDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		h.ServeHTTP(w, r)
	})
}
