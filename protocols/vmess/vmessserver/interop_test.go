package vmessserver_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/internal/raceflag"
	"github.com/portico-gw/portico/protocols"
	"github.com/portico-gw/portico/protocols/vmess/internal/vmesstest"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

// interopSize is what each interop case moves each way; PORTICO_INTEROP_MB
// overrides it (in MiB) for a quicker run.
func interopSize() int64 {
	if mb, err := strconv.Atoi(os.Getenv("PORTICO_INTEROP_MB")); err == nil && mb > 0 {
		return int64(mb) << 20
	}
	return 64 << 20
}

var interopSecurities = []string{"aes-128-gcm", "chacha20-poly1305", "none", "zero", "auto"}

// v2rayClientOutbound is a V2Ray VMess outbound to our server over TLS.
func v2rayClientOutbound(tag string, port int, id uuid.UUID, alterID int, security string) map[string]any {
	return map[string]any{
		"tag": tag, "protocol": "vmess",
		"settings": map[string]any{"vnext": []any{map[string]any{
			"address": "127.0.0.1", "port": port,
			"users": []any{map[string]any{"id": id.String(), "alterId": alterID, "security": security}},
		}}},
		"streamSettings": map[string]any{"network": "tcp", "security": "tls",
			"tlsSettings": map[string]any{"serverName": "localhost", "allowInsecure": true}},
	}
}

// TestInteropV2RayClient puts a real V2Ray (Debian's 4.34) in front of our
// server as a VMess client over TLS: test -> dokodemo-door -> V2Ray VMess
// outbound -> vmessserver -> relay -> echo, for every security, with the
// VMessAEAD header (alterId 0) and the legacy one (alterId 4, legacy
// allowed on our side). One V2Ray process serves every case, each on its
// own dokodemo-door routed to its own outbound. It is skipped when v2ray is
// not installed, unless PORTICO_REQUIRE_PEERS=1.
func TestInteropV2RayClient(t *testing.T) {
	vmesstest.V2RayPath(t)
	start := time.Now()
	aead, legacy := uuid.New(), uuid.New()
	var logBuf vmesstest.LogBuffer
	srv, err := vmessserver.New(vmessserver.Options{
		Users:       []vmessserver.User{{ID: aead, Email: "aead@interop"}, {ID: legacy, AlterID: 4, Email: "legacy@interop"}},
		AllowLegacy: true, Inbound: "interop", Transport: "tls",
		Log: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := vmesstest.SelfSigned(t)
	handler := new(vmesstest.RelayHandler)
	errs := vmesstest.Serve(t, ln, cert.ServerTLS(), srv, handler)
	echo := vmesstest.Echo(t)
	port := ln.Addr().(*net.TCPAddr).Port

	type tc struct {
		name, security string
		alterID        int
		in             int
	}
	var cases []tc
	var inbounds, outbounds, rules []any
	var waits []string
	for _, alter := range []int{0, 4} {
		for _, sec := range interopSecurities {
			c := tc{name: fmt.Sprintf("%s/alterId=%d", sec, alter), security: sec, alterID: alter, in: vmesstest.FreePort(t)}
			id := aead
			if alter > 0 {
				id = legacy
			}
			tag := strings.ReplaceAll(c.name, "/", "_")
			inbounds = append(inbounds, map[string]any{"tag": tag, "listen": "127.0.0.1", "port": c.in, "protocol": "dokodemo-door",
				"settings": map[string]any{"address": "127.0.0.1", "port": echo.Port, "network": "tcp"}})
			outbounds = append(outbounds, v2rayClientOutbound(tag, port, id, alter, sec))
			rules = append(rules, map[string]any{"type": "field", "inboundTag": []string{tag}, "outboundTag": tag})
			waits = append(waits, vmesstest.HostPort("127.0.0.1", c.in))
			cases = append(cases, c)
		}
	}
	v2 := vmesstest.StartV2Ray(t, map[string]any{
		"log": map[string]any{"loglevel": "warning"}, "inbounds": inbounds, "outbounds": outbounds,
		"routing": map[string]any{"rules": rules},
	}, nil, waits...)
	// StartV2Ray's readiness probes opened (empty) tunnels; forget them.
	time.Sleep(200 * time.Millisecond)
	vmesstest.Drain(errs)
	before := len(handler.Requests())

	size := interopSize()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", vmesstest.HostPort("127.0.0.1", c.in))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(raceflag.Deadline(60 * time.Second)))
			began := time.Now()
			if err := vmesstest.Exchange(conn, size, uint64(i)); err != nil {
				t.Fatalf("%v\nServeConn: %s\nv2ray log:\n%s", err, vmesstest.Drain(errs), v2.Log())
			}
			t.Logf("%d MiB each way in %v", size>>20, time.Since(began).Round(time.Millisecond))
		})
	}
	reqs := handler.Requests()[before:]
	if len(reqs) != len(cases) {
		t.Errorf("%d tunnels, want %d: %+v", len(reqs), len(cases), reqs)
	}
	for _, r := range reqs {
		if r.Target != echo || r.Network != protocols.NetworkTCP || (r.User != "aead@interop" && r.User != "legacy@interop") {
			t.Errorf("request %+v", r)
		}
	}
	if strings.Contains(logBuf.String(), "level=WARN") {
		t.Errorf("warnings logged:\n%s", logBuf.String())
	}
	t.Logf("interop with a V2Ray client: %v in all", time.Since(start).Round(time.Millisecond))
}

