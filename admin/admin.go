// Package admin serves Portico's admin API: JSON over HTTP on a listener of
// its own (loopback TCP or a unix socket), to list, add and remove users per
// inbound, read and reset traffic counters, reload the config, and expose
// Prometheus metrics at /metrics.
//
// The package knows nothing of the gateway: the running gateway is a
// [Backend], and the metrics are whatever the caller registered in the
// [prometheus.Registry] it passes in [Options]. The endpoints and their JSON
// shapes are documented in docs/api.md.
//
// On TCP every request must carry "Authorization: Bearer <token>"; on a unix
// socket the socket file's permissions (0600) are the protection and no
// token is asked for.
package admin

import (
	"errors"
	"time"
)

// Backend is the running gateway as the API sees it.
//
// The handler calls its methods from many goroutines at once, one call per
// request; an implementation must be safe for concurrent use. Changes made
// through AddUser and RemoveUser take effect for new connections at once,
// without a restart.
//
// Errors: ErrNoInbound and ErrNoUser become 404, ErrExists 409 (matched with
// errors.Is, so they may be wrapped); any other error from AddUser is a
// validation error (400), from Reload 400 when it is (or wraps) a
// *ConfigError and 500 otherwise, and from the other methods 500. The error's text is
// sent to the client as one line.
type Backend interface {
	// Inbounds lists the tunnel inbounds, in config order.
	Inbounds() []Inbound
	// Users lists an inbound's users, secrets included (the API is the
	// operator's). ErrNoInbound when tag names no inbound.
	Users(inbound string) ([]User, error)
	// AddUser adds u to the inbound and returns it as stored (with the id
	// or password it generated when u had none): ErrNoInbound, ErrExists
	// (the email is taken in that inbound), or a validation error (400).
	AddUser(inbound string, u User) (User, error)
	// RemoveUser removes the user named email: ErrNoInbound, ErrNoUser.
	// Its open tunnels may run on; new ones are refused.
	RemoveUser(inbound, email string) error
	// Stats returns a snapshot of the counters.
	Stats() Stats
	// ResetStats zeroes the counters of one user ("" = all users and
	// inbounds) and returns their values before the reset. Active is not
	// reset (tunnels are still open).
	ResetStats(user string) Stats
	// Reload re-reads the config; an error means the old one keeps running.
	Reload() error
}

// Inbound is one tunnel inbound.
type Inbound struct {
	Tag       string `json:"tag"`
	Protocol  string `json:"protocol"`  // vless, vmess, anytls
	Transport string `json:"transport"` // tcp, ws, httpupgrade, grpc, quic
	Users     int    `json:"users"`
}

// User is one user of an inbound.
type User struct {
	Email    string     `json:"email"`              // the user's name; unique per inbound; required
	ID       string     `json:"id,omitempty"`       // VLESS and VMess: UUID
	Password string     `json:"password,omitempty"` // AnyTLS
	AlterID  int        `json:"alterId,omitempty"`  // VMess
	Flow     string     `json:"flow,omitempty"`     // VLESS
	Level    int        `json:"level,omitempty"`
	Quota    int64      `json:"quota,omitempty"`  // bytes, up+down; 0 = none
	Expiry   *time.Time `json:"expiry,omitempty"` // RFC 3339; nil = never
}

// Counters are the traffic counters of one user or one inbound.
type Counters struct {
	Up       int64      `json:"up"`
	Down     int64      `json:"down"`
	Active   int64      `json:"active"` // tunnels open now
	Total    int64      `json:"total"`  // tunnels since start (or reset)
	LastSeen *time.Time `json:"lastSeen,omitempty"`
	Refused  int64      `json:"refused,omitempty"` // connections refused for quota or expiry
}

// Stats are all counters, by user email and by inbound tag.
type Stats struct {
	Users    map[string]Counters `json:"users"`
	Inbounds map[string]Counters `json:"inbounds"`
}

// Sentinel errors a Backend returns; the handler maps them to statuses.
var (
	ErrNoInbound = errors.New("admin: no such inbound")
	ErrNoUser    = errors.New("admin: no such user")
	ErrExists    = errors.New("admin: user exists")
)

// ConfigError is what Reload returns when the new config is refused (a
// syntax or validation error): the API answers 400 instead of 500.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }
