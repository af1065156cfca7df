package anytls

import (
	"fmt"
	"strconv"
	"strings"
)

// Settings text, the data of cmdSettings (client to server) and
// cmdServerSettings (server to client). UTF-8 lines joined by "\n", each
// "key=value" (split at the first "="):
//
//	v=2                  the sender's protocol version
//	client=anytls/0.0.1  cmdSettings only: the client's name and version
//	padding-md5=<hex>    cmdSettings only: lowercase hex MD5 of the client's
//	                     current padding scheme text
//
// As in anytls-go (util.StringMapFromBytes), a line without "=" is
// skipped, a repeated key's last value counts, and unknown keys are kept
// but carry no meaning.
const (
	SettingVersion    = "v"
	SettingClient     = "client"
	SettingPaddingMD5 = "padding-md5"
)

// Setting is one key=value line.
type Setting struct {
	Key, Value string
}

// Settings are the lines of a settings text, in wire order.
type Settings []Setting

// ClientSettings are the settings a client of this package sends: v=2,
// its name, and the MD5 of its current padding scheme.
func ClientSettings(client, paddingMD5 string) Settings {
	return Settings{{SettingVersion, strconv.Itoa(Version)}, {SettingClient, client}, {SettingPaddingMD5, paddingMD5}}
}

// ServerSettings are the settings a version 2 server sends: v=2.
func ServerSettings() Settings {
	return Settings{{SettingVersion, strconv.Itoa(Version)}}
}

// Get returns the value of key's last line.
func (s Settings) Get(key string) (string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].Key == key {
			return s[i].Value, true
		}
	}
	return "", false
}

// Version is the "v" setting as a number, or 0 when it is missing or not a
// decimal number; anything below 2 means version 1 behaviour (anytls-go:
// strconv.Atoi(m["v"]) ... v >= 2).
func (s Settings) Version() int {
	v, ok := s.Get(SettingVersion)
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// AppendSettings appends the settings text of s to b. It fails, returning b
// unchanged, on a key holding "=" or "\n", a value holding "\n", or a text
// longer than a frame holds.
func AppendSettings(b []byte, s Settings) ([]byte, error) {
	orig := len(b)
	for i, kv := range s {
		if strings.ContainsAny(kv.Key, "=\n") || strings.Contains(kv.Value, "\n") {
			return b[:orig], fmt.Errorf("%w: line %d (%q) has a newline, or an = in its key", ErrBadSettings, i, kv.Key)
		}
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, kv.Key...)
		b = append(b, '=')
		b = append(b, kv.Value...)
	}
	if len(b)-orig > MaxDataLen {
		return b[:orig], fmt.Errorf("%w: %d bytes do not fit a frame", ErrBadSettings, len(b)-orig)
	}
	return b, nil
}

// ParseSettings decodes a whole settings text (a frame's data; there is no
// length of its own, so n is always len(b)). It fails only on a text longer
// than a frame holds; lines without "=" are skipped.
func ParseSettings(b []byte) (Settings, int, error) {
	if len(b) > MaxDataLen {
		return nil, 0, fmt.Errorf("%w: %d bytes do not fit a frame", ErrBadSettings, len(b))
	}
	var s Settings
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			s = append(s, Setting{k, v})
		}
	}
	return s, len(b), nil
}
