package admin_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-gw/portico/admin"
)

// oneInbound is the smallest Backend: one inbound, no users, no counters.
type oneInbound struct{}

func (oneInbound) Inbounds() []admin.Inbound {
	return []admin.Inbound{{Tag: "vless-tls", Protocol: "vless", Transport: "tcp"}}
}
func (oneInbound) Users(string) ([]admin.User, error)                 { return nil, nil }
func (oneInbound) AddUser(_ string, u admin.User) (admin.User, error) { return u, nil }
func (oneInbound) RemoveUser(string, string) error                    { return admin.ErrNoUser }
func (oneInbound) Stats() admin.Stats                                 { return admin.Stats{} }
func (oneInbound) ResetStats(string) admin.Stats                      { return admin.Stats{} }
func (oneInbound) Reload() error                                      { return nil }

func Example() {
	const addr = "127.0.0.1:0" // or "unix:/run/portico/admin.sock"
	ln, err := admin.Listen(addr)
	if err != nil {
		log.Fatal(err)
	}
	h, err := admin.New(admin.Options{
		Backend:  oneInbound{},
		Registry: prometheus.NewRegistry(),
		Token:    "change-me",        // required on TCP
		Unix:     admin.IsUnix(addr), // a unix socket needs no token
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()

	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/v1/inbounds", nil)
	req.Header.Set("Authorization", "Bearer change-me")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status)
	fmt.Println(strings.Join(strings.Fields(string(b)), " "))
	// Output:
	// 200 OK
	// [ { "tag": "vless-tls", "protocol": "vless", "transport": "tcp", "users": 0 } ]
}
