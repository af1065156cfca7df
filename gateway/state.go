package gateway

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	if _, err := uuid.Parse(s.UUID); err != nil || s.Password == "" {
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
		return s, nil
	}
	if _, statErr := os.Stat(filepath.Join(dir, stateFile)); statErr == nil {
		return nil, err // present but unreadable: never overwrite a user's keys
	}
	pw := make([]byte, 18)
	rand.Read(pw)
	s = &State{Dir: dir, UUID: uuid.NewString(), Password: base64.RawURLEncoding.EncodeToString(pw)}
	return s, s.Save()
}

// Save writes the state atomically (temp file and rename), mode 0600.
func (s *State) Save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, ".state-*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("state: write: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state: write: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.Dir, stateFile)); err != nil {
		return fmt.Errorf("state: %w", err)
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
	vless := mustJSON(VLESSInbound{Clients: []VLESSClient{{ID: s.UUID, Email: "default"}}, Decryption: "none"})
	cfg := &Config{
		Server: &ServerConfig{Listen: listen, TLS: TLSConfig{Source: "self-signed", StateDir: s.Dir}},
		Inbounds: []InboundConfig{
			{Tag: "vless", Protocol: "vless", Settings: vless},
			{Tag: "vmess", Protocol: "vmess", Settings: mustJSON(VMessInbound{Clients: []VMessClient{{ID: s.UUID, Email: "default"}}})},
			{Tag: "anytls", Protocol: "anytls", Settings: mustJSON(AnyTLSInbound{Users: []AnyTLSUser{{Password: s.Password, Email: "default"}}})},
		},
	}
	if err := cfg.check(); err != nil {
		panic("gateway: embedded default config does not check: " + err.Error()) // a bug here, not user input
	}
	return cfg
}
