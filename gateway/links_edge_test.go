package gateway

import (
	"reflect"
	"strings"
	"testing"
)

// TestEdgeLinks: the edge links are ServerLinks' WebSocket links with only
// the edge's fields changed, whatever the gateway's own TLS.
func TestEdgeLinks(t *testing.T) {
	const id = "b831381d-6324-4d53-ad4f-8cda48b30811"
	for _, source := range []string{"self-signed", "none"} {
		t.Run(source, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(`{
  "server": {"listen": "0.0.0.0:8443", "tls": {"source": "` + source + `"}},
  "inbounds": [
    {"tag": "up", "protocol": "vless", "settings": {"clients": [{"id": "` + id + `"}], "decryption": "none"},
     "streamSettings": {"network": "httpupgrade", "httpupgradeSettings": {"path": "/up"}}},
    {"tag": "ws", "protocol": "vless", "settings": {"clients": [{"id": "` + id + `"}], "decryption": "none"},
     "streamSettings": {"network": "ws", "wsSettings": {"path": "/in"}}}
  ]
}`))
			if err != nil {
				t.Fatal(err)
			}
			native, err := ServerLinks(cfg, "", "00")
			if err != nil {
				t.Fatal(err)
			}
			ls, skipped, err := EdgeLinks(cfg, Edge{Host: "edge.example", EarlyData: 1024})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(skipped, []string{"up"}) {
				t.Errorf("skipped %q, want [up]", skipped)
			}
			var fromNative []string
			for _, l := range native {
				if l.Transport == "ws" {
					fromNative = append(fromNative, l.Name+"-edge")
				}
			}
			if len(ls) != len(fromNative) || len(ls) == 0 {
				t.Fatalf("%d edge links, want %d (%v)", len(ls), len(fromNative), fromNative)
			}
			for i, l := range ls {
				if l.Name != fromNative[i] || l.Host != "edge.example" || l.Port != 443 || l.SNI != "edge.example" ||
					l.HostHeader != "edge.example" || l.Security != "tls" || l.Pin != "" || l.Path != "/in?ed=1024" || l.ID != id {
					t.Errorf("link %d: %+v", i, l)
				}
			}
		})
	}
	t.Run("no WebSocket", func(t *testing.T) {
		cfg, err := ParseConfig([]byte(`{"server": {"listen": "127.0.0.1:8443"},
  "inbounds": [{"tag": "raw", "protocol": "vless", "settings": {"clients": [{"id": "` + id + `"}], "decryption": "none"}}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, skipped, err := EdgeLinks(cfg, Edge{Host: "edge.example"}); err == nil || !strings.Contains(err.Error(), "no WebSocket") || len(skipped) != 1 {
			t.Fatalf("err %v, skipped %v", err, skipped)
		}
	})
}
