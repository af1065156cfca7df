package protocols

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// AddrCodec is one of the address layouts the tunnel protocols put on the
// wire. They all carry a type byte, the address (4 bytes, 16 bytes, or a
// length byte and a name) and a big-endian port, but disagree on the type
// codes and on whether the port comes first:
//
//	SOCKS5 (RFC 1928 §5), AnyTLS, Trojan:  atyp ‖ addr ‖ port      IPv4=1 domain=3 IPv6=4
//	VLESS, VMess (V2Ray common/protocol):  port ‖ atyp ‖ addr      IPv4=1 domain=2 IPv6=3
//	sing-box udp-over-tcp v2 per packet:   atyp ‖ addr ‖ port      IPv4=0 IPv6=1 domain=2
//
// A codec is a plain value; the zero AddrCodec is not usable.
type AddrCodec struct {
	IPv4, Domain, IPv6 byte
	PortFirst          bool
}

// The layouts in use.
var (
	SOCKSAddr = AddrCodec{IPv4: 1, Domain: 3, IPv6: 4}
	VAddr     = AddrCodec{IPv4: 1, Domain: 2, IPv6: 3, PortFirst: true}
	UoTAddr   = AddrCodec{IPv4: 0, IPv6: 1, Domain: 2}
)

// Len is the encoded size of a, or -1 when a cannot be encoded.
func (c AddrCodec) Len(a Addr) int {
	switch {
	case a.Domain != "":
		if len(a.Domain) > MaxDomainLen {
			return -1
		}
		return 1 + 1 + len(a.Domain) + 2
	case a.IP.Is4():
		return 1 + 4 + 2
	case a.IP.Is6():
		return 1 + 16 + 2
	}
	return -1
}

// Append appends the encoding of a to b.
func (c AddrCodec) Append(b []byte, a Addr) ([]byte, error) {
	if c.Len(a) < 0 {
		return b, fmt.Errorf("%w: cannot encode %v", ErrBadAddr, a)
	}
	if c.PortFirst {
		b = binary.BigEndian.AppendUint16(b, a.Port)
	}
	switch {
	case a.Domain != "":
		b = append(b, c.Domain, byte(len(a.Domain)))
		b = append(b, a.Domain...)
	case a.IP.Is4():
		ip := a.IP.As4()
		b = append(b, c.IPv4)
		b = append(b, ip[:]...)
	default:
		ip := a.IP.As16()
		b = append(b, c.IPv6)
		b = append(b, ip[:]...)
	}
	if !c.PortFirst {
		b = binary.BigEndian.AppendUint16(b, a.Port)
	}
	return b, nil
}

// Parse decodes an address from the start of b and returns it with the number
// of bytes it used. A short b gives [ErrNeedMore]; an unknown type or an
// empty domain gives an error wrapping [ErrBadAddr].
func (c AddrCodec) Parse(b []byte) (Addr, int, error) {
	var a Addr
	i := 0
	if c.PortFirst {
		if len(b) < 2 {
			return Addr{}, 0, ErrNeedMore
		}
		a.Port = binary.BigEndian.Uint16(b)
		i = 2
	}
	if len(b) < i+1 {
		return Addr{}, 0, ErrNeedMore
	}
	atyp := b[i]
	i++
	switch atyp {
	case c.IPv4:
		if len(b) < i+4 {
			return Addr{}, 0, ErrNeedMore
		}
		a.IP = netip.AddrFrom4([4]byte(b[i : i+4]))
		i += 4
	case c.IPv6:
		if len(b) < i+16 {
			return Addr{}, 0, ErrNeedMore
		}
		a.IP = netip.AddrFrom16([16]byte(b[i : i+16]))
		i += 16
	case c.Domain:
		if len(b) < i+1 {
			return Addr{}, 0, ErrNeedMore
		}
		n := int(b[i])
		i++
		if n == 0 {
			return Addr{}, 0, fmt.Errorf("%w: empty domain", ErrBadAddr)
		}
		if len(b) < i+n {
			return Addr{}, 0, ErrNeedMore
		}
		// Kept as sent, even an IP literal: the codec is faithful and the
		// dialer resolves either form.
		a.Domain = string(b[i : i+n])
		i += n
	default:
		return Addr{}, 0, fmt.Errorf("%w: unknown address type %d", ErrBadAddr, atyp)
	}
	if !c.PortFirst {
		if len(b) < i+2 {
			return Addr{}, 0, ErrNeedMore
		}
		a.Port = binary.BigEndian.Uint16(b[i:])
		i += 2
	}
	return a, i, nil
}
