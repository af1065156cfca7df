package vmess

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/portico-gw/portico/protocols"
)

// The response header, server to client, sent once before the first
// response chunk (V2Ray encoding/server.go EncodeResponseHeader):
//
//	plaintext:  V (1) ‖ options (1) ‖ command (1) ‖ command length (1) ‖ command data
//
//	V        the request's V byte: the client checks it.
//	options  response options; 0 (0x01 was connection reuse).
//	command  0, or a V2Ray command (1 = SwitchAccount, dynamic ports);
//	         length and data follow only a non-zero command.
//
// After a VMessAEAD request:
//
//	+---------------------------+---------------------------------+
//	| sealed length  2 + 16     | sealed plaintext  n + 16        |
//	+---------------------------+---------------------------------+
//	length    key KDF16(respKey, "AEAD Resp Header Len Key"),
//	          nonce KDF(respIV, "AEAD Resp Header Len IV")[:12], no additional data
//	plaintext key KDF16(respKey, "AEAD Resp Header Key"),
//	          nonce KDF(respIV, "AEAD Resp Header IV")[:12], no additional data
//
// After a legacy request: the plaintext through AES-128-CFB[respKey,
// respIV]; an aes-128-cfb response body continues that same CFB stream.
//
// respKey and respIV are SHA-256(request key)[:16] and SHA-256(request
// IV)[:16] after a VMessAEAD request, MD5(request key) and MD5(request IV)
// after a legacy one.
const (
	responseFixedLen = 4
	// MaxResponseLen is the longest response plaintext.
	MaxResponseLen = responseFixedLen + 255
	// AEADResponseOverhead is what the AEAD form adds to the plaintext.
	AEADResponseOverhead = 2 + aeadTag + aeadTag
)

// Response is a decoded response header.
type Response struct {
	Auth        byte   // the request's V
	Options     byte   // 0
	Command     byte   // 0, or a V2Ray command id
	CommandData []byte // the command's bytes (at most 255), when Command != 0
}

// Session is what both ends know once the request header is through: the
// body keys and how each direction is framed. Build it with
// Request.Session.
type Session struct {
	Key, IV      [16]byte // request body key and IV
	ResponseAuth byte
	Security     Security // as on the wire
	Options      Option
	Command      Command // UDP bodies are framed per packet
	Legacy       bool    // the legacy header: MD5 response keys and an AES-CFB response header
}

// Session returns the session r opens; legacy says which header carried it.
func (r *Request) Session(legacy bool) Session {
	return Session{Key: r.Key, IV: r.IV, ResponseAuth: r.ResponseAuth, Security: r.Security, Options: r.Options, Command: r.Command, Legacy: legacy}
}

// ResponseKeys returns the response body key and IV.
func (s *Session) ResponseKeys() (key, iv [16]byte) {
	if s.Legacy {
		return md5.Sum(s.Key[:]), md5.Sum(s.IV[:])
	}
	k, v := sha256.Sum256(s.Key[:]), sha256.Sum256(s.IV[:])
	return [16]byte(k[:16]), [16]byte(v[:16])
}

func (s *Session) request(seal bool) direction {
	return direction{security: s.Security, options: s.Options, packet: s.Command == CommandUDP,
		key: s.Key, iv: s.IV, reqKey: s.Key, reqIV: s.IV, seal: seal}
}

func (s *Session) response(seal bool) direction {
	d := s.request(seal)
	d.key, d.iv = s.ResponseKeys()
	return d
}

// RequestSealer is the client's request body encoder. pad supplies the
// padding bytes (nil: zeros; V2Ray uses a fast non-cryptographic source).
func (s *Session) RequestSealer(pad io.Reader) (*Sealer, error) {
	c, err := newCodec(s.request(true))
	if err != nil {
		return nil, err
	}
	return &Sealer{c: c, pad: pad}, nil
}

// RequestOpener is the server's request body decoder.
func (s *Session) RequestOpener() (*Opener, error) {
	c, err := newCodec(s.request(false))
	if err != nil {
		return nil, err
	}
	return &Opener{c: c}, nil
}

// AppendResponse appends the response header for h to dst and returns the
// server's response body encoder, which continues after it (for an
// aes-128-cfb body after a legacy header, in the same CFB stream).
func (s *Session) AppendResponse(dst []byte, h *Response, pad io.Reader) ([]byte, *Sealer, error) {
	var pbuf [MaxResponseLen]byte
	p, err := appendResponsePlain(pbuf[:0], h)
	if err != nil {
		return dst, nil, err
	}
	d := s.response(true)
	key, iv := d.key, d.iv
	if s.Legacy {
		stream := newCFBEncrypter(key[:], iv[:])
		start := len(dst)
		dst = append(dst, p...)
		stream.XORKeyStream(dst[start:], dst[start:])
		d.cfb = stream
	} else {
		lenKey, lenNonce := KDF16(key[:], LabelRespHeaderLenKey), KDF(iv[:], LabelRespHeaderLenIV)
		hdrKey, hdrNonce := KDF16(key[:], LabelRespHeaderKey), KDF(iv[:], LabelRespHeaderIV)
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(p)))
		dst = newGCM(lenKey[:]).Seal(dst, lenNonce[:12], l[:], nil)
		dst = newGCM(hdrKey[:]).Seal(dst, hdrNonce[:12], p, nil)
	}
	if d.security != SecurityLegacy {
		d.cfb = nil
	}
	c, err := newCodec(d)
	if err != nil {
		return dst, nil, err
	}
	return dst, &Sealer{c: c, pad: pad}, nil
}

