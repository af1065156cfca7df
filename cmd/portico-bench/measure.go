package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/socks"
)

// The sink's protocol: the first byte chooses the mode.
//
//	'D' + uint64 n (big endian): the sink sends n bytes and closes.
//	'U' + uint64 n: the sink reads n bytes, then answers one byte 'A'.
//	'E': the sink answers 'E' and then echoes everything until EOF.
//
// So a tunnel's 1-byte echo is exactly one byte each way.
const (
	modeDown = 'D'
	modeUp   = 'U'
	modeEcho = 'E'
	chunk    = 32 << 10
)

var payload = func() []byte {
	b := make([]byte, chunk)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

// sink serves the sink protocol on ln until ln is closed.
func sink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go sinkConn(c)
	}
}

func sinkConn(c net.Conn) {
	defer c.Close()
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:1]); err != nil {
		return
	}
	switch hdr[0] {
	case modeEcho:
		if _, err := c.Write(hdr[:1]); err != nil {
			return
		}
		io.Copy(c, c)
	case modeDown:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return
		}
		for left := int64(binary.BigEndian.Uint64(hdr[1:])); left > 0; {
			n := min(left, chunk)
			if _, err := c.Write(payload[:n]); err != nil {
				return
			}
			left -= n
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	case modeUp:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(hdr[1:]))
		if _, err := io.CopyN(io.Discard, c, n); err != nil {
			return
		}
		c.Write([]byte{'A'})
		io.Copy(io.Discard, c)
	}
}

// dialFunc opens a connection to the sink through a row's path.
type dialFunc func(ctx context.Context) (net.Conn, error)

func directDialer(sinkAddr string) dialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", sinkAddr)
	}
}

// floorDialer speaks TLS to the relay: a full handshake per connection.
func floorDialer(relayAddr string) dialFunc {
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"}
	return func(ctx context.Context) (net.Conn, error) {
		d := tls.Dialer{Config: cfg}
		return d.DialContext(ctx, "tcp", relayAddr)
	}
}

// socksDialer opens a SOCKS5 CONNECT to the sink through proxy.
func socksDialer(proxy, sinkAddr string) dialFunc {
	dst, err := protocols.ParseAddr(sinkAddr)
	if err != nil {
		panic(err)
	}
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", proxy)
		if err != nil {
			return nil, err
		}
		if err := socks.Dial(ctx, c, dst, "", ""); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// bulk moves total bytes in the given direction over streams parallel
// connections (total split evenly) and returns MB/s (10^6 bytes/s).
func bulk(ctx context.Context, dial dialFunc, mode byte, total int64, streams int) (float64, error) {
	per := total / int64(streams)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	errs := make(chan error, streams)
	for range streams {
		go func() { errs <- bulkOne(ctx, dial, mode, per) }()
	}
	var first error
	for range streams {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	if first != nil {
		return 0, first
	}
	return float64(per*int64(streams)) / time.Since(start).Seconds() / 1e6, nil
}

func bulkOne(ctx context.Context, dial dialFunc, mode byte, n int64) error {
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var hdr [9]byte
	hdr[0] = mode
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	// A stream that makes no progress for stallTimeout fails (v2ray's
	// VMess server sometimes never answers a genuine connection).
	alive := func() {
		if ctx.Err() == nil { // else the AfterFunc's past deadline stays
			c.SetDeadline(time.Now().Add(stallTimeout))
		}
	}
	switch mode {
	case modeDown:
		buf := make([]byte, chunk)
		var got int64
		for got < n {
			alive()
			k, err := c.Read(buf[:min(int64(len(buf)), n-got)])
			got += int64(k)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("download: %d of %d bytes: %w", got, n, err)
			}
		}
	case modeUp:
		for left := n; left > 0; {
			k := min(left, chunk)
			alive()
			if _, err := c.Write(payload[:k]); err != nil {
				return fmt.Errorf("upload: after %d of %d bytes: %w", n-left, n, err)
			}
			left -= k
		}
		alive()
		if _, err := io.ReadFull(c, hdr[:1]); err != nil || hdr[0] != 'A' {
			return fmt.Errorf("upload: no ack: %v", err)
		}
	}
	return nil
}

// stallTimeout fails a bulk stream that moves no byte for this long.
const stallTimeout = 10 * time.Second

// echoTunnel opens a tunnel and runs a 1-byte echo through it within
// timeout; it returns the open connection and the time from the dial to the
// echoed byte.
func echoTunnel(ctx context.Context, dial dialFunc, timeout time.Duration) (net.Conn, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	c, err := dial(ctx)
	if err != nil {
		return nil, 0, err
	}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	b := []byte{modeEcho}
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, 0, err
	}
	if _, err := io.ReadFull(c, b); err != nil || b[0] != modeEcho {
		c.Close()
		return nil, 0, fmt.Errorf("echo: %v", err)
	}
	d := time.Since(start)
	c.SetDeadline(time.Time{})
	return c, d, nil
}

