package grpc

// Interop with google.golang.org/grpc (the library Xray's gRPC transport
// is built on), used by the tests only: its client against our Handler,
// and our Dialer against its server. Messages are Hunk / MultiHunk,
// marshalled with protowire by a codec registered nowhere, so no
// generated code is needed.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	grpcgo "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// hunk is Hunk (one data) or MultiHunk (several).
type hunk struct{ data [][]byte }

// hunkCodec marshals hunks with protowire. Its name makes the
// content-type application/grpc+proto, which the Handler accepts.
type hunkCodec struct{}

func (hunkCodec) Name() string { return "proto" }

func (hunkCodec) Marshal(v any) (mem.BufferSlice, error) {
	h, ok := v.(*hunk)
	if !ok {
		return nil, fmt.Errorf("hunkCodec: cannot marshal %T", v)
	}
	var b []byte
	for _, d := range h.data {
		b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), d)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (hunkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	h, ok := v.(*hunk)
	if !ok {
		return fmt.Errorf("hunkCodec: cannot unmarshal into %T", v)
	}
	b := data.Materialize()
	h.data = h.data[:0]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			d, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			h.data = append(h.data, append([]byte(nil), d...))
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}

var tunDesc = &grpcgo.StreamDesc{StreamName: "Tun", ClientStreams: true, ServerStreams: true}

// grpcgoExchange sends size bytes through stream in messages of up to
// 32 KiB (split into `parts` data fields each, for TunMulti), closes the
// send side, and reads everything back until io.EOF, comparing SHA-256.
func grpcgoExchange(stream grpcgo.ClientStream, size int, parts int, seed uint64) error {
	sent := make(chan error, 1)
	var sum [32]byte
	go func() {
		h := sha256.New()
		src := mathrand.NewChaCha8([32]byte{byte(seed), 1})
		buf := make([]byte, 32<<10)
		for left := size; left > 0; {
			n := min(len(buf), left)
			src.Read(buf[:n])
			h.Write(buf[:n])
			msg := &hunk{}
			for i := range parts {
				msg.data = append(msg.data, buf[i*n/parts:(i+1)*n/parts])
			}
			if err := stream.SendMsg(msg); err != nil {
				sent <- err
				return
			}
			left -= n
		}
		h.Sum(sum[:0])
		sent <- stream.CloseSend()
	}()
	h := sha256.New()
	got := 0
	var rerr error
	for {
		var m hunk
		if rerr = stream.RecvMsg(&m); rerr != nil {
			break
		}
		for _, d := range m.data {
			h.Write(d)
			got += len(d)
		}
	}
	if err := <-sent; err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if rerr != io.EOF {
		return fmt.Errorf("RecvMsg after %d bytes: %v (status %v), want io.EOF (status OK)", got, rerr, status.Code(rerr))
	}
	if got != size || !bytes.Equal(h.Sum(nil), sum[:]) {
		return fmt.Errorf("read %d bytes back, want %d; sums equal: %v", got, size, bytes.Equal(h.Sum(nil), sum[:]))
	}
	return nil
}

// TestGRPCGoClient: grpc-go's client speaks Tun and TunMulti to our
// Handler, over TLS and over h2c.
func TestGRPCGoClient(t *testing.T) {
	for _, withTLS := range []bool{true, false} {
		contentTypes := make(chan string, 10)
		ts := serve(t, &Handler{ServiceName: "gun.Svc", Next: new(site), Serve: func(conn net.Conn, r *http.Request) {
			contentTypes <- r.Header.Get("Content-Type")
			echo(conn, r)
		}}, withTLS)
		creds := insecure.NewCredentials()
		if withTLS {
			creds = credentials.NewTLS(ts.tls)
		}
		cc, err := grpcgo.NewClient("passthrough:///"+ts.addr, grpcgo.WithTransportCredentials(creds),
			grpcgo.WithDefaultCallOptions(grpcgo.ForceCodecV2(hunkCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		for _, tc := range []struct {
			method string
			parts  int
		}{{"/gun.Svc/Tun", 1}, {"/gun.Svc/TunMulti", 3}} {
			t.Run(fmt.Sprintf("tls=%v %s", withTLS, tc.method), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				stream, err := cc.NewStream(ctx, tunDesc, tc.method)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if err := grpcgoExchange(stream, 4<<20, tc.parts, 7); err != nil {
					t.Fatal(err)
				}
				t.Logf("4 MiB each way in %v", time.Since(start).Round(time.Millisecond))
				if ct := <-contentTypes; ct != "application/grpc+proto" {
					t.Errorf("grpc-go sent content-type %q", ct)
				}
			})
		}
		t.Run(fmt.Sprintf("tls=%v unknown method is the site", withTLS), func(t *testing.T) {
			stream, err := cc.NewStream(context.Background(), tunDesc, "/gun.Svc/Other")
			if err != nil {
				t.Fatal(err)
			}
			var m hunk
			err = stream.RecvMsg(&m)
			if status.Code(err) != codes.Unimplemented { // grpc-go's reading of an HTTP 404
				t.Errorf("RecvMsg = %v", err)
			}
		})
	}
}

// grpcgoServer serves Tun and TunMulti with grpc-go, echoing data.
func grpcgoServer(t *testing.T, service string, creds credentials.TransportCredentials) string {
	t.Helper()
	echoStream := func(_ any, stream grpcgo.ServerStream) error {
		for {
			var m hunk
			if err := stream.RecvMsg(&m); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			if err := stream.SendMsg(&m); err != nil {
				return err
			}
		}
	}
	opts := []grpcgo.ServerOption{grpcgo.ForceServerCodecV2(hunkCodec{})}
	if creds != nil {
		opts = append(opts, grpcgo.Creds(creds))
	}
	s := grpcgo.NewServer(opts...)
	s.RegisterService(&grpcgo.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Streams: []grpcgo.StreamDesc{
			{StreamName: "Tun", Handler: echoStream, ServerStreams: true, ClientStreams: true},
			{StreamName: "TunMulti", Handler: echoStream, ServerStreams: true, ClientStreams: true},
		},
	}, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// TestGRPCGoServer: our Dialer against grpc-go's server, as against an
// Xray server, over TLS and h2c, Tun and TunMulti.
func TestGRPCGoServer(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil) // only for its certificate
	srv.StartTLS()
	cert := srv.TLS.Certificates[0]
	srv.Close()
	clientTLS := &tls.Config{InsecureSkipVerify: true}
	for _, withTLS := range []bool{true, false} {
		var creds credentials.TransportCredentials
		if withTLS {
			creds = credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})
		}
		addr := grpcgoServer(t, "gun.Svc", creds)
		for _, multi := range []bool{false, true} {
			t.Run(fmt.Sprintf("tls=%v multi=%v", withTLS, multi), func(t *testing.T) {
				d := &Dialer{Address: addr, ServiceName: "gun.Svc", Multi: multi}
				if withTLS {
					d.TLS = clientTLS
				}
				defer d.CloseIdleConnections()
				c, err := d.DialConn(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				if err := exchange(c, 4<<20, 6); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	t.Run("status error", func(t *testing.T) {
		addr := grpcgoServer(t, "gun.Svc", nil)
		d := &Dialer{Address: addr, ServiceName: "other.Svc"}
		defer d.CloseIdleConnections()
		c, err := d.DialConn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		var se *StatusError
		if !errors.As(err, &se) || se.Code != int(codes.Unimplemented) {
			t.Errorf("Read = %v, want status Unimplemented", err)
		}
	})
}

var _ http.Handler = (*Handler)(nil)
