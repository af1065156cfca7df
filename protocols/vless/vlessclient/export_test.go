package vlessclient

import "time"

// SetNow replaces the clock the pool's idle check reads.
func SetNow(c *Client, now func() time.Time) { c.now = now }

// UDPTunnels is how many tunnels a udp_multi association from DialPacket
// has open; -1 for another kind of PacketConn.
func UDPTunnels(pc any) int {
	if a, ok := pc.(*multiAssoc); ok {
		return a.tunnelCount()
	}
	return -1
}
