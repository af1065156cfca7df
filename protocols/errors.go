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
