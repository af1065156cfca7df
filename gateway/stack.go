package gateway

// onFreshStack runs f on a goroutine of its own and waits for its result.
//
// Go keeps a goroutine's stack at the largest size it ever needed until
// garbage collections shrink it again, by half per cycle. A TLS handshake
// (its ML-KEM key exchange above all) and a protocol client's dial grow a
// stack to 16–32 KiB, and the goroutine that handshakes is the one that
// then relays the tunnel, idle for hours perhaps: after a burst of new
// tunnels each would pin that much. Done on a goroutine that ends with it,
// the deep work leaves its stack behind at once, and the tunnel lives on
// the caller's small one. It costs a goroutine start (about a microsecond)
// per tunnel.
func onFreshStack[T any](f func() (T, error)) (T, error) {
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
