package gateway

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// State is what the embedded default keeps between runs, in the state dir:
// the generated user keys and the address it last served on (so that
// `portico links -state DIR` prints links that work). The self-signed
// certificate lives beside it (cert.pem, key.pem).
type State struct {
	Dir      string `json:"-"`
	UUID     string `json:"uuid"`     // VLESS and VMess user
	Password string `json:"password"` // AnyTLS user
	Listen   string `json:"listen"`   // the front door's last address
	// RouteKey makes the embedded default's WebSocket, HTTP-upgrade and
	// HTTP/3 paths and gRPC service names unguessable: a prober who does
	// not have a link cannot find the routes.
	RouteKey string `json:"routeKey"`
}

const stateFile = "state.json"

// DefaultStateDir is $XDG_STATE_HOME/portico, or ~/.local/state/portico.
func DefaultStateDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "portico"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("state dir: no $XDG_STATE_HOME and no home folder; pass -state DIR")
	}
	return filepath.Join(home, ".local", "state", "portico"), nil
}

// EnsureStateDir creates dir (0700) if needed and checks that it is a
// writable folder, with one clear error when it is not.
func EnsureStateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir %s: %w", dir, unwrapPathErr(err))
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state dir %s: %w", dir, unwrapPathErr(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("state dir %s: not a folder", dir)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("state dir %s: not writable: %w", dir, unwrapPathErr(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// LoadState reads the state of dir; it does not create anything.
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("state dir %s has no %s: run `portico run -state %s` once first", dir, stateFile, dir)
		}
		return nil, fmt.Errorf("state: %w", err)
	}
	s := &State{Dir: dir}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("state: %s: corrupt (%v); delete it to start afresh", filepath.Join(dir, stateFile), err)
	}
	if _, err := uuid.Parse(s.UUID); err != nil || s.Password == "" || strings.ContainsAny(s.RouteKey, "/ ?#.") {
		return nil, fmt.Errorf("state: %s: missing keys; delete it to start afresh", filepath.Join(dir, stateFile))
	}
	return s, nil
}

// LoadOrCreateState returns the state of dir, generating keys on first use.
func LoadOrCreateState(dir string) (*State, error) {
	if err := EnsureStateDir(dir); err != nil {
		return nil, err
	}
	s, err := LoadState(dir)
	if err == nil {
		if s.RouteKey == "" { // a state from before transports existed
			s.RouteKey = newRouteKey()
			return s, s.Save()
		}
		return s, nil
	}
	if _, statErr := os.Stat(filepath.Join(dir, stateFile)); statErr == nil {
		return nil, err // present but unreadable: never overwrite a user's keys
	}
	pw := make([]byte, 18)
	rand.Read(pw)
	s = &State{Dir: dir, UUID: uuid.NewString(), Password: base64.RawURLEncoding.EncodeToString(pw), RouteKey: newRouteKey()}
	return s, s.Save()
}

func newRouteKey() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Save writes the state atomically, mode 0600: a temp file beside
// state.json gets the mode, the data and an fsync, and is renamed over it.
// On any failure the temp file is removed and state.json is left as it
// was. Errors are one line naming state.json and the cause ("no space left
// on device").
func (s *State) Save() (err error) {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(s.Dir, stateFile)
	fail := func(err error) error { return fmt.Errorf("state: write %s: %w", path, unwrapPathErr(err)) }
	tmp, err := os.CreateTemp(s.Dir, ".state-*")
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fail(err)
	}
	// Make the rename itself durable; a folder that cannot be synced
	// (some network file systems) still has the new file.
	if d, err := os.Open(s.Dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// DefaultListen is where the embedded default serves.
const DefaultListen = "127.0.0.1:8443"

// DefaultConfig is the embedded default: the front door on listen (or
// DefaultListen) with a self-signed certificate kept in the state dir, the
// built-in decoy site, and every protocol this build has on raw TLS, each
// with the state's generated key.
func (s *State) DefaultConfig(listen string) *Config {
	if listen == "" {
		listen = DefaultListen
	}
	settings := map[string]json.RawMessage{
		"vless":  mustJSON(VLESSInbound{Clients: []VLESSClient{{ID: s.UUID, Email: "default"}}, Decryption: "none"}),
		"vmess":  mustJSON(VMessInbound{Clients: []VMessClient{{ID: s.UUID, Email: "default"}}}),
		"anytls": mustJSON(AnyTLSInbound{Users: []AnyTLSUser{{Password: s.Password, Email: "default"}}}),
	}
	cfg := &Config{Server: &ServerConfig{Listen: listen, TLS: TLSConfig{Source: "self-signed", StateDir: s.Dir}}}
	for _, proto := range []string{"vless", "vmess", "anytls"} {
		cfg.Inbounds = append(cfg.Inbounds, InboundConfig{Tag: proto, Protocol: proto, Settings: settings[proto]})
	}
	// Every protocol over every transport, on paths only links reveal.
	for _, network := range []string{"ws", "httpupgrade", "grpc", "quic"} {
		for _, proto := range []string{"vless", "vmess", "anytls"} {
			name := proto + "-" + network
			ss := &InboundStream{Network: network}
			path := &PathSettings{Path: "/" + s.RouteKey + "/" + name}
			switch network {
			case "ws":
				ss.WSSettings = path
			case "httpupgrade":
				ss.HTTPUpgradeSettings = path
			case "grpc":
				ss.GRPCSettings = &GRPCSettings{ServiceName: s.RouteKey + "." + proto}
			case "quic":
				ss.QUICSettings = path
			}
			cfg.Inbounds = append(cfg.Inbounds, InboundConfig{Tag: name, Protocol: proto, Settings: settings[proto], StreamSettings: ss})
		}
	}
	if err := cfg.check(); err != nil {
		panic("gateway: embedded default config does not check: " + err.Error()) // a bug here, not user input
	}
	return cfg
}
