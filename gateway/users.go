package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/portico-gw/portico/admin"
	"github.com/portico-gw/portico/protocols/anytls/anytlsserver"
	"github.com/portico-gw/portico/protocols/vless/vlessserver"
	"github.com/portico-gw/portico/protocols/vmess/vmessserver"
)

// tunnelInbound is a tunnel inbound's users at run time: those of the
// config plus the admin API's changes, applied to its protocol server
// with SetUsers. A reload starts again from the config.
type tunnelInbound struct {
	tag, protocol, transport string
	server                   any // *vlessserver.Server, *vmessserver.Server or *anytlsserver.Server
	proto                    RawProtocol
	identity                 string // see inboundIdentity

	mu    sync.Mutex
	users []admin.User // guarded by mu
}

// inboundRegistry is every tunnel inbound by tag, in config order, and the
// limits of every user (by email) across them.
type inboundRegistry struct {
	order  []string
	byTag  map[string]*tunnelInbound
	limits atomic.Pointer[map[string]userLimit]
}

// userLimit is one user's quota and expiry (zero: none).
type userLimit struct {
	quota  int64
	expiry time.Time
}

func newInboundRegistry() *inboundRegistry {
	r := &inboundRegistry{byTag: map[string]*tunnelInbound{}}
	r.limits.Store(&map[string]userLimit{})
	return r
}

func (r *inboundRegistry) add(in *tunnelInbound) {
	r.order = append(r.order, in.tag)
	r.byTag[in.tag] = in
}

// refreshLimits rebuilds the limits table after a change of users. A user
// on several inbounds has one quota (its bytes are counted together); the
// last inbound that gives one wins.
func (r *inboundRegistry) refreshLimits() {
	m := map[string]userLimit{}
	for _, tag := range r.order {
		in := r.byTag[tag]
		in.mu.Lock()
		for _, u := range in.users {
			if u.Quota > 0 || u.Expiry != nil {
				l := userLimit{quota: u.Quota}
				if u.Expiry != nil {
					l.expiry = *u.Expiry
				}
				m[u.Email] = l
			}
		}
		in.mu.Unlock()
	}
	r.limits.Store(&m)
}

// configUsers turns an inbound's config users into the API's shape.
func configUsers(settings any) []admin.User {
	var out []admin.User
	limit := func(u *admin.User, l UserLimits) {
		u.Quota = int64(l.Quota)
		if t := l.expiry(); !t.IsZero() {
			u.Expiry = &t
		}
	}
	switch s := settings.(type) {
	case *VLESSInbound:
		for _, c := range s.Clients {
			u := admin.User{Email: c.Email, ID: c.ID, Flow: c.Flow, Level: c.Level}
			limit(&u, c.UserLimits)
			out = append(out, u)
		}
	case *VMessInbound:
		for _, c := range s.Clients {
			u := admin.User{Email: c.Email, ID: c.ID, AlterID: c.AlterID, Level: c.Level}
			limit(&u, c.UserLimits)
			out = append(out, u)
		}
	case *AnyTLSInbound:
		for _, c := range s.Users {
			u := admin.User{Email: c.Email, Password: c.Password, Level: c.Level}
			limit(&u, c.UserLimits)
			out = append(out, u)
		}
	}
	return out
}

// apply sets users on the inbound's protocol server.
func (in *tunnelInbound) apply(users []admin.User) error {
	switch srv := in.server.(type) {
	case *vlessserver.Server:
		list := make([]vlessserver.User, 0, len(users))
		for _, u := range users {
			list = append(list, vlessserver.User{ID: uuid.MustParse(u.ID), Email: u.Email, Level: u.Level, Flow: u.Flow})
		}
		return srv.SetUsers(list)
	case *vmessserver.Server:
		list := make([]vmessserver.User, 0, len(users))
		for _, u := range users {
			list = append(list, vmessserver.User{ID: uuid.MustParse(u.ID), AlterID: u.AlterID, Email: u.Email, Level: u.Level})
		}
		return srv.SetUsers(list)
	case *anytlsserver.Server:
		list := make([]anytlsserver.User, 0, len(users))
		for _, u := range users {
			list = append(list, anytlsserver.User{Password: u.Password, Email: u.Email, Level: u.Level})
		}
		return srv.SetUsers(list)
	}
	return fmt.Errorf("inbound %q: no user table", in.tag)
}

// checkNewUser vets a user the admin API adds to in (whose users are
// given), filling in what the protocol needs.
func (in *tunnelInbound) checkNewUser(u *admin.User, users []admin.User) error {
	if u.Email == "" {
		return errors.New("email: required (it names the user in counters and removals)")
	}
	if strings.ContainsAny(u.Email, "/\x00\r\n") {
		return fmt.Errorf("email: %q has a character it cannot have", u.Email)
	}
	if u.Quota < 0 {
		return errors.New("quota: must not be negative")
	}
	switch in.protocol {
	case "vless", "vmess":
		if u.Password != "" {
			return fmt.Errorf("password: %s users have an id, not a password", in.protocol)
		}
		if u.ID == "" {
			u.ID = uuid.NewString()
		}
		id, err := uuid.Parse(u.ID)
		if err != nil {
			return fmt.Errorf("id: %q is not a UUID", u.ID)
		}
		u.ID = id.String()
		if in.protocol == "vless" && u.AlterID != 0 {
			return errors.New("alterId: VLESS users have none")
		}
		if in.protocol == "vmess" && (u.AlterID < 0 || u.AlterID > 65535) {
			return fmt.Errorf("alterId: %d is not from 0 to 65535", u.AlterID)
		}
		if in.protocol == "vless" {
			if err := checkFlow(u.Flow, "flow"); err != nil {
				return err
			}
		} else if u.Flow != "" {
			return errors.New("flow: VMess users have none")
		}
	case "anytls":
		if u.ID != "" || u.AlterID != 0 || u.Flow != "" {
			return errors.New("AnyTLS users have a password only (no id, alterId or flow)")
		}
		if u.Password == "" {
			u.Password = strings.ReplaceAll(uuid.NewString(), "-", "")
		}
	}
	for _, o := range users {
		switch {
		case o.Email == u.Email:
			return admin.ErrExists
		case u.ID != "" && strings.EqualFold(o.ID, u.ID):
			return fmt.Errorf("id: %s is user %q's already", u.ID, o.Email)
		case u.Password != "" && o.Password == u.Password:
			return fmt.Errorf("password: user %q has the same", o.Email)
		}
	}
	return nil
}

