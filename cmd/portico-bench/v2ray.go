package main

import (
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// startV2Ray starts a v2ray server (vless/vmess inbound over TLS or WS+TLS
// with a self-signed certificate, freedom outbound) and a v2ray client
// (socks inbound, vless/vmess outbound) for row s, and returns the client's
// SOCKS5 address.
func (e *benchEnv) startV2Ray(ctx context.Context, s rowSpec) (client, server *child, socksAddr string, err error) {
	if e.v2cert[0] == "" {
		dir := filepath.Join(e.work, "v2ray")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, "", err
		}
		if e.v2cert[0], e.v2cert[1], err = writeSelfSigned(dir); err != nil {
			return nil, nil, "", err
		}
	}
	srvPort, err := freePort()
	if err != nil {
		return nil, nil, "", err
	}
	cliPort, err := freePort()
	if err != nil {
		return nil, nil, "", err
	}
	id := newUUID()
	logCfg := map[string]any{"loglevel": "warning", "access": "none"}
	stream := func(server bool) map[string]any {
		tlsSettings := map[string]any{"serverName": "localhost", "allowInsecure": true}
		if server {
			tlsSettings = map[string]any{"certificates": []any{map[string]any{"certificateFile": e.v2cert[0], "keyFile": e.v2cert[1]}}}
		}
		st := map[string]any{"network": s.Transport, "security": "tls", "tlsSettings": tlsSettings}
		if s.Transport == "ws" {
			st["wsSettings"] = map[string]any{"path": "/bench-ws"}
		}
		return st
	}
	var inSettings, outSettings map[string]any
	switch s.Protocol {
	case "vless":
		inSettings = map[string]any{"clients": []any{map[string]any{"id": id}}, "decryption": "none"}
		outSettings = map[string]any{"vnext": []any{map[string]any{"address": "127.0.0.1", "port": srvPort,
			"users": []any{map[string]any{"id": id, "encryption": "none"}}}}}
	case "vmess":
		inSettings = map[string]any{"clients": []any{map[string]any{"id": id, "alterId": 0}}}
		outSettings = map[string]any{"vnext": []any{map[string]any{"address": "127.0.0.1", "port": srvPort,
			"users": []any{map[string]any{"id": id, "alterId": 0, "security": "aes-128-gcm"}}}}}
	default:
		return nil, nil, "", fmt.Errorf("%w: v2ray 4.34 has no %s", errNA, s.Protocol)
	}
	srvCfg := map[string]any{
		"log": logCfg,
		"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": srvPort, "protocol": s.Protocol,
			"settings": inSettings, "streamSettings": stream(true)}},
		"outbounds": []any{map[string]any{"protocol": "freedom"}},
	}
	cliCfg := map[string]any{
		"log": logCfg,
		"inbounds": []any{map[string]any{"listen": "127.0.0.1", "port": cliPort, "protocol": "socks",
			"settings": map[string]any{"auth": "noauth", "udp": false}}},
		"outbounds": []any{map[string]any{"protocol": s.Protocol, "settings": outSettings, "streamSettings": stream(false)}},
	}
	label := sanitize(s.Name)
	start := func(name string, cfg any, port int) (*child, error) {
		js, _ := json.MarshalIndent(cfg, "", "  ")
		file := filepath.Join(e.work, "v2ray", label+"-"+name+".json")
		if err := os.WriteFile(file, js, 0o600); err != nil {
			return nil, err
		}
		c, err := e.cs.start(e.logDir, label+"-"+name, e.o.v2ray, "-config", file)
		if err != nil {
			return nil, err
		}
		if err := waitListening(ctx, c, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			e.cs.kill(c)
			return nil, err
		}
		return c, nil
	}
	if server, err = start("server", srvCfg, srvPort); err != nil {
		return nil, nil, "", err
	}
	if client, err = start("client", cliCfg, cliPort); err != nil {
		e.cs.kill(server)
		return nil, nil, "", err
	}
	return client, server, fmt.Sprintf("127.0.0.1:%d", cliPort), nil
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// describeMachine fills in the machine line.
func describeMachine(o options) machine {
	m := machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Date: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if bi, err := buildinfo.ReadFile(o.portico); err == nil {
		m.Portico = bi.GoVersion
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value[:min(len(s.Value), 7)]
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev == "" { // built with -buildvcs=false: ask git in the working directory (make bench runs at the root)
			if out, err := exec.Command("git", "rev-parse", "--short=7", "HEAD").Output(); err == nil {
				rev = strings.TrimSpace(string(out))
				if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
					modified = "true"
				}
			}
		}
		if rev != "" {
			m.Revision = rev
			if modified == "true" {
				m.Revision += " with uncommitted changes"
			}
		}
	}
	if out, err := exec.Command(o.v2ray, "-version").Output(); err == nil {
		m.V2Ray, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	return m
}
