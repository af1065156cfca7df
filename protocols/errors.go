package protocols

import "errors"

// ErrNeedMore is returned by a [Matcher] or a codec's parser when the bytes
// it was given are a valid but incomplete prefix: the caller should read more
// and ask again. It is the only "need more data" sentinel in the project.
var ErrNeedMore = errors.New("protocols: need more data")

// ErrNotProtocol is returned (wrapped) by a [Server] when a connection is not
// for it: wrong version, unknown key, malformed header. A Server returns it
// only before it has written a byte, so the gateway may still hand every byte
// read so far to the decoy site.
var ErrNotProtocol = errors.New("protocols: not this protocol")

// ErrBlocked is returned by an outbound that refuses a destination by policy.
var ErrBlocked = errors.New("protocols: blocked by policy")

// ReadBeforeRefusal wraps a refusal (an [ErrNotProtocol] error) with how
// many bytes the server had read from the connection when it refused.
// A gateway that drains a refused connection before closing it (reading a
// bounded, random amount, as V2Ray does, so that where reading stops says
// nothing of the key) counts these against the amount, as V2Ray's drainer
// counts the header it read: a server that read ahead while parsing does
// not make the drain wait for bytes a prober has already sent.
type ReadBeforeRefusal struct {
	Err error
	N   int // bytes read from the connection, header and whatever came with it
}

func (e *ReadBeforeRefusal) Error() string { return e.Err.Error() }
func (e *ReadBeforeRefusal) Unwrap() error { return e.Err }

// BytesReadBeforeRefusal is the N of the first ReadBeforeRefusal in err's
// chain, or 0.
func BytesReadBeforeRefusal(err error) int {
	var r *ReadBeforeRefusal
	if errors.As(err, &r) {
		return r.N
	}
	return 0
}
