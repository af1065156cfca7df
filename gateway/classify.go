package gateway

import (
	"bytes"
	"errors"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

// httpStarts are the first bytes of every request line net/http serves, and
// the HTTP/2 connection preface (RFC 9113 §3.4). A prefix that starts one of
// these goes straight to the HTTP server; anything else first meets the
// protocol matchers, and the decoy gets it only if none says yes. Routing by
// content rather than by ALPN matters: tunnel clients often offer "h2" too.
var httpStarts = [][]byte{
	[]byte("GET "), []byte("HEAD "), []byte("POST "), []byte("PUT "), []byte("DELETE "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE "),
	[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
}

// matchHTTP is a protocols.Matcher for HTTP/1.x request lines and the HTTP/2
// preface.
func matchHTTP(prefix []byte) (bool, error) {
	more := false
	for _, s := range httpStarts {
		switch {
		case bytes.HasPrefix(prefix, s):
			return true, nil
		case len(prefix) < len(s) && bytes.HasPrefix(s, prefix):
			more = true
		}
	}
	if more {
		return false, protocols.ErrNeedMore
	}
	return false, nil
}

// verdict of the classifier over a prefix.
type verdict int

const (
	verdictMore  verdict = iota // read more and ask again
	verdictHTTP                 // the HTTP server
	verdictProto                // the protocol at index proto
	verdictDecoy                // no one wants it: the decoy, with every byte replayed
)

// classify asks the HTTP matcher, then each protocol's matcher in order
// (cheapest first, as the front door orders them). A matcher's error other
// than ErrNeedMore counts as a no, and the first such error is returned as
// the reason, should the connection end at the decoy (for the debug log).
func classify(prefix []byte, matchers []protocols.Matcher) (v verdict, proto int, why error) {
	more := false
	if ok, err := matchHTTP(prefix); ok {
		return verdictHTTP, -1, nil
	} else if err == protocols.ErrNeedMore {
		more = true
	}
	for i, m := range matchers {
		ok, err := m(prefix)
		switch {
		case ok:
			return verdictProto, i, nil
		case err == protocols.ErrNeedMore:
			more = true
		case err != nil && (why == nil || reasonRank(err) > reasonRank(why)):
			why = err
		}
	}
	if more {
		if bytes.IndexByte(prefix, '\n') >= 0 {
			// The site answers (or, for a well-formed request line, goes on
			// reading headers) as soon as a line ends: holding the bytes for
			// a matcher that wants more would make the gateway wait where
			// the site answers. A client's header arrives in one TLS record,
			// far longer than any matcher needs, so this takes no tunnel.
			if why == nil {
				why = errLineEnd
			}
			return verdictDecoy, -1, why
		}
		return verdictMore, -1, why
	}
	return verdictDecoy, -1, why
}

// reasonRank orders matchers' refusals so that the reason kept is the one
// that says most: a replay (a VMess matcher knew the key and the handshake
// was seen before) over a key no user has, over everything else (another
// protocol's "not mine").
func reasonRank(err error) int {
	switch {
	case errors.Is(err, vmessserver.ErrReplay), errors.Is(err, vmessserver.ErrTainted):
		return 2
	case errors.Is(err, vmessserver.ErrUnknownUser), errors.Is(err, vlessserver.ErrUnknownUser),
		errors.Is(err, anytlsserver.ErrUnknownUser):
		return 1
	}
	return 0
}

// errLineEnd is the debug log's reason when a line end decided for the site
// before every matcher could.
var errLineEnd = errors.New("a line ended before any protocol could match")
