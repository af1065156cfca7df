package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure the handler New returns. The zero value of each field
// but Backend means the default.
type Options struct {
	// Backend is the running gateway; required.
	Backend Backend
	// Registry holds the metrics served at /metrics; nil = no /metrics.
	Registry *prometheus.Registry
	// Token is the bearer token every request must carry. Required unless
	// Unix is set; when set on a unix socket, it is required there too.
	Token string
	// Unix says the handler is served on a unix socket (see Listen), whose
	// file mode protects it: no token is needed.
	Unix bool
	// Log receives one debug line per request (method, path, status,
	// duration; never the token). nil = no logs.
	Log *slog.Logger
}

// maxBody bounds a request body.
const maxBody = 1 << 20

// New returns the API's handler. It fails when Backend is nil, or when the
// listener is TCP (Unix false) and Token is empty.
func New(opts Options) (http.Handler, error) {
	if opts.Backend == nil {
		return nil, errors.New("admin: no backend")
	}
	if !opts.Unix && opts.Token == "" {
		return nil, errors.New("admin: a token is required on a TCP listener (set admin.token or admin.tokenFile, or listen on unix:/path)")
	}
	if strings.ContainsAny(opts.Token, " \t\r\n") {
		return nil, errors.New("admin: the token must not contain spaces or line breaks")
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &api{b: opts.Backend}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/inbounds", a.inbounds)
	mux.HandleFunc("GET /v1/inbounds/{tag}/users", a.users)
	mux.HandleFunc("POST /v1/inbounds/{tag}/users", a.addUser)
	mux.HandleFunc("DELETE /v1/inbounds/{tag}/users/{email}", a.removeUser)
	mux.HandleFunc("GET /v1/stats", a.stats)
	mux.HandleFunc("POST /v1/stats/reset", a.resetStats)
	mux.HandleFunc("POST /v1/reload", a.reload)
	if opts.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
			ErrorLog:      slogPrinter{log},
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	var h http.Handler = jsonMisses(mux)
	if opts.Token != "" {
		h = requireToken(opts.Token, h)
	}
	return logRequests(log, h), nil
}

type api struct{ b Backend }

// jsonMisses answers requests no pattern matches in JSON like the rest:
// 404 for a wrong path, 405 (with Allow) for a wrong method.
func jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		miss := &missWriter{header: http.Header{}}
		mux.ServeHTTP(miss, r)
		if allow := miss.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		switch miss.status {
		case http.StatusMethodNotAllowed:
			writeError(w, miss.status, "method "+r.Method+" not allowed on "+r.URL.Path)
		case http.StatusNotFound, 0:
			writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
		default: // a redirect to the cleaned path
			for k, v := range miss.header {
				w.Header()[k] = v
			}
			w.WriteHeader(miss.status)
		}
	})
}

// missWriter records what the mux answers to a request no pattern matches.
type missWriter struct {
	header http.Header
	status int
}

func (m *missWriter) Header() http.Header         { return m.header }
func (m *missWriter) Write(b []byte) (int, error) { return len(b), nil }
func (m *missWriter) WriteHeader(code int)        { m.status = code }

func (a *api) inbounds(w http.ResponseWriter, r *http.Request) {
	ins := a.b.Inbounds()
	if ins == nil {
		ins = []Inbound{}
	}
	writeJSON(w, http.StatusOK, ins)
}

func (a *api) users(w http.ResponseWriter, r *http.Request) {
	tag := r.PathValue("tag")
	us, err := a.b.Users(tag)
	if err != nil {
		writeBackendError(w, err, tag, "", http.StatusInternalServerError)
		return
	}
	if us == nil {
		us = []User{}
	}
	writeJSON(w, http.StatusOK, us)
}

