// Package edge holds Portico's edge worker: worker.js, a Workers-style ES
// module (Cloudflare Workers, workerd) that accepts VLESS-over-WebSocket
// tunnels and opens their TCP connections from the edge, codec.js, the glue
// that loads codec.wasm, and codec/, the GOOS=wasip1 reactor over
// protocols/vless that it parses and answers with. See docs/edge.md.
//
// The Go package itself is empty; its tests run the worker in a real
// workerd (scripts/install-workerd.sh) and talk to it with Portico's client
// and V2Ray.
package edge