// tunnelResult is one run of a tunnels/s test.
type tunnelResult struct {
	CPUus    float64 `json:"cpu_us_per_tunnel,omitempty"` // the row's processes together
	PerSec   float64 `json:"per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	Failures int     `json:"failures"`
}

// tunnelTimeout bounds each tunnel of the tunnels/s tests: v2ray's VMess
// server holds a small share of genuine connections open without an answer
// (PEERS.md), and each of those costs this much.
const tunnelTimeout = 3 * time.Second

// idleGiveUp is how many failed idle tunnels end the idle test early (a
// transport that cannot hold more tunnels would otherwise cost a timeout
// for every remaining one).
const idleGiveUp = 20

// tunnels opens total tunnels, concurrency at a time, each with a 1-byte
// echo, and closes each right after its echo. The rate is the successful
// tunnels over the time until the last of them, less the time workers
// waited on failed tunnels (divided by the concurrency), so that a tunnel
// the peer never answers (v2ray's VMess replay filter) does not stretch the
// run by its timeout; it is counted as a failure instead.
func tunnels(ctx context.Context, dial dialFunc, total, concurrency int) (tunnelResult, error) {
	var (
		next     atomic.Int64
		failures atomic.Int64
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, total)
		lastErr  error
		lastOK   time.Time
		wg       sync.WaitGroup
		// time workers spent on tunnels that failed
		failedTime time.Duration
	)
	start := time.Now()
	for range min(concurrency, total) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(total) && ctx.Err() == nil {
				t0 := time.Now()
				c, d, err := echoTunnel(ctx, dial, tunnelTimeout)
				if err != nil {
					failures.Add(1)
					mu.Lock()
					lastErr = err
					failedTime += time.Since(t0)
					mu.Unlock()
					continue
				}
				c.Close()
				mu.Lock()
				lat = append(lat, d)
				lastOK = time.Now()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := lastOK.Sub(start)
	// Exact for one at a time; an estimate of the lost worker time otherwise.
	elapsed = max(elapsed-failedTime/time.Duration(min(concurrency, total)), elapsed/10)
	if err := ctx.Err(); err != nil {
		return tunnelResult{}, err
	}
	if len(lat) == 0 || failures.Load() > int64(total)/10 {
		return tunnelResult{}, fmt.Errorf("%d of %d tunnels failed, last: %v", failures.Load(), total, lastErr)
	}
	slices.Sort(lat)
	return tunnelResult{
		PerSec:   float64(len(lat)) / elapsed.Seconds(),
		P50ms:    ms(percentile(lat, 0.50)),
		P99ms:    ms(percentile(lat, 0.99)),
		Failures: int(failures.Load()),
	}, nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted)-1)*p + 0.5)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// holdIdle opens n tunnels (64 at a time), each with a 1-byte echo, and
// returns those that opened, and how many failed. After idleGiveUp
// failures it opens no more.
func holdIdle(ctx context.Context, dial dialFunc, n int) ([]net.Conn, int, error) {
	var (
		next     atomic.Int64
		failures atomic.Int64
		mu       sync.Mutex
		conns    = make([]net.Conn, 0, n)
		lastErr  error
		wg       sync.WaitGroup
	)
	for range min(64, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for failures.Load() < idleGiveUp && next.Add(1) <= int64(n) && ctx.Err() == nil {
				c, _, err := echoTunnel(ctx, dial, 5*time.Second)
				mu.Lock()
				if err != nil {
					failures.Add(1)
					lastErr = err
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		closeAll(conns)
		return nil, 0, err
	}
	if f := failures.Load(); f > 0 {
		gaveUp := ""
		if f >= idleGiveUp {
			gaveUp = " (then it gave up)"
		}
		return conns, int(f), fmt.Errorf("%d of %d idle tunnels opened, %d failed%s, last error: %v", len(conns), n, f, gaveUp, lastErr)
	}
	return conns, 0, nil
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

var errNA = errors.New("n/a")
