// Package wasm is the home of Portico's WebAssembly builds: the GOOS=js and
// GOOS=wasip1 entries over the pure protocol codecs, and the playground's
// static files. It may import the codec packages only.
//
// For now it holds the guard that keeps those codecs buildable for the
// browser and the edge: TestCodecsStayPure fails when a codec package, or
// anything it imports, pulls in the network stack or process spawning.
package wasm
