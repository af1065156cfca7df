package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSiteHandler(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<h1>home</h1>"), 0o644)
	os.WriteFile(filepath.Join(dir, "404.html"), []byte("custom missing"), 0o644)
	os.WriteFile(filepath.Join(dir, "big.txt"), []byte(strings.Repeat("0123456789", 100)), 0o644)
	os.Mkdir(filepath.Join(dir, "empty"), 0o755)
	site, err := DirSite(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(SiteHandler(site))
	defer srv.Close()

	tests := []struct {
		method, path, rng string
		status            int
		body              string
	}{
		{"GET", "/", "", 200, "<h1>home</h1>"},
		{"GET", "/index.html", "", 301, ""}, // FileServer's canonical redirect, as Go sites do
		{"GET", "/nope", "", 404, "custom missing"},
		{"GET", "/empty/", "", 404, "custom missing"}, // no directory listings
		{"GET", "/404.html", "", 404, "custom missing"},
		{"GET", "/../../etc/passwd", "", 404, "custom missing"},
		{"HEAD", "/nope", "", 404, ""},
		{"HEAD", "/big.txt", "", 200, ""},
		{"GET", "/big.txt", "bytes=10-19", 206, "0123456789"},
		{"POST", "/", "", 405, "405 method not allowed\n"},
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if tt.rng != "" {
			req.Header.Set("Range", tt.rng)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || (tt.body != "" && string(body) != tt.body) {
			t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.path, resp.StatusCode, body, tt.status, tt.body)
		}
		if tt.method == "HEAD" && len(body) != 0 {
			t.Errorf("HEAD %s sent a body", tt.path)
		}
		for k := range resp.Header {
			if k == "Server" || k == "X-Powered-By" {
				t.Errorf("%s %s: header %s names the software", tt.method, tt.path, k)
			}
		}
	}
}

func TestDirSiteErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	for _, dir := range []string{f, filepath.Join(f, "missing")} {
		if _, err := DirSite(dir); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("DirSite(%s) = %v", dir, err)
		}
	}
}

func TestProxySite(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", "yes")
		io.WriteString(w, "upstream saw "+r.Host+r.URL.RequestURI())
	}))
	defer upstream.Close()
	h, err := ProxySite(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/a/b?c=d")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "upstream saw " + strings.TrimPrefix(upstream.URL, "http://") + "/a/b?c=d"
	if string(body) != want || resp.Header.Get("X-Upstream") != "yes" {
		t.Fatalf("proxied answer %q (header %q), want %q", body, resp.Header.Get("X-Upstream"), want)
	}
	for _, bad := range []string{"ftp://x", "example.com", "http://"} {
		if _, err := ProxySite(bad); err == nil {
			t.Errorf("ProxySite(%q) accepted", bad)
		}
	}
}