func (a *api) addUser(w http.ResponseWriter, r *http.Request) {
	tag := r.PathValue("tag")
	var u User
	if err := decodeBody(w, r, &u); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if strings.TrimSpace(u.Email) == "" {
		writeError(w, http.StatusBadRequest, "email: required (the user's name, unique in the inbound)")
		return
	}
	if u.Quota < 0 {
		writeError(w, http.StatusBadRequest, "quota: must not be negative")
		return
	}
	if u.AlterID < 0 {
		writeError(w, http.StatusBadRequest, "alterId: must not be negative")
		return
	}
	stored, err := a.b.AddUser(tag, u)
	if err != nil {
		writeBackendError(w, err, tag, u.Email, http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusCreated, stored)
}

func (a *api) removeUser(w http.ResponseWriter, r *http.Request) {
	tag, email := r.PathValue("tag"), r.PathValue("email")
	if err := a.b.RemoveUser(tag, email); err != nil {
		writeBackendError(w, err, tag, email, http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, normStats(a.b.Stats()))
}

func (a *api) resetStats(w http.ResponseWriter, r *http.Request) {
	if err := noBody(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, normStats(a.b.ResetStats(r.URL.Query().Get("user"))))
}

func (a *api) reload(w http.ResponseWriter, r *http.Request) {
	if err := noBody(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.b.Reload(); err != nil {
		status := http.StatusInternalServerError
		var ce *ConfigError
		if errors.As(err, &ce) {
			status = http.StatusBadRequest
		}
		writeError(w, status, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// normStats makes nil maps empty objects, so clients always get both keys.
func normStats(s Stats) Stats {
	if s.Users == nil {
		s.Users = map[string]Counters{}
	}
	if s.Inbounds == nil {
		s.Inbounds = map[string]Counters{}
	}
	return s
}

// decodeBody reads one JSON object into v, refusing unknown fields,
// trailing data and bodies over maxBody.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return errors.New("request body: empty, want a JSON object")
		case errors.As(err, &mbe):
			return fmt.Errorf("request body: over %d bytes", maxBody)
		}
		return fmt.Errorf("request body: %v", err)
	}
	if dec.More() {
		return errors.New("request body: data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("request body: data after the JSON object")
	}
	return nil
}

// noBody refuses a body on endpoints that take none (so a misdirected
// request is not silently half-understood).
func noBody(r *http.Request) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1))
	if err == nil && len(b) > 0 {
		return errors.New("request body: this endpoint takes none")
	}
	return nil
}

// writeBackendError maps a Backend error to its status and a one-line
// message naming the inbound and user; other is the status of any other
// error.
func writeBackendError(w http.ResponseWriter, err error, tag, email string, other int) {
	switch {
	case errors.Is(err, ErrNoInbound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such inbound %q", tag))
	case errors.Is(err, ErrNoUser):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user %q in inbound %q", email, tag))
	case errors.Is(err, ErrExists):
		writeError(w, http.StatusConflict, fmt.Sprintf("user %q exists in inbound %q", email, tag))
	default:
		writeError(w, other, err.Error())
	}
}

type errorBody struct {
	Error string `json:"error"`
}

// writeError answers {"error": msg} with msg on one line.
func writeError(w http.ResponseWriter, status int, msg string) {
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
	b, _ := json.Marshal(errorBody{msg})
	writeRaw(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{"encoding the answer: " + err.Error()})
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// requireToken answers 401 unless the request carries "Authorization:
// Bearer <token>". The comparison is of SHA-256 digests in constant time,
// so neither the token's bytes nor its length leak through timing.
func requireToken(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		gotSum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		match := subtle.ConstantTimeCompare(gotSum[:], want[:]) == 1
		if !ok || !strings.EqualFold(scheme, "Bearer") || !match {
			w.Header().Set("WWW-Authenticate", `Bearer realm="portico"`)
			msg := "a bearer token is required (Authorization: Bearer TOKEN)"
			if ok {
				msg = "wrong token"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs every request at debug: method, path, status, duration.
// Headers (the token among them) and the query are never logged.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		log.Debug("admin request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start).Round(time.Microsecond))
	})
}

// slogPrinter adapts a slog.Logger to promhttp's Logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.log.Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
