// Package wasm is the home of Portico's WebAssembly builds: the GOOS=js and
// GOOS=wasip1 entries over the pure protocol codecs, and (to come) the
// playground's static files. It may import the codec packages only.
//
//   - wasm/api: the operations both entries expose (vless.encodeRequest,
//     vmess.openHeader, anytls.planWrites, links.parse, …), as pure Go
//     functions over JSON-friendly values, unit-tested natively.
//   - wasm/js: the GOOS=js main; the global namespace portico in a page.
//   - wasm/wasi: the GOOS=wasip1 main; one JSON request on stdin, one
//     JSON response on stdout.
//
// This package itself holds only tests. TestCodecsStayPure fails when a
// codec package, an entry, or anything they import pulls in the network
// stack or process spawning; TestWASI (under wazero) and TestJS (under
// Node) run the codecs' known-answer vectors through both builds and
// require the native answers. See docs/wasm.md.
package wasm
