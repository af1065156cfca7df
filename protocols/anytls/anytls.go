// Package anytls is the pure codec of the AnyTLS protocol, version 2: the
// authentication a client sends first, the session frames both sides
// exchange after it, the settings text, the padding scheme with its parser
// and a "write planner" that says how a client cuts its first writes into
// records, and sing-box's udp-over-tcp v2 framing that AnyTLS carries for
// UDP.
//
// It reads no sockets, starts no goroutines, reads no clock and draws no
// randomness of its own (the planner takes a [Rand]), so it builds for
// js/wasm and wasip1/wasm and the playground can show a plan without a
// socket. The net side is in the session, anytlsserver and anytlsclient
// packages below it.
//
// Codecs follow the project's habit: Append* appends to a caller-owned
// slice, Parse* returns (value, bytes consumed, error) and
// [protocols.ErrNeedMore] for a valid but truncated prefix.
//
// The byte layouts are documented beside the constants and in
// docs/protocols/anytls.md. The specification is the AnyTLS protocol
// document (anytls-go docs/protocol.md, version 2); where it is silent the
// reference implementation anytls-go decides, and each such point says so.
package anytls

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/portico-gw/portico/protocols"
)

// Session frame, both directions, after the authentication (spec: "会话层
// frame 格式"):
//
//	+---------+-----------+-------------+----------+
//	| command | stream id | data length | data     |
//	| 1       | 4, BE     | 2, BE       | 0..65535 |
//	+---------+-----------+-------------+----------+
//
//	command      one of the Cmd* constants below.
//	stream id    chosen by the client, increasing within a session from 1;
//	             0 for session-wide commands (settings, alert, padding, waste).
//	data length  the number of data bytes that follow.
const (
	HeaderLen  = 1 + 4 + 2 // a frame header
	MaxDataLen = 65535     // the most data one frame carries

	// Version is the protocol version this package speaks: the "v" a
	// client puts in its cmdSettings and a server in its cmdServerSettings.
	Version = 2
)

// Command is a frame's command byte.
type Command uint8

// The commands of the spec, with its names. Unless noted, a command carries
// no data.
const (
	// Since version 1.
	CmdWaste               Command = 0 // padding; data is read and dropped by either side
	CmdSYN                 Command = 1 // client: open a stream
	CmdPSH                 Command = 2 // data of a stream (data: the bytes)
	CmdFIN                 Command = 3 // close a stream, a.k.a. EOF mark
	CmdSettings            Command = 4 // client settings (data: key=value lines)
	CmdAlert               Command = 5 // server: a warning to log; both then close the session (data: text)
	CmdUpdatePaddingScheme Command = 6 // server: the scheme to use from now on (data: scheme text)
	// Since version 2.
	CmdSYNACK         Command = 7  // server: a stream's outbound dial is done (data: empty = success, else the error)
	CmdHeartRequest   Command = 8  // either side: answer with CmdHeartResponse
	CmdHeartResponse  Command = 9  // the answer to CmdHeartRequest
	CmdServerSettings Command = 10 // server settings (data: key=value lines)
)

var commandNames = [...]string{
	"cmdWaste", "cmdSYN", "cmdPSH", "cmdFIN", "cmdSettings", "cmdAlert",
	"cmdUpdatePaddingScheme", "cmdSYNACK", "cmdHeartRequest", "cmdHeartResponse", "cmdServerSettings",
}

// String is the spec's name of c ("cmdPSH"), or "cmd(N)" for an unknown one.
func (c Command) String() string {
	if int(c) < len(commandNames) {
		return commandNames[c]
	}
	return fmt.Sprintf("cmd(%d)", uint8(c))
}

// Known reports whether c is one of the commands of version 2.
func (c Command) Known() bool { return c <= CmdServerSettings }

// CarriesData reports whether the spec lets c carry data. A receiver reads
// and drops data sent with any other command, so as not to lose its place.
func (c Command) CarriesData() bool {
	switch c {
	case CmdWaste, CmdPSH, CmdSettings, CmdAlert, CmdUpdatePaddingScheme, CmdSYNACK, CmdServerSettings:
		return true
	}
	return false
}

// Errors. Parse and append failures wrap one of these (or
// [protocols.ErrBadAddr] for an address); use errors.Is.
var (
	ErrFrameTooLong    = errors.New("anytls: frame data longer than 65535 bytes")
	ErrUnknownPassword = errors.New("anytls: not the SHA-256 of any user's password")
	ErrBadPadding      = errors.New("anytls: bad padding length")
	ErrBadSettings     = errors.New("anytls: bad settings")
	ErrBadScheme       = errors.New("anytls: bad padding scheme")
	ErrBadUoT          = errors.New("anytls: bad udp-over-tcp message")
)

// Header is a decoded frame header.
type Header struct {
	Cmd    Command
	Stream uint32
	Length uint16 // data bytes after the header
}

// Frame is a whole frame. Data aliases the parsed buffer.
type Frame struct {
	Cmd    Command
	Stream uint32
	Data   []byte
}

// AppendHeader appends the 7-byte encoding of h to b.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, byte(h.Cmd))
	b = binary.BigEndian.AppendUint32(b, h.Stream)
	return binary.BigEndian.AppendUint16(b, h.Length)
}

// ParseHeader decodes a frame header from the start of b. Fewer than 7
// bytes give [protocols.ErrNeedMore]; every 7 bytes are a header (an
// unknown command is the caller's to judge, see [Command.Known]).
func ParseHeader(b []byte) (Header, int, error) {
	if len(b) < HeaderLen {
		return Header{}, 0, protocols.ErrNeedMore
	}
	return Header{
		Cmd:    Command(b[0]),
		Stream: binary.BigEndian.Uint32(b[1:5]),
		Length: binary.BigEndian.Uint16(b[5:7]),
	}, HeaderLen, nil
}

// AppendFrame appends f to b. It fails, returning b unchanged, when f.Data
// is longer than [MaxDataLen].
func AppendFrame(b []byte, f Frame) ([]byte, error) {
	if len(f.Data) > MaxDataLen {
		return b, fmt.Errorf("%w: %d bytes for %v", ErrFrameTooLong, len(f.Data), f.Cmd)
	}
	b = AppendHeader(b, Header{Cmd: f.Cmd, Stream: f.Stream, Length: uint16(len(f.Data))})
	return append(b, f.Data...), nil
}

// ParseFrame decodes a whole frame from the start of b; the frame's Data
// aliases b. A header, or data, cut short gives [protocols.ErrNeedMore].
func ParseFrame(b []byte) (Frame, int, error) {
	h, n, err := ParseHeader(b)
	if err != nil {
		return Frame{}, 0, err
	}
	end := n + int(h.Length)
	if len(b) < end {
		return Frame{}, 0, protocols.ErrNeedMore
	}
	return Frame{Cmd: h.Cmd, Stream: h.Stream, Data: b[n:end:end]}, end, nil
}

// AppendWaste appends a cmdWaste frame (stream 0) carrying n zero bytes:
// HeaderLen+n bytes in all. n must be 0..[MaxDataLen].
func AppendWaste(b []byte, n int) ([]byte, error) {
	if n < 0 || n > MaxDataLen {
		return b, fmt.Errorf("%w: waste of %d bytes", ErrFrameTooLong, n)
	}
	b = AppendHeader(b, Header{Cmd: CmdWaste, Length: uint16(n)})
	return append(b, make([]byte, n)...), nil
}
