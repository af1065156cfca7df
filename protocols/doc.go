// Package protocols is the pure vocabulary every tunnel protocol, transport
// and the gateway share: the destination address [Addr] and its wire
// layouts ([AddrCodec]), [Network], the first-bytes [Matcher], and the
// sentinels [ErrNeedMore] and [ErrNotProtocol].
//
// It imports no networking, so that the codec packages below it (vless,
// vmess, anytls, links) build for WebAssembly. The net-side contracts
// (Request, Handler, Server, Dialer) are in package protocols/tunnel.
package protocols