// admit is every protocol server's Admit: a user past its quota or expiry
// is refused like a wrong key, and counted.
func (g *Gateway) admit(user string) bool {
	l, ok := (*g.registry().limits.Load())[user]
	if !ok {
		return true
	}
	refuse := ""
	if !l.expiry.IsZero() && time.Now().After(l.expiry) {
		refuse = "expired"
	} else if l.quota > 0 {
		if up, down := g.router.stats.User(user).Load(); up+down >= l.quota {
			refuse = "over quota"
		}
	}
	if refuse == "" {
		return true
	}
	g.router.stats.User(user).Refused()
	g.refusedLog.log(g.log, slog.LevelInfo, limitLogInterval, "user refused: "+refuse, "user", user)
	return false
}

// Inbounds implements admin.Backend.
func (g *Gateway) Inbounds() []admin.Inbound {
	reg := g.registry()
	out := make([]admin.Inbound, 0, len(reg.order))
	for _, tag := range reg.order {
		in := reg.byTag[tag]
		in.mu.Lock()
		out = append(out, admin.Inbound{Tag: in.tag, Protocol: in.protocol, Transport: transportName(in.transport), Users: len(in.users)})
		in.mu.Unlock()
	}
	return out
}

func (g *Gateway) inbound(tag string) (*tunnelInbound, error) {
	in, ok := g.registry().byTag[tag]
	if !ok {
		return nil, fmt.Errorf("%w %q", admin.ErrNoInbound, tag)
	}
	return in, nil
}

// Users implements admin.Backend.
func (g *Gateway) Users(tag string) ([]admin.User, error) {
	in, err := g.inbound(tag)
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]admin.User(nil), in.users...), nil
}

// AddUser implements admin.Backend: the user can connect as soon as it
// returns.
func (g *Gateway) AddUser(tag string, u admin.User) (admin.User, error) {
	g.reloadMu.Lock() // a reload replaces the registry
	defer g.reloadMu.Unlock()
	in, err := g.inbound(tag)
	if err != nil {
		return admin.User{}, err
	}
	in.mu.Lock()
	if err := in.checkNewUser(&u, in.users); err != nil {
		in.mu.Unlock()
		return admin.User{}, err
	}
	users := append(append([]admin.User(nil), in.users...), u)
	if err := in.apply(users); err != nil {
		in.mu.Unlock()
		return admin.User{}, err
	}
	in.users = users
	in.mu.Unlock()
	g.registry().refreshLimits()
	g.log.Info("user added", "inbound", tag, "user", u.Email)
	return u, nil
}

// RemoveUser implements admin.Backend: new connections of the user are
// refused at once; its open tunnels run on, unless policy.closeRemovedUsers.
func (g *Gateway) RemoveUser(tag, email string) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	in, err := g.inbound(tag)
	if err != nil {
		return err
	}
	in.mu.Lock()
	users := make([]admin.User, 0, len(in.users))
	for _, u := range in.users {
		if u.Email != email {
			users = append(users, u)
		}
	}
	if len(users) == len(in.users) {
		in.mu.Unlock()
		return fmt.Errorf("%w %q in inbound %q", admin.ErrNoUser, email, tag)
	}
	if err := in.apply(users); err != nil {
		in.mu.Unlock()
		return err
	}
	in.users = users
	in.mu.Unlock()
	g.registry().refreshLimits()
	closed := 0
	if g.current.Load().Policy.CloseRemovedUsers {
		closed = g.router.CloseUser(tag, email)
	}
	g.log.Info("user removed", "inbound", tag, "user", email, "tunnels_closed", closed)
	return nil
}

// Stats implements admin.Backend.
func (g *Gateway) Stats() admin.Stats { return adminStats(g.router.stats.Snapshot()) }

// ResetStats implements admin.Backend.
func (g *Gateway) ResetStats(user string) admin.Stats {
	return adminStats(g.router.stats.Reset(user))
}

func adminStats(s StatsSnapshot) admin.Stats {
	conv := func(m map[string]CounterValues) map[string]admin.Counters {
		out := make(map[string]admin.Counters, len(m))
		for k, v := range m {
			out[k] = admin.Counters{Up: v.Up, Down: v.Down, Active: v.Active, Total: v.Total, LastSeen: v.LastSeen, Refused: v.Refused}
		}
		return out
	}
	return admin.Stats{Users: conv(s.Users), Inbounds: conv(s.Inbounds)}
}
