// Package protocols is the vocabulary every tunnel protocol, transport and
// the gateway share: the destination address [Addr] and its wire codecs,
// the authenticated [Request], and the small set of interfaces that connect
// a protocol server to the gateway ([Handler], [Server]) and the gateway to
// its outbounds ([Dialer]).
//
// It imports only the standard library so that the pure codec packages below
// it (vless, vmess, anytls) can build for WebAssembly.
//
// Data flows one way: transport -> protocol [Server] -> [Handler] (the
// gateway's router) -> outbound [Dialer] -> relay. Nothing calls back up.
package protocols
