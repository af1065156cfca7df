// Package offstack runs deep, short-lived work on a goroutine of its own,
// so that the long-lived goroutine that waits for it keeps a small stack.
//
// Go keeps a goroutine's stack at the largest size it ever needed until
// garbage collections shrink it again, by half per cycle. A TLS handshake
// (its ML-KEM key exchange above all) or a protocol client's dial grows a
// stack to 16–32 KiB, and the goroutine that does it is often the one that
// then carries a tunnel, idle for hours perhaps: after a burst of new
// tunnels each would pin that much. Done on a goroutine that ends with it,
// the deep work leaves its stack behind at once. It costs a goroutine
// start (about a microsecond) per call.
package offstack

// Do runs f on a goroutine of its own and returns its results.
func Do[T any](f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}
