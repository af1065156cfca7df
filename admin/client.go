package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Client calls the admin API, over TCP or a unix socket; `portico user`,
// `portico stats` and `portico reload` use it.
type Client struct {
	addr  string
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client of the API at addr ("127.0.0.1:9090" or
// "unix:/run/portico/admin.sock"); token is sent as a bearer token when
// not empty.
func NewClient(addr, token string) (*Client, error) {
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	c := &Client{addr: addr, token: token, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	if IsUnix(addr) {
		path := strings.TrimPrefix(addr, UnixPrefix)
		if path == "" {
			return nil, errors.New("empty socket path (want unix:/path/to/admin.sock)")
		}
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://unix"
		return c, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%q is not host:port or unix:/path", addr)
	}
	c.base = "http://" + addr
	return c, nil
}

// APIError is an answer of the API other than success: its status and
// the one-line message.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return strconv.Itoa(e.Status) + " " + e.Message }

// Inbounds lists the tunnel inbounds.
func (c *Client) Inbounds(ctx context.Context) ([]Inbound, error) {
	var ins []Inbound
	return ins, c.do(ctx, http.MethodGet, "/v1/inbounds", nil, &ins)
}

// Users lists an inbound's users.
func (c *Client) Users(ctx context.Context, inbound string) ([]User, error) {
	var us []User
	return us, c.do(ctx, http.MethodGet, "/v1/inbounds/"+url.PathEscape(inbound)+"/users", nil, &us)
}

// AddUser adds u to the inbound and returns the user as the API stored it.
func (c *Client) AddUser(ctx context.Context, inbound string, u User) (User, error) {
	var got User
	return got, c.do(ctx, http.MethodPost, "/v1/inbounds/"+url.PathEscape(inbound)+"/users", u, &got)
}

// RemoveUser removes the user named email from the inbound.
func (c *Client) RemoveUser(ctx context.Context, inbound, email string) error {
	return c.do(ctx, http.MethodDelete, "/v1/inbounds/"+url.PathEscape(inbound)+"/users/"+url.PathEscape(email), nil, nil)
}

// Stats reads the counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	return s, c.do(ctx, http.MethodGet, "/v1/stats", nil, &s)
}

// ResetStats zeroes one user's counters ("" = all) and returns the values
// before the reset.
func (c *Client) ResetStats(ctx context.Context, user string) (Stats, error) {
	p := "/v1/stats/reset"
	if user != "" {
		p += "?user=" + url.QueryEscape(user)
	}
	var s Stats
	return s, c.do(ctx, http.MethodPost, p, nil, &s)
}

// Reload asks the gateway to re-read its config.
func (c *Client) Reload(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/reload", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.connError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %v", err)
	}
	if resp.StatusCode/100 != 2 {
		var e errorBody
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.Join(strings.Fields(string(b)), " ")
			if len(e.Error) > 200 {
				e.Error = e.Error[:200] + "…"
			}
			if e.Error == "" {
				e.Error = http.StatusText(resp.StatusCode)
			}
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the answer is not the expected JSON: %v", err)
	}
	return nil
}

// connError says in one line why the API could not be reached.
func (c *Client) connError(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return errors.New("nothing is listening (is `portico run` running with the config's admin.listen at this address?)")
	case errors.Is(err, syscall.EACCES):
		return errors.New("permission denied on the socket (run as the gateway's user or root)")
	case errors.Is(err, context.DeadlineExceeded):
		return errors.New("no answer in time")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err
}

// ParseBytes reads a size: a number of bytes ("1073741824"), or a number
// with a unit: kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB
// (powers of 1024), case-insensitive, with an optional space: "10GB",
// "500MiB", "1.5 GiB".
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}[strings.ToLower(unit)]
	if mult == 0 || num == "" {
		return 0, fmt.Errorf("%q is not a size (like 10GB, 500MiB or a number of bytes)", s)
	}
	if unit == "" {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a size (like 10GB, 500MiB or a number of bytes)", s)
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || f*mult >= 1<<63 {
		return 0, fmt.Errorf("%q is not a size (like 10GB, 500MiB or a number of bytes)", s)
	}
	return int64(f * mult), nil
}

// ParseExpiry reads an expiry: an RFC 3339 time ("2027-01-01T00:00:00Z"),
// or a duration from now: Go's ("12h", "90m") or whole days ("30d").
func ParseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	bad := fmt.Errorf("%q is not an RFC 3339 time (2027-01-01T00:00:00Z) or a duration from now (30d, 12h)", s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*366 {
			return time.Time{}, bad
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			return time.Time{}, bad
		}
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}