// TestInteropLegacyRefusedByDefault: a V2Ray client with alterId 4
// against a server with the default options (legacy refused) is refused
// before a byte is written, and the warning says what to do.
func TestInteropLegacyRefusedByDefault(t *testing.T) {
	vmesstest.V2RayPath(t)
	id := uuid.New()
	var logBuf vmesstest.LogBuffer
	srv, err := vmessserver.New(vmessserver.Options{
		Users: []vmessserver.User{{ID: id, AlterID: 4, Email: "old@client"}},
		Log:   slog.New(slog.NewTextHandler(&logBuf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := vmesstest.SelfSigned(t)
	handler := new(vmesstest.RelayHandler)
	errs := vmesstest.Serve(t, ln, cert.ServerTLS(), srv, handler)
	in := vmesstest.FreePort(t)
	inAddr := vmesstest.HostPort("127.0.0.1", in)
	vmesstest.StartV2Ray(t, map[string]any{
		"log": map[string]any{"loglevel": "warning"},
		"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": in, "protocol": "dokodemo-door",
			"settings": map[string]any{"address": "127.0.0.1", "port": 9, "network": "tcp"}}},
		"outbounds": []any{v2rayClientOutbound("out", ln.Addr().(*net.TCPAddr).Port, id, 4, "aes-128-gcm")},
	}, nil, inAddr)
	conn, err := net.Dial("tcp", inAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("hello"))
	var got error
	deadline := time.After(10 * time.Second)
	for got == nil {
		select {
		case err := <-errs:
			if errors.Is(err, vmessserver.ErrLegacyRefused) {
				got = err
			}
		case <-deadline:
			t.Fatalf("no legacy refusal in 10 s; log:\n%s", logBuf.String())
		}
	}
	if !errors.Is(got, protocols.ErrNotProtocol) {
		t.Errorf("refusal %v does not wrap ErrNotProtocol", got)
	}
	if len(handler.Requests()) != 0 {
		t.Error("a legacy tunnel was handed to the handler")
	}
	log := logBuf.String()
	for _, want := range []string{"level=WARN", "VMessAEAD is enforced and a non VMessAEAD connection is received", `\"alterId\" to 0`,
		`\"allowLegacy\": true`, "V2RAY_VMESS_AEAD_FORCED=false", "user=old@client"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, id.String()) {
		t.Error("the log names the user's id")
	}
}

// TestInteropAlterIDMismatch: a V2Ray client with alterId 8 against a
// server whose user has alterId 0 (the usual mistake since 2022) is told
// apart from an unknown user: the alter ids just past the server's are
// recognised, so within a few connections the log names the mismatch.
func TestInteropAlterIDMismatch(t *testing.T) {
	vmesstest.V2RayPath(t)
	id := uuid.New()
	var logBuf vmesstest.LogBuffer
	srv, err := vmessserver.New(vmessserver.Options{
		Users: []vmessserver.User{{ID: id, Email: "mismatch@client"}},
		Log:   slog.New(slog.NewTextHandler(&logBuf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := vmesstest.SelfSigned(t)
	errs := vmesstest.Serve(t, ln, cert.ServerTLS(), srv, new(vmesstest.RelayHandler))
	in := vmesstest.FreePort(t)
	inAddr := vmesstest.HostPort("127.0.0.1", in)
	vmesstest.StartV2Ray(t, map[string]any{
		"log": map[string]any{"loglevel": "warning"},
		"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": in, "protocol": "dokodemo-door",
			"settings": map[string]any{"address": "127.0.0.1", "port": 9, "network": "tcp"}}},
		"outbounds": []any{v2rayClientOutbound("out", ln.Addr().(*net.TCPAddr).Port, id, 8, "aes-128-gcm")},
	}, nil, inAddr)
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 1; ; attempt++ {
		conn, err := net.Dial("tcp", inAddr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("hello"))
		var got error
	wait:
		for {
			select {
			case err := <-errs:
				if errors.Is(err, vmessserver.ErrAlterIDMismatch) || errors.Is(err, vmessserver.ErrUnknownUser) {
					got = err
					break wait
				}
			case <-time.After(3 * time.Second):
				break wait
			}
		}
		conn.Close()
		if errors.Is(got, vmessserver.ErrAlterIDMismatch) {
			if !errors.Is(got, protocols.ErrNotProtocol) || !strings.Contains(got.Error(), `set the client's "alterId" to 0`) {
				t.Errorf("mismatch error: %v", got)
			}
			if !strings.Contains(logBuf.String(), "alterId mismatch") {
				t.Errorf("log:\n%s", logBuf.String())
			}
			t.Logf("named after %d connections", attempt)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no alterId mismatch named after %d connections; last: %v", attempt, got)
		}
	}
}