func appendResponsePlain(b []byte, h *Response) ([]byte, error) {
	if h.Command == 0 {
		return append(b, h.Auth, h.Options, 0, 0), nil
	}
	if len(h.CommandData) > 255 {
		return b, fmt.Errorf("%w: response command of %d bytes", ErrBadHeader, len(h.CommandData))
	}
	b = append(b, h.Auth, h.Options, h.Command, byte(len(h.CommandData)))
	return append(b, h.CommandData...), nil
}

// parseResponsePlain decodes a response plaintext; extra bytes after it are
// ignored, as V2Ray does.
func parseResponsePlain(p []byte) (Response, int, error) {
	if len(p) < responseFixedLen {
		return Response{}, 0, protocols.ErrNeedMore
	}
	h := Response{Auth: p[0], Options: p[1], Command: p[2]}
	n := responseFixedLen
	if h.Command != 0 {
		n += int(p[3])
		if len(p) < n {
			return Response{}, 0, protocols.ErrNeedMore
		}
		h.CommandData = append([]byte(nil), p[responseFixedLen:n]...)
	}
	return h, n, nil
}

// OpenResponse decodes the response header at the start of b and returns
// it, the bytes it used and the client's response body decoder. It does not
// modify b. A valid but incomplete prefix gives protocols.ErrNeedMore; a
// header that fails authentication, or whose V is not the request's, gives
// ErrBadResponse.
func (s *Session) OpenResponse(b []byte) (Response, int, *Opener, error) {
	d := s.response(false)
	key, iv := d.key, d.iv
	var h Response
	var n int
	if s.Legacy {
		var pbuf [MaxResponseLen]byte
		m := copy(pbuf[:], b)
		newCFBDecrypter(key[:], iv[:]).XORKeyStream(pbuf[:m], pbuf[:m])
		var err error
		if h, n, err = parseResponsePlain(pbuf[:m]); err != nil {
			return Response{}, 0, nil, err
		}
		// A continuing aes-128-cfb body needs the stream past the header.
		stream := newCFBDecrypter(key[:], iv[:])
		stream.XORKeyStream(pbuf[:n], b[:n])
		d.cfb = stream
	} else {
		const lenLen = 2 + aeadTag
		if len(b) < lenLen {
			return Response{}, 0, nil, protocols.ErrNeedMore
		}
		lenKey, lenNonce := KDF16(key[:], LabelRespHeaderLenKey), KDF(iv[:], LabelRespHeaderLenIV)
		var l [2]byte
		if _, err := newGCM(lenKey[:]).Open(l[:0], lenNonce[:12], b[:lenLen], nil); err != nil {
			return Response{}, 0, nil, fmt.Errorf("%w: length fails authentication", ErrBadResponse)
		}
		m := int(binary.BigEndian.Uint16(l[:]))
		if m < responseFixedLen || m > MaxResponseLen {
			return Response{}, 0, nil, fmt.Errorf("%w: a response header of %d bytes", ErrBadResponse, m)
		}
		n = lenLen + m + aeadTag
		if len(b) < n {
			return Response{}, 0, nil, protocols.ErrNeedMore
		}
		hdrKey, hdrNonce := KDF16(key[:], LabelRespHeaderKey), KDF(iv[:], LabelRespHeaderIV)
		var pbuf [MaxResponseLen]byte
		p, err := newGCM(hdrKey[:]).Open(pbuf[:0], hdrNonce[:12], b[lenLen:n], nil)
		if err != nil {
			return Response{}, 0, nil, fmt.Errorf("%w: header fails authentication", ErrBadResponse)
		}
		if h, _, err = parseResponsePlain(p); err != nil {
			return Response{}, 0, nil, fmt.Errorf("%w: %d-byte header is truncated", ErrBadResponse, len(p))
		}
	}
	if h.Auth != s.ResponseAuth {
		return Response{}, 0, nil, fmt.Errorf("%w: V is %d, the request sent %d", ErrBadResponse, h.Auth, s.ResponseAuth)
	}
	if d.security != SecurityLegacy {
		d.cfb = nil
	}
	c, err := newCodec(d)
	if err != nil {
		return Response{}, 0, nil, err
	}
	return h, n, &Opener{c: c}, nil
}
