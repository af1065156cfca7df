package api

import "github.com/portico-gw/portico/protocols/links"

// Link is a share link's fields (links.Link) with JSON names.
type Link struct {
	Protocol    string   `json:"protocol"`
	ID          string   `json:"id"`
	Host        string   `json:"host"`
	Port        uint16   `json:"port"`
	Name        string   `json:"name,omitempty"`
	Transport   string   `json:"transport,omitempty"`
	Path        string   `json:"path,omitempty"`
	HostHeader  string   `json:"hostHeader,omitempty"`
	ServiceName string   `json:"serviceName,omitempty"`
	Security    string   `json:"security,omitempty"`
	SNI         string   `json:"sni,omitempty"`
	ALPN        []string `json:"alpn,omitempty"`
	Pin         string   `json:"pin,omitempty"`
	Insecure    bool     `json:"insecure,omitempty"`
	Flow        string   `json:"flow,omitempty"`
	Encryption  string   `json:"encryption,omitempty"`
	Version     int      `json:"version,omitempty"`
	AlterID     int      `json:"alterId,omitempty"`
	Cipher      string   `json:"cipher,omitempty"`
	KeepAlive   bool     `json:"keepAlive,omitempty"`
	Resolve     bool     `json:"resolve,omitempty"`
	PadMin      int      `json:"padMin,omitempty"`
	PadMax      int      `json:"padMax,omitempty"`
}

// ParseLink is links.parse: links.Parse.
func ParseLink(s string) (*Link, error) {
	l, err := links.Parse(s)
	if err != nil {
		return nil, err
	}
	return &Link{
		Protocol: l.Protocol, ID: l.ID, Host: l.Host, Port: l.Port, Name: l.Name,
		Transport: l.Transport, Path: l.Path, HostHeader: l.HostHeader, ServiceName: l.ServiceName,
		Security: l.Security, SNI: l.SNI, ALPN: l.ALPN, Pin: l.Pin, Insecure: l.Insecure,
		Flow: l.Flow, Encryption: l.Encryption, Version: l.Version,
		AlterID: l.AlterID, Cipher: l.Cipher,
		KeepAlive: l.KeepAlive, Resolve: l.Resolve, PadMin: l.PadMin, PadMax: l.PadMax,
	}, nil
}

// FormatLink is links.format: links.Link.String.
func FormatLink(l *Link) string {
	return links.Link{
		Protocol: l.Protocol, ID: l.ID, Host: l.Host, Port: l.Port, Name: l.Name,
		Transport: l.Transport, Path: l.Path, HostHeader: l.HostHeader, ServiceName: l.ServiceName,
		Security: l.Security, SNI: l.SNI, ALPN: l.ALPN, Pin: l.Pin, Insecure: l.Insecure,
		Flow: l.Flow, Encryption: l.Encryption, Version: l.Version,
		AlterID: l.AlterID, Cipher: l.Cipher,
		KeepAlive: l.KeepAlive, Resolve: l.Resolve, PadMin: l.PadMin, PadMax: l.PadMax,
	}.String()
}
